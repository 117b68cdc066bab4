package model

import (
	"errors"
	"fmt"
	"math"
)

// Batch is one micro-batch: Tokens and Targets are [B,T]; a target of -1
// is left out of the loss (prompt positions, padding).
type Batch struct {
	Tokens, Targets []int32
	B, T            int
}

// Trainer runs optimizer steps: forward and backward over one or more
// micro-batches (gradient accumulation), clipping, the learning-rate
// schedule, AdamW. Set the fields, then call Step repeatedly.
type Trainer struct {
	Model *Model
	Opt   *AdamW
	// MaxGradNorm clips the global gradient norm; 0 disables clipping.
	MaxGradNorm float32
	// Warmup and TotalSteps shape the cosine schedule from Opt.LR down to
	// MinLR. TotalSteps 0 means a constant Opt.LR after warmup.
	Warmup, TotalSteps int
	MinLR              float32
	// Backend, when set, runs the steps and evaluations on an accelerator
	// (see TrainBackend); nil runs them on Model.Kernels.
	Backend TrainBackend
}

// StepResult reports one optimizer step.
type StepResult struct {
	Step     int     // optimizer steps taken, this one included
	Loss     float32 // mean of the micro-batch losses
	GradNorm float32 // global norm before clipping
	LR       float32 // learning rate applied
	Skipped  bool    // the gradient was not finite and no update was made
}

// ErrNoBatches is returned by Step without micro-batches.
var ErrNoBatches = errors.New("train: no batches")

// Step accumulates gradients over the micro-batches (each weighted
// equally), then clips and applies one AdamW update. A step whose gradient
// norm is not finite is skipped (the parameters stay as they were) and
// reported in the result, so one bad batch does not ruin a run.
func (t *Trainer) Step(batches ...Batch) (StepResult, error) {
	if t.Model == nil || t.Opt == nil {
		return StepResult{}, errors.New("train: Trainer needs a Model and an Opt")
	}
	if len(batches) == 0 {
		return StepResult{}, ErrNoBatches
	}
	if err := t.Opt.Validate(); err != nil {
		return StepResult{}, err
	}
	if t.Backend != nil {
		return t.Backend.Step(t, batches)
	}
	m := t.Model
	m.ZeroGrad()
	var loss float64
	for i, b := range batches {
		if b.Targets == nil {
			return StepResult{}, fmt.Errorf("train: batch %d has no targets", i)
		}
		l, err := m.Forward(b.Tokens, b.B, b.T, b.Targets)
		if err != nil {
			return StepResult{}, fmt.Errorf("train: batch %d: %w", i, err)
		}
		if err := m.Backward(); err != nil {
			return StepResult{}, fmt.Errorf("train: batch %d: %w", i, err)
		}
		loss += float64(l)
	}
	if n := len(batches); n > 1 {
		m.Kernels.Scale(m.Grads, 1/float32(n))
	}
	res := StepResult{Loss: float32(loss / float64(len(batches)))}
	res.GradNorm = ClipGradNorm(m, t.MaxGradNorm)
	res.LR = t.LR(t.Opt.Steps)
	if math.IsNaN(float64(res.GradNorm)) || math.IsInf(float64(res.GradNorm), 0) {
		res.Skipped = true
		res.Step = t.Opt.Steps
		return res, nil
	}
	t.Opt.Step(m, res.LR)
	res.Step = t.Opt.Steps
	return res, nil
}

// LR is the learning rate of the schedule at optimizer step `step`
// (counting from 0).
func (t *Trainer) LR(step int) float32 {
	if t.TotalSteps <= 0 {
		if step < t.Warmup {
			return t.Opt.LR * float32(step+1) / float32(t.Warmup)
		}
		return t.Opt.LR
	}
	return CosineSchedule(step, t.Warmup, t.TotalSteps, t.Opt.LR, t.MinLR)
}

// Eval returns the mean loss of b under the current parameters, on the
// Backend when one is set, without touching the gradients.
func (t *Trainer) Eval(b Batch) (float32, error) {
	if t.Backend != nil {
		return t.Backend.Eval(b)
	}
	if t.Model == nil {
		return 0, errors.New("train: Trainer needs a Model")
	}
	return t.Model.Eval(b)
}

// SyncHost brings Model.Params and the optimizer moments up to date from
// the Backend; without one it does nothing.
func (t *Trainer) SyncHost() error {
	if t.Backend == nil {
		return nil
	}
	return t.Backend.SyncHost(t)
}

// Eval returns the mean loss of a batch without touching the gradients.
func (m *Model) Eval(b Batch) (float32, error) {
	return m.Forward(b.Tokens, b.B, b.T, b.Targets)
}
