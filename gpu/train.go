//go:build cuda

package gpu

import (
	"errors"
	"fmt"
	"math"
	"unsafe"

	"github.com/tandem-ai/tandem/model"
)

// Trainer runs model.Trainer's optimizer steps on a Model's device: the
// AdamW moments live beside the parameters and gradients, and a step moves
// only the tokens and targets in and the losses and the gradient norm out.
// It implements model.TrainBackend: set it as a model.Trainer's Backend;
// and model.ScoringBackend, so a run scores its best weights there too.
type Trainer struct {
	gm        *Model
	ownsModel bool // made by NewTrainBackend: Close frees the Model too
	m, v      devBuf
	// norm receives Σg² from the device. A slice of its own: cgo refuses
	// a pointer into a struct that holds Go pointers (this Trainer).
	norm []float64
}

var _ model.ScoringBackend = (*Trainer)(nil)

// NewTrainer makes a training backend for gm. The AdamW moments are
// allocated by the first step, from the model.Trainer's Opt.M and Opt.V
// when they hold a resumed state, else zero.
func (gm *Model) NewTrainer() *Trainer { return &Trainer{gm: gm, norm: make([]float64, 1)} }

// NewTrainBackend uploads m and returns a Trainer that owns the device
// copy: its Close frees both. It is what a fine-tuning run on a GPU worker
// uses as its model.Trainer's Backend.
func (d *Device) NewTrainBackend(m *model.Model) (*Trainer, error) {
	gm, err := d.NewModel(m)
	if err != nil {
		return nil, err
	}
	return &Trainer{gm: gm, ownsModel: true, norm: make([]float64, 1)}, nil
}

// Model is the device model the trainer updates.
func (tr *Trainer) Model() *Model { return tr.gm }

// Close frees the moments, and the Model when the Trainer owns it.
func (tr *Trainer) Close() error {
	leave, err := tr.gm.dev.enter()
	if err != nil {
		return err
	}
	defer leave()
	tr.gm.dev.stream.Synchronize() // nothing queued may still use the memory
	tr.gm.dev.free(&tr.m)
	tr.gm.dev.free(&tr.v)
	if tr.ownsModel {
		tr.gm.freeLocked()
	}
	return nil
}

// Step implements model.TrainBackend: model.Trainer.Step's arithmetic —
// gradients accumulated over the micro-batches and averaged, the global
// norm clipped to t.MaxGradNorm, the step skipped when the norm is not
// finite, then AdamW with decay on the matrices only and the learning
// rate of t's schedule — on the device.
func (tr *Trainer) Step(t *model.Trainer, batches []model.Batch) (model.StepResult, error) {
	if t == nil || t.Opt == nil {
		return model.StepResult{}, errors.New("gpu: train: no optimizer")
	}
	if len(batches) == 0 {
		return model.StepResult{}, model.ErrNoBatches
	}
	gm := tr.gm
	for i, b := range batches {
		if b.Targets == nil {
			return model.StepResult{}, fmt.Errorf("train: batch %d has no targets", i)
		}
		if err := gm.checkBatch(b.Tokens, b.B, b.T, b.Targets); err != nil {
			return model.StepResult{}, fmt.Errorf("train: batch %d: %w", i, err)
		}
	}
	leave, err := gm.enter()
	if err != nil {
		return model.StepResult{}, err
	}
	defer leave()
	d := gm.dev
	if err := gm.zeroGradLocked(); err != nil {
		return model.StepResult{}, err
	}
	var loss float64
	for i, b := range batches {
		l, err := gm.forwardLocked(b.Tokens, b.B, b.T, b.Targets)
		if err != nil {
			return model.StepResult{}, fmt.Errorf("train: batch %d: %w", i, err)
		}
		if err := gm.backwardLocked(); err != nil {
			return model.StepResult{}, fmt.Errorf("train: batch %d: %w", i, err)
		}
		loss += float64(l)
	}
	n := gm.grads.n
	if len(batches) > 1 {
		d.scale(gm.grads.ptr, 1/float32(len(batches)), n)
	}
	res := model.StepResult{Loss: float32(loss / float64(len(batches)))}

	// Clipping, as model.ClipGradNorm: the norm in float64, the scale in
	// float32.
	d.sumSquares(gm.grads.ptr, n)
	d.download(unsafe.Pointer(&tr.norm[0]), d.sumsq.ptr, 2, "gradient norm")
	if err := d.sync(); err != nil {
		return model.StepResult{}, err
	}
	norm := math.Sqrt(tr.norm[0])
	res.GradNorm = float32(norm)
	res.LR = t.LR(t.Opt.Steps)
	if math.IsNaN(norm) || math.IsInf(norm, 0) {
		res.Skipped = true
		res.Step = t.Opt.Steps
		return res, nil
	}
	if t.MaxGradNorm > 0 && norm > float64(t.MaxGradNorm) {
		d.scale(gm.grads.ptr, float32(float64(t.MaxGradNorm)/(norm+1e-6)), n)
	}
	if err := tr.ensureMoments(t.Opt); err != nil {
		return model.StepResult{}, err
	}

	// AdamW, as model.AdamW.Step and vec.AdamW.
	o := t.Opt
	o.Steps++
	lr := res.LR
	invbc1 := float32(1 / (1 - math.Pow(float64(o.Beta1), float64(o.Steps))))
	invbc2 := float32(1 / (1 - math.Pow(float64(o.Beta2), float64(o.Steps))))
	update := func(ranges [][2]int64, wd float32) {
		decay := 1 - lr*wd
		for _, r := range ranges {
			off, cnt := r[0], r[1]-r[0]
			d.adamw(at(gm.params.ptr, off), at(gm.grads.ptr, off), at(tr.m.ptr, off), at(tr.v.ptr, off), cnt,
				lr, o.Beta1, o.Beta2, o.Eps, decay, invbc1, invbc2)
		}
	}
	update(gm.lay.decayRanges, o.WeightDecay)
	update(gm.lay.plainRanges, 0)
	if err := d.sync(); err != nil {
		return model.StepResult{}, err
	}
	res.Step = o.Steps
	return res, nil
}

