package model

import "math"

// The cross-entropy kernels never materialise the probabilities: forward
// keeps one log-sum-exp per row and backward recomputes exp(logit - lse)
// while writing the gradient, so a [N,V] buffer is saved.

func (k *cpuKernels) SoftmaxCrossEntropyForward(losses, lse, logits []float32, targets []int32, N, V int) {
	k.pool.rows(N, V, func(_, lo, hi int) {
		for i := lo; i < hi; i++ {
			row := logits[i*V : i*V+V]
			mx := row[0]
			for _, v := range row[1:] {
				mx = max(mx, v)
			}
			var sum float32
			for _, v := range row {
				sum += expf(v - mx)
			}
			l := mx + float32(math.Log(float64(sum)))
			lse[i] = l
			if t := targets[i]; t >= 0 {
				losses[i] = l - row[t]
			} else {
				losses[i] = 0
			}
		}
	})
}

func (k *cpuKernels) SoftmaxCrossEntropyBackward(dlogits, logits, lse []float32, targets []int32, scale float32, N, V int) {
	k.pool.rows(N, V, func(_, lo, hi int) {
		for i := lo; i < hi; i++ {
			d := dlogits[i*V : i*V+V]
			t := targets[i]
			if t < 0 {
				clear(d)
				continue
			}
			row := logits[i*V : i*V+V]
			l := lse[i]
			for j, v := range row {
				d[j] = scale * expf(v-l)
			}
			d[t] -= scale
		}
	})
}
