//go:build cuda

package gpu

import (
	"errors"
	"fmt"
	"unsafe"

	"gorgonia.org/cu"

	"github.com/tandem-ai/tandem/model"
)

// Model is a GPT-2 resident on a Device: parameters, gradients and the
// activations of the last Forward live in device memory, and Forward and
// Backward are the sequence of model/gpt2.go with every kernel a device
// kernel. Host memory is touched only for the tokens going in and the
// losses, logits and gradients asked for.
//
// Memory is allocated once: the parameters when the Model is made, the
// gradients on the first ZeroGrad or Backward, the activations for the
// first (B, T) and again only when a larger shape comes. Steps of one
// shape allocate nothing.
//
// A Model's methods must not run concurrently with each other (as for
// model.Model); Decoders made from it may run while no training step
// changes the parameters.
type Model struct {
	dev    *Device
	cfg    model.Config
	lay    paramLayout
	params devBuf
	grads  devBuf
	acts   *activations
	closed bool
}

// paramLayout gives, per parameter kind of model.Model's buffer, the first
// element and (for the per-layer kinds) the elements per layer.
type paramLayout struct {
	wte, wpe, lnfw, lnfb                       int64
	ln1w, ln1b, qkvw, qkvb, attprojw, attprojb int64
	ln2w, ln2b, fcw, fcb, fcprojw, fcprojb     int64
	// Elements per layer: C for LayerNorm parameters and C-wide biases.
	perLN, perQKVW, perQKVB, perProjW, perFCW, perFCB int64
	// [start, end) runs of the buffer with and without weight decay.
	decayRanges, plainRanges [][2]int64
	total                    int64
}

func newParamLayout(cfg model.Config) (paramLayout, error) {
	var l paramLayout
	starts := map[string]*int64{
		"wte.weight": &l.wte, "wpe.weight": &l.wpe, "ln_f.weight": &l.lnfw, "ln_f.bias": &l.lnfb,
		"h.0.ln_1.weight": &l.ln1w, "h.0.ln_1.bias": &l.ln1b,
		"h.0.attn.c_attn.weight": &l.qkvw, "h.0.attn.c_attn.bias": &l.qkvb,
		"h.0.attn.c_proj.weight": &l.attprojw, "h.0.attn.c_proj.bias": &l.attprojb,
		"h.0.ln_2.weight": &l.ln2w, "h.0.ln_2.bias": &l.ln2b,
		"h.0.mlp.c_fc.weight": &l.fcw, "h.0.mlp.c_fc.bias": &l.fcb,
		"h.0.mlp.c_proj.weight": &l.fcprojw, "h.0.mlp.c_proj.bias": &l.fcprojb,
	}
	seen := 0
	var run [2]int64
	runDecay := false
	for i, t := range cfg.ParamTensors() {
		if p, ok := starts[t.Name]; ok {
			*p = int64(t.Offset)
			seen++
		}
		off, end := int64(t.Offset), int64(t.Offset+t.Size)
		switch {
		case i == 0:
			run, runDecay = [2]int64{off, end}, t.Decay
		case t.Decay == runDecay && off == run[1]:
			run[1] = end
		default:
			l.addRange(run, runDecay)
			run, runDecay = [2]int64{off, end}, t.Decay
		}
		l.total = max(l.total, end)
	}
	l.addRange(run, runDecay)
	if seen != len(starts) || l.total != int64(cfg.NumParams()) {
		return l, fmt.Errorf("gpu: unexpected parameter layout (%d of %d tensors found)", seen, len(starts))
	}
	C := int64(cfg.NEmbd)
	l.perLN, l.perQKVW, l.perQKVB, l.perProjW, l.perFCW, l.perFCB = C, 3*C*C, 3*C, C*C, 4*C*C, 4*C
	return l, nil
}

func (l *paramLayout) addRange(r [2]int64, decay bool) {
	if decay {
		l.decayRanges = append(l.decayRanges, r)
	} else {
		l.plainRanges = append(l.plainRanges, r)
	}
}

// layerParams are the device addresses of one block's tensors inside a
// parameter-shaped buffer (the parameters or the gradients).
type layerParams struct {
	ln1w, ln1b, qkvw, qkvb, attprojw, attprojb, ln2w, ln2b, fcw, fcb, fcprojw, fcprojb cu.DevicePtr
}

