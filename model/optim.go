package model

import (
	"fmt"
	"math"
)

// AdamW is Adam with decoupled weight decay (Loshchilov & Hutter), the
// optimizer GPT-2 style models are fine-tuned with. Weight decay applies
// to matrices only (see ParamTensor.Decay). M, V and Step are the whole
// optimizer state: save them with a checkpoint and restore them to resume
// exactly.
type AdamW struct {
	LR          float32 // base learning rate (schedules scale from it)
	Beta1       float32 // default 0.9
	Beta2       float32 // default 0.999
	Eps         float32 // default 1e-8
	WeightDecay float32 // default 0.01

	M, V  []float32 // first and second moments, laid out like Params
	Steps int       // updates applied so far (bias correction uses Steps)
}

// AdamWState is the optimizer state a checkpoint must keep.
type AdamWState struct {
	M, V []float32
	Step int
}

// State returns the moments and step count (the slices are shared, not
// copied).
func (o *AdamW) State() AdamWState { return AdamWState{M: o.M, V: o.V, Step: o.Steps} }

// SetState restores a checkpointed state for a model with nParams
// parameters.
func (o *AdamW) SetState(s AdamWState, nParams int) error {
	if len(s.M) != nParams || len(s.V) != nParams {
		return fmt.Errorf("adamw: state has %d/%d moments, model has %d parameters", len(s.M), len(s.V), nParams)
	}
	if s.Step < 0 {
		return fmt.Errorf("adamw: negative step %d", s.Step)
	}
	o.M, o.V, o.Steps = s.M, s.V, s.Step
	return nil
}

// NewAdamW returns an optimizer with PyTorch's defaults for the betas and
// epsilon. The moments are allocated on the first Step.
func NewAdamW(lr, weightDecay float32) *AdamW {
	return &AdamW{LR: lr, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, WeightDecay: weightDecay}
}

// Validate checks the hyper-parameters.
func (o *AdamW) Validate() error {
	bad := func(name string, v float32) error { return fmt.Errorf("adamw: %s = %g out of range", name, v) }
	switch {
	case !(o.LR >= 0) || math.IsInf(float64(o.LR), 0):
		return bad("lr", o.LR)
	case !(o.Beta1 >= 0 && o.Beta1 < 1):
		return bad("beta1", o.Beta1)
	case !(o.Beta2 >= 0 && o.Beta2 < 1):
		return bad("beta2", o.Beta2)
	case !(o.Eps > 0):
		return bad("eps", o.Eps)
	case !(o.WeightDecay >= 0 && o.WeightDecay < 1):
		return bad("weight_decay", o.WeightDecay)
	}
	return nil
}

// Step applies one update to m.Params from m.Grads with learning rate lr
// (usually a schedule's value; o.LR is not used here).
func (o *AdamW) Step(m *Model, lr float32) {
	n := len(m.Params)
	if len(o.M) != n || len(o.V) != n {
		o.M, o.V = make([]float32, n), make([]float32, n)
	}
	if len(m.Grads) != n {
		return // no gradients yet: nothing to apply
	}
	o.Steps++
	k := m.Kernels
	pv, gv := m.Config.views(m.Params), m.Config.views(m.Grads)
	mv, vv := m.Config.views(o.M), m.Config.views(o.V)
	for kind := range numParamKinds {
		wd := float32(0)
		if decayKind(kind) {
			wd = o.WeightDecay
		}
		k.AdamWUpdate(pv[kind], gv[kind], mv[kind], vv[kind], lr, o.Beta1, o.Beta2, o.Eps, wd, o.Steps)
	}
}

// decayKind reports whether weight decay applies to a parameter kind: the
// matrices do, biases and LayerNorm parameters do not.
func decayKind(kind int) bool {
	switch kind {
	case pWTE, pWPE, pQKVW, pAttProjW, pFCW, pFCProjW:
		return true
	}
	return false
}

// ClipGradNorm scales m.Grads so their global L2 norm is at most maxNorm
// and returns the norm before clipping. A non-finite norm is returned as
// is, with the gradients untouched, for the caller to skip the step.
func ClipGradNorm(m *Model, maxNorm float32) float32 {
	if len(m.Grads) == 0 {
		return 0
	}
	norm := math.Sqrt(m.Kernels.SumSquares(m.Grads))
	if math.IsNaN(norm) || math.IsInf(norm, 0) {
		return float32(norm)
	}
	if maxNorm > 0 && norm > float64(maxNorm) {
		m.Kernels.Scale(m.Grads, float32(float64(maxNorm)/(norm+1e-6)))
	}
	return float32(norm)
}

// CosineSchedule is linear warmup over `warmup` steps to maxLR, then a
// cosine decay to minLR at step `total`, and minLR after that. Steps count
// from 0.
func CosineSchedule(step, warmup, total int, maxLR, minLR float32) float32 {
	if step < warmup {
		return maxLR * float32(step+1) / float32(warmup)
	}
	if step >= total || total <= warmup {
		return minLR
	}
	ratio := float64(step-warmup) / float64(total-warmup)
	coeff := 0.5 * (1 + math.Cos(math.Pi*ratio))
	return minLR + float32(coeff)*(maxLR-minLR)
}