// ensureMoments allocates the moments on first use, uploading a resumed
// state from the host optimizer when it has one.
func (tr *Trainer) ensureMoments(o *model.AdamW) error {
	d, n := tr.gm.dev, tr.gm.params.n
	if tr.m.ptr != 0 {
		return nil
	}
	var err error
	if tr.m, err = d.alloc(n, "AdamW first moments"); err != nil {
		return err
	}
	if tr.v, err = d.alloc(n, "AdamW second moments"); err != nil {
		d.free(&tr.m)
		return err
	}
	if int64(len(o.M)) == n && int64(len(o.V)) == n {
		d.upload(tr.m.ptr, unsafe.Pointer(&o.M[0]), n, "AdamW first moments")
		d.upload(tr.v.ptr, unsafe.Pointer(&o.V[0]), n, "AdamW second moments")
	} else {
		d.zero(tr.m.ptr, n)
		d.zero(tr.v.ptr, n)
	}
	return d.err
}

// Eval implements model.TrainBackend: the mean loss of b under the device
// parameters, gradients untouched.
func (tr *Trainer) Eval(b model.Batch) (float32, error) {
	return tr.gm.Forward(b.Tokens, b.B, b.T, b.Targets)
}

// SyncHost implements model.TrainBackend: it copies the parameters into
// t.Model.Params and, once a step has allocated them, the moments into
// t.Opt.M and t.Opt.V, so that checkpoints and SaveDir see the device's
// state.
func (tr *Trainer) SyncHost(t *model.Trainer) error {
	gm := tr.gm
	n := int(gm.params.n)
	if t.Model == nil || len(t.Model.Params) != n {
		return fmt.Errorf("gpu: sync: the host model does not have %d parameters", n)
	}
	leave, err := gm.enter()
	if err != nil {
		return err
	}
	defer leave()
	d := gm.dev
	d.download(unsafe.Pointer(&t.Model.Params[0]), gm.params.ptr, gm.params.n, "parameters")
	if tr.m.ptr != 0 && t.Opt != nil {
		if len(t.Opt.M) != n || len(t.Opt.V) != n {
			t.Opt.M, t.Opt.V = make([]float32, n), make([]float32, n)
		}
		d.download(unsafe.Pointer(&t.Opt.M[0]), tr.m.ptr, tr.m.n, "AdamW first moments")
		d.download(unsafe.Pointer(&t.Opt.V[0]), tr.v.ptr, tr.v.n, "AdamW second moments")
	}
	return d.sync()
}

// LoadParams implements model.ScoringBackend: Model.Upload. The moments
// stay; the next SyncHost copies params back to the host.
func (tr *Trainer) LoadParams(params []float32) error { return tr.gm.Upload(params) }

// DecoderFactory implements model.ScoringBackend: Model.DecoderFactory, so
// generation decodes with the trainer's current parameters.
func (tr *Trainer) DecoderFactory() model.DecoderFactory { return tr.gm.DecoderFactory() }