func (l *paramLayout) layer(base cu.DevicePtr, i int) layerParams {
	L := int64(i)
	return layerParams{
		ln1w: at(base, l.ln1w+L*l.perLN), ln1b: at(base, l.ln1b+L*l.perLN),
		qkvw: at(base, l.qkvw+L*l.perQKVW), qkvb: at(base, l.qkvb+L*l.perQKVB),
		attprojw: at(base, l.attprojw+L*l.perProjW), attprojb: at(base, l.attprojb+L*l.perLN),
		ln2w: at(base, l.ln2w+L*l.perLN), ln2b: at(base, l.ln2b+L*l.perLN),
		fcw: at(base, l.fcw+L*l.perFCW), fcb: at(base, l.fcb+L*l.perFCB),
		fcprojw: at(base, l.fcprojw+L*l.perFCW), fcprojb: at(base, l.fcprojb+L*l.perLN),
	}
}

// NewModel uploads m's configuration and parameters to the device.
func (d *Device) NewModel(m *model.Model) (*Model, error) {
	if m == nil {
		return nil, errors.New("gpu: nil model")
	}
	cfg := m.Config
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if hs := cfg.HeadSize(); hs > MaxHeadSize {
		return nil, fmt.Errorf("gpu: head size %d (n_embd %d / n_head %d) exceeds the kernels' limit of %d", hs, cfg.NEmbd, cfg.NHead, MaxHeadSize)
	}
	if len(m.Params) != cfg.NumParams() {
		return nil, fmt.Errorf("gpu: len(Params)=%d, config needs %d", len(m.Params), cfg.NumParams())
	}
	lay, err := newParamLayout(cfg)
	if err != nil {
		return nil, err
	}
	leave, err := d.enter()
	if err != nil {
		return nil, err
	}
	defer leave()
	gm := &Model{dev: d, cfg: cfg, lay: lay}
	if gm.params, err = d.alloc(int64(len(m.Params)), "parameters"); err != nil {
		return nil, err
	}
	d.upload(gm.params.ptr, unsafe.Pointer(&m.Params[0]), gm.params.n, "parameters")
	if err := d.sync(); err != nil {
		d.free(&gm.params)
		return nil, err
	}
	return gm, nil
}

// Config is the model's architecture.
func (gm *Model) Config() model.Config { return gm.cfg }

// Device is the GPU the model lives on.
func (gm *Model) Device() *Device { return gm.dev }

// Close frees the model's device memory.
func (gm *Model) Close() error {
	leave, err := gm.dev.enter()
	if err != nil {
		return err
	}
	defer leave()
	gm.freeLocked()
	return nil
}

func (gm *Model) freeLocked() {
	d := gm.dev
	d.stream.Synchronize() // nothing queued may still use the memory
	d.free(&gm.params)
	d.free(&gm.grads)
	if gm.acts != nil {
		d.free(&gm.acts.buf)
		gm.acts = nil
	}
	gm.closed = true
}

// enter is Device.enter for a Model that must still be open.
func (gm *Model) enter() (func(), error) {
	if gm.closed {
		return nil, errors.New("gpu: model is closed")
	}
	return gm.dev.enter()
}

// Upload replaces the parameters with params (len = NumParams).
func (gm *Model) Upload(params []float32) error {
	if len(params) != int(gm.params.n) {
		return fmt.Errorf("gpu: upload: %d parameters, model has %d", len(params), gm.params.n)
	}
	leave, err := gm.enter()
	if err != nil {
		return err
	}
	defer leave()
	gm.dev.upload(gm.params.ptr, unsafe.Pointer(&params[0]), gm.params.n, "parameters")
	return gm.dev.sync()
}

// Download copies the parameters into dst (len = NumParams).
func (gm *Model) Download(dst []float32) error {
	return gm.copyOut(dst, gm.params, "parameters")
}

// DownloadGrads copies the gradients into dst (len = NumParams); zeros
// before the first Backward.
func (gm *Model) DownloadGrads(dst []float32) error {
	if gm.grads.ptr == 0 {
		if len(dst) != int(gm.params.n) {
			return fmt.Errorf("gpu: gradients: len(dst)=%d, model has %d parameters", len(dst), gm.params.n)
		}
		clear(dst)
		return nil
	}
	return gm.copyOut(dst, gm.grads, "gradients")
}

func (gm *Model) copyOut(dst []float32, src devBuf, what string) error {
	if len(dst) != int(src.n) {
		return fmt.Errorf("gpu: %s: len(dst)=%d, model has %d", what, len(dst), src.n)
	}
	leave, err := gm.enter()
	if err != nil {
		return err
	}
	defer leave()
	gm.dev.download(unsafe.Pointer(&dst[0]), src.ptr, src.n, what)
	return gm.dev.sync()
}

