package model

import "math"

func (k *cpuKernels) LayerNormForward(out, mean, rstd, inp, weight, bias []float32, N, C int, eps float32) {
	if !k.pool.split(N, C) {
		layerNormRows(out, mean, rstd, inp, weight, bias, C, eps, 0, N)
		return
	}
	k.pool.parallelFor(N, 0, func(_, lo, hi int) { layerNormRows(out, mean, rstd, inp, weight, bias, C, eps, lo, hi) })
}

func layerNormRows(out, mean, rstd, inp, weight, bias []float32, C int, eps float32, lo, hi int) {
	w, b := weight[:C], bias[:C]
	for i := lo; i < hi; i++ {
		x := inp[i*C : i*C+C]
		var s float32
		for _, v := range x {
			s += v
		}
		m := s / float32(C)
		var ss float32
		for _, v := range x {
			d := v - m
			ss += d * d
		}
		r := float32(1 / math.Sqrt(float64(ss/float32(C)+eps)))
		o := out[i*C : i*C+C]
		for c, v := range x {
			o[c] = (v-m)*r*w[c] + b[c]
		}
		if mean != nil {
			mean[i] = m
			rstd[i] = r
		}
	}
}

// LayerNormBackward runs in two passes so neither needs per-goroutine
// partial sums: rows in parallel for dinp, then column blocks in parallel
// for dweight and dbias.
func (k *cpuKernels) LayerNormBackward(dinp, dweight, dbias, dout, inp, weight, mean, rstd []float32, N, C int) {
	if !k.pool.split(N, C) {
		layerNormGradRows(dinp, dout, inp, weight, mean, rstd, C, 0, N)
		layerNormParamGrad(dweight, dbias, dout, inp, mean, rstd, N, C, 0, C)
		return
	}
	k.pool.parallelFor(N, 0, func(_, lo, hi int) { layerNormGradRows(dinp, dout, inp, weight, mean, rstd, C, lo, hi) })
	k.pool.parallelFor(C, colGrain(C, k.pool.size), func(_, lo, hi int) {
		layerNormParamGrad(dweight, dbias, dout, inp, mean, rstd, N, C, lo, hi)
	})
}

func layerNormGradRows(dinp, dout, inp, weight, mean, rstd []float32, C, lo, hi int) {
	w := weight[:C]
	for i := lo; i < hi; i++ {
		x := inp[i*C : i*C+C]
		g := dout[i*C : i*C+C]
		m, r := mean[i], rstd[i]
		// dnorm = g*w; the gradient through the normalisation is
		// (dnorm - mean(dnorm) - norm*mean(dnorm*norm)) * rstd.
		var sumD, sumDN float32
		for c, v := range x {
			dn := g[c] * w[c]
			sumD += dn
			sumDN += dn * (v - m) * r
		}
		meanD := sumD / float32(C)
		meanDN := sumDN / float32(C)
		d := dinp[i*C : i*C+C]
		for c, v := range x {
			norm := (v - m) * r
			d[c] += (g[c]*w[c] - meanD - norm*meanDN) * r
		}
	}
}

// layerNormParamGrad accumulates dweight and dbias for columns [lo, hi).
func layerNormParamGrad(dweight, dbias, dout, inp, mean, rstd []float32, N, C, lo, hi int) {
	dw, db := dweight[lo:hi], dbias[lo:hi]
	for i := 0; i < N; i++ {
		x := inp[i*C+lo : i*C+hi]
		g := dout[i*C+lo : i*C+hi]
		m, r := mean[i], rstd[i]
		for c, v := range x {
			dw[c] += (v - m) * r * g[c]
			db[c] += g[c]
		}
	}
}
