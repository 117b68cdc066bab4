package model

import (
	"math"

	"github.com/tandem-ai/tandem/model/internal/vec"
)

// The cross-entropy kernels never materialise the probabilities: forward
// keeps one log-sum-exp per row and backward recomputes exp(logit - lse)
// while writing the gradient.

func (k *cpuKernels) SoftmaxCrossEntropyForward(losses, lse, logits []float32, targets []int32, N, V int) {
	if !k.pool.split(N, V) {
		crossEntropyRows(losses, lse, logits, targets, V, 0, N)
		return
	}
	k.pool.parallelFor(N, 0, func(_, lo, hi int) { crossEntropyRows(losses, lse, logits, targets, V, lo, hi) })
}

func crossEntropyRows(losses, lse, logits []float32, targets []int32, V, lo, hi int) {
	for i := lo; i < hi; i++ {
		row := logits[i*V : i*V+V]
		mx := vec.Max(row)
		l := mx + float32(math.Log(float64(vec.SumExpShift(row, mx))))
		lse[i] = l
		if t := targets[i]; t >= 0 {
			losses[i] = l - row[t]
		} else {
			losses[i] = 0
		}
	}
}

func (k *cpuKernels) SoftmaxCrossEntropyBackward(dlogits, logits, lse []float32, targets []int32, scale float32, N, V int) {
	if !k.pool.split(N, V) {
		crossEntropyGradRows(dlogits, logits, lse, targets, scale, V, 0, N)
		return
	}
	k.pool.parallelFor(N, 0, func(_, lo, hi int) { crossEntropyGradRows(dlogits, logits, lse, targets, scale, V, lo, hi) })
}

func crossEntropyGradRows(dlogits, logits, lse []float32, targets []int32, scale float32, V, lo, hi int) {
	for i := lo; i < hi; i++ {
		d := dlogits[i*V : i*V+V]
		t := targets[i]
		if t < 0 {
			clear(d)
			continue
		}
		vec.ExpShiftScale(d, logits[i*V:i*V+V], lse[i], scale)
		d[t] -= scale
	}
}