// activations mirror model.Model's, except that attention keeps only the
// log-sum-exp of each row ([L,B,NH,T]) instead of the probabilities
// ([L,B,NH,T,T]), plus Backward's scratch, all in one allocation.
type activations struct {
	B, T int
	buf  devBuf

	encoded, ln1, ln1Mean, ln1Rstd, qkv, atty, attLse cu.DevicePtr
	residual2, ln2, ln2Mean, ln2Rstd, fch, fchGelu    cu.DevicePtr
	residual3, lnf, lnfMean, lnfRstd, logits          cu.DevicePtr
	losses, lse, proj, tokens, targets                cu.DevicePtr
	dres, dC, dqkv, d4C, attD                         cu.DevicePtr

	hostLosses  []float32
	hostTargets []int32
	hasTargets  bool
	forwardDone bool
	backDone    bool
	logitsValid bool
	valid       int
}

// carve lays the activations out for (B, T) starting at c.
func (a *activations) carve(c *carver, cfg model.Config, B, T int) {
	L, C, V, NH := int64(cfg.NLayer), int64(cfg.NEmbd), int64(cfg.VocabSize), int64(cfg.NHead)
	N := int64(B) * int64(T)
	a.encoded = c.take(N * C)
	a.ln1, a.ln1Mean, a.ln1Rstd = c.take(L*N*C), c.take(L*N), c.take(L*N)
	a.qkv, a.atty, a.attLse = c.take(L*N*3*C), c.take(L*N*C), c.take(L*N*NH)
	a.residual2 = c.take(L * N * C)
	a.ln2, a.ln2Mean, a.ln2Rstd = c.take(L*N*C), c.take(L*N), c.take(L*N)
	a.fch, a.fchGelu = c.take(L*N*4*C), c.take(L*N*4*C)
	a.residual3 = c.take(L * N * C)
	a.lnf, a.lnfMean, a.lnfRstd = c.take(N*C), c.take(N), c.take(N)
	a.logits = c.take(N * V)
	a.losses, a.lse, a.proj = c.take(N), c.take(N), c.take(N*C)
	a.tokens, a.targets = c.take(N), c.take(N)
	a.dres, a.dC, a.dqkv, a.d4C, a.attD = c.take(N*C), c.take(N*C), c.take(N*3*C), c.take(N*4*C), c.take(N*NH)
}

// ensureActivations sizes the activations for (B, T), reusing the current
// allocation when it is large enough.
func (gm *Model) ensureActivations(B, T int) error {
	if a := gm.acts; a != nil && a.B == B && a.T == T {
		return nil
	}
	d := gm.dev
	var measure carver
	(&activations{}).carve(&measure, gm.cfg, B, T)
	need := measure.size()
	a := &activations{B: B, T: T}
	if gm.acts != nil && gm.acts.buf.n >= need {
		a.buf = gm.acts.buf
	} else {
		if gm.acts != nil {
			if err := d.sync(); err != nil {
				return err
			}
			d.free(&gm.acts.buf)
			gm.acts = nil
		}
		buf, err := d.alloc(need, fmt.Sprintf("activations for B=%d T=%d", B, T))
		if err != nil {
			return err
		}
		a.buf = buf
	}
	c := carver{base: a.buf.ptr}
	a.carve(&c, gm.cfg, B, T)
	N := B * T
	a.hostLosses = make([]float32, N)
	a.hostTargets = make([]int32, N)
	gm.acts = a
	return nil
}

// checkBatch validates a batch as model.Model.Forward does.
func (gm *Model) checkBatch(tokens []int32, B, T int, targets []int32) error {
	return gm.cfg.CheckBatch(tokens, B, T, targets)
}

// Forward runs the model on tokens [B,T] and keeps the activations for
// Backward. With targets it returns the mean cross-entropy over the
// positions whose target is not -1, like model.Model.Forward.
func (gm *Model) Forward(tokens []int32, B, T int, targets []int32) (float32, error) {
	if err := gm.checkBatch(tokens, B, T, targets); err != nil {
		return 0, err
	}
	leave, err := gm.enter()
	if err != nil {
		return 0, err
	}
	defer leave()
	return gm.forwardLocked(tokens, B, T, targets)
}

func (gm *Model) forwardLocked(tokens []int32, B, T int, targets []int32) (float32, error) {
	if err := gm.ensureActivations(B, T); err != nil {
		return 0, err
	}
	d, a, cfg := gm.dev, gm.acts, gm.cfg
	L, C, V, NH := cfg.NLayer, cfg.NEmbd, cfg.VocabSize, cfg.NHead
	N := B * T
	nc := int64(N) * int64(C)
	eps := cfg.LayerNormEpsilon
	pp := gm.params.ptr
	a.forwardDone, a.backDone, a.logitsValid = false, false, false
	d.upload(a.tokens, unsafe.Pointer(&tokens[0]), int64(N), "tokens")

	d.encoderForward(a.encoded, a.tokens, 0, T, at(pp, gm.lay.wte), at(pp, gm.lay.wpe), N, C)
	for l := 0; l < L; l++ {
		residual := a.encoded
		if l > 0 {
			residual = at(a.residual3, int64(l-1)*nc)
		}
		w := gm.lay.layer(pp, l)
		la := a.layer(l, N, C, NH)
		d.layerNormForward(la.ln1, la.ln1Mean, la.ln1Rstd, residual, w.ln1w, w.ln1b, N, C, eps)
		d.matmulForward(la.qkv, la.ln1, w.qkvw, w.qkvb, N, C, 3*C)
		d.attentionForward(la.atty, la.attLse, la.qkv, B, T, C, NH)
		d.matmulForward(a.proj, la.atty, w.attprojw, w.attprojb, N, C, C)
		d.residualForward(la.residual2, residual, a.proj, nc)
		d.layerNormForward(la.ln2, la.ln2Mean, la.ln2Rstd, la.residual2, w.ln2w, w.ln2b, N, C, eps)
		d.matmulForward(la.fch, la.ln2, w.fcw, w.fcb, N, C, 4*C)
		d.geluForward(la.fchGelu, la.fch, 4*nc)
		d.matmulForward(a.proj, la.fchGelu, w.fcprojw, w.fcprojb, N, 4*C, C)
		d.residualForward(la.residual3, la.residual2, a.proj, nc)
	}
	last := at(a.residual3, int64(L-1)*nc)
	d.layerNormForward(a.lnf, a.lnfMean, a.lnfRstd, last, at(pp, gm.lay.lnfw), at(pp, gm.lay.lnfb), N, C, eps)
	d.matmulTransposedForward(a.logits, a.lnf, at(pp, gm.lay.wte), N, C, V)
	a.hasTargets = targets != nil
	if targets == nil {
		if err := d.sync(); err != nil {
			return 0, err
		}
		a.forwardDone, a.logitsValid = true, true
		return 0, nil
	}
	copy(a.hostTargets, targets)
	d.upload(a.targets, unsafe.Pointer(&a.hostTargets[0]), int64(N), "targets")
	d.crossEntropyForward(a.losses, a.lse, a.logits, a.targets, N, V)
	d.download(unsafe.Pointer(&a.hostLosses[0]), a.losses, int64(N), "losses")
	if err := d.sync(); err != nil {
		return 0, err
	}
	a.forwardDone, a.logitsValid = true, true
	var sum float64
	a.valid = 0
	for i, t := range a.hostTargets {
		if t >= 0 {
			sum += float64(a.hostLosses[i])
			a.valid++
		}
	}
	if a.valid == 0 {
		return 0, nil
	}
	return float32(sum / float64(a.valid)), nil
}

// layerActs are one block's activations.
type layerActs struct {
	ln1, ln1Mean, ln1Rstd, qkv, atty, attLse, residual2, ln2, ln2Mean, ln2Rstd, fch, fchGelu, residual3 cu.DevicePtr
}

func (a *activations) layer(l, N, C, NH int) layerActs {
	n, nc, L := int64(N), int64(N)*int64(C), int64(l)
	return layerActs{
		ln1: at(a.ln1, L*nc), ln1Mean: at(a.ln1Mean, L*n), ln1Rstd: at(a.ln1Rstd, L*n),
		qkv: at(a.qkv, L*3*nc), atty: at(a.atty, L*nc), attLse: at(a.attLse, L*n*int64(NH)),
		residual2: at(a.residual2, L*nc),
		ln2:       at(a.ln2, L*nc), ln2Mean: at(a.ln2Mean, L*n), ln2Rstd: at(a.ln2Rstd, L*n),
		fch: at(a.fch, L*4*nc), fchGelu: at(a.fchGelu, L*4*nc), residual3: at(a.residual3, L*nc),
	}
}

// Logits copies the [B*T*V] logits of the last Forward into dst. It fails
// before a Forward and after Backward, which overwrites them with their
// gradient (as model.Model.Logits returns nil then).
func (gm *Model) Logits(dst []float32) error {
	a := gm.acts
	if a == nil || !a.forwardDone || !a.logitsValid {
		return errors.New("gpu: logits: no forward pass, or Backward has overwritten them")
	}
	n := int64(a.B) * int64(a.T) * int64(gm.cfg.VocabSize)
	if int64(len(dst)) != n {
		return fmt.Errorf("gpu: logits: len(dst)=%d, want %d", len(dst), n)
	}
	leave, err := gm.enter()
	if err != nil {
		return err
	}
	defer leave()
	gm.dev.download(unsafe.Pointer(&dst[0]), a.logits, n, "logits")
	return gm.dev.sync()
}

// ZeroGrad sets every gradient to zero, allocating them on first use.
func (gm *Model) ZeroGrad() error {
	leave, err := gm.enter()
	if err != nil {
		return err
	}
	defer leave()
	return gm.zeroGradLocked()
}

func (gm *Model) zeroGradLocked() error {
	d := gm.dev
	if gm.grads.ptr == 0 {
		g, err := d.alloc(gm.params.n, "gradients")
		if err != nil {
			return err
		}
		gm.grads = g
	}
	d.zero(gm.grads.ptr, gm.grads.n)
	return d.err
}

// Backward adds the gradient of the last Forward's loss to the gradients,
// as model.Model.Backward does.
func (gm *Model) Backward() error {
	leave, err := gm.enter()
	if err != nil {
		return err
	}
	defer leave()
	return gm.backwardLocked()
}

func (gm *Model) backwardLocked() error {
	a := gm.acts
	switch {
	case a == nil || !a.forwardDone:
		return errors.New("backward: no forward pass to differentiate")
	case !a.hasTargets:
		return errors.New("backward: the last forward pass had no targets")
	case a.backDone:
		return errors.New("backward: already run for this forward pass")
	}
	if gm.grads.ptr == 0 {
		if err := gm.zeroGradLocked(); err != nil {
			return err
		}
	}
	a.backDone = true
	if a.valid == 0 {
		return nil
	}
	d, cfg := gm.dev, gm.cfg
	L, C, V, NH := cfg.NLayer, cfg.NEmbd, cfg.VocabSize, cfg.NHead
	B, T := a.B, a.T
	N := B * T
	nc := int64(N) * int64(C)
	pp, gp := gm.params.ptr, gm.grads.ptr
	lay := &gm.lay

	// The logit gradients overwrite the logits, as on the CPU.
	a.logitsValid = false
	d.crossEntropyBackward(a.logits, a.logits, a.lse, a.targets, 1/float32(a.valid), N, V)
	dlnf := a.dC
	d.matmulTransposedBackward(dlnf, at(gp, lay.wte), a.logits, a.lnf, at(pp, lay.wte), N, C, V)
	d.zero(a.dres, nc)
	last := at(a.residual3, int64(L-1)*nc)
	d.layerNormBackward(a.dres, at(gp, lay.lnfw), at(gp, lay.lnfb), dlnf, last, at(pp, lay.lnfw), a.lnfMean, a.lnfRstd, N, C)
	for l := L - 1; l >= 0; l-- {
		residual := a.encoded
		if l > 0 {
			residual = at(a.residual3, int64(l-1)*nc)
		}
		w, g := lay.layer(pp, l), lay.layer(gp, l)
		la := a.layer(l, N, C, NH)
		d.matmulBackward(a.d4C, g.fcprojw, g.fcprojb, a.dres, la.fchGelu, w.fcprojw, N, 4*C, C)
		d.geluBackward(a.d4C, la.fch, a.d4C, 4*nc)
		d.matmulBackward(a.dC, g.fcw, g.fcb, a.d4C, la.ln2, w.fcw, N, C, 4*C)
		d.layerNormBackward(a.dres, g.ln2w, g.ln2b, a.dC, la.residual2, w.ln2w, la.ln2Mean, la.ln2Rstd, N, C)
		d.matmulBackward(a.dC, g.attprojw, g.attprojb, a.dres, la.atty, w.attprojw, N, C, C)
		d.attentionBackward(a.dqkv, a.dC, la.qkv, la.atty, la.attLse, a.attD, B, T, C, NH)
		d.matmulBackward(a.dC, g.qkvw, g.qkvb, a.dqkv, la.ln1, w.qkvw, N, C, 3*C)
		d.layerNormBackward(a.dres, g.ln1w, g.ln1b, a.dC, residual, w.ln1w, la.ln1Mean, la.ln1Rstd, N, C)
	}
	d.encoderBackward(at(gp, lay.wte), at(gp, lay.wpe), a.dres, a.tokens, B, T, C)
	return d.sync()
}
