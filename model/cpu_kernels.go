package model

import (
	"math"
	"sync"
)

// cpuKernels implements Kernels on the CPU: matrix products through Sgemm
// (OpenBLAS, or gonum without cgo), everything else in plain Go spread over
// a small goroutine pool, one participant per core.
type cpuKernels struct {
	pool *workPool
}

var (
	cpuOnce sync.Once
	cpuK    *cpuKernels
)

// CPU returns the CPU backend. It is shared: all its methods are safe for
// concurrent use on disjoint outputs.
func CPU() Kernels {
	cpuOnce.Do(func() { cpuK = &cpuKernels{pool: sharedPool()} })
	return cpuK
}

var _ Kernels = (*cpuKernels)(nil)

func (k *cpuKernels) Name() string      { return "cpu" }
func (k *cpuKernels) ScratchParts() int { return k.pool.size }

// cols runs fn over column blocks [lo, hi) of a [rows, n] matrix; kernels
// that reduce over rows (bias and LayerNorm gradients, embedding scatter)
// split this way so no two goroutines add into the same element.
func (k *cpuKernels) cols(n, rows int, fn func(lo, hi int)) {
	if n*rows < serialBelow || n < 2*16 {
		fn(0, n)
		return
	}
	k.pool.parallelFor(n, 0, func(_, lo, hi int) { fn(lo, hi) })
}

// elems runs fn over [0, n) element ranges.
func (k *cpuKernels) elems(n int, fn func(lo, hi int)) {
	k.pool.rows(n, 1, func(_, lo, hi int) { fn(lo, hi) })
}

func (k *cpuKernels) EncoderForward(out []float32, tokens []int32, wte, wpe []float32, B, T, C int) {
	k.pool.rows(B*T, C, func(_, lo, hi int) {
		for i := lo; i < hi; i++ {
			o := out[i*C : i*C+C]
			w := wte[int(tokens[i])*C:][:C]
			p := wpe[(i%T)*C:][:C]
			for c := range o {
				o[c] = w[c] + p[c]
			}
		}
	})
}

func (k *cpuKernels) EmbedAt(out []float32, tokens, pos []int32, wte, wpe []float32, N, C int) {
	k.pool.rows(N, C, func(_, lo, hi int) {
		for i := lo; i < hi; i++ {
			o := out[i*C : i*C+C]
			w := wte[int(tokens[i])*C:][:C]
			p := wpe[int(pos[i])*C:][:C]
			for c := range o {
				o[c] = w[c] + p[c]
			}
		}
	})
}

func (k *cpuKernels) EncoderBackward(dwte, dwpe, dout []float32, tokens []int32, B, T, C int) {
	k.cols(C, B*T, func(lo, hi int) {
		for i := 0; i < B*T; i++ {
			d := dout[i*C+lo : i*C+hi]
			w := dwte[int(tokens[i])*C+lo:][:len(d)]
			p := dwpe[(i%T)*C+lo:][:len(d)]
			for c, g := range d {
				w[c] += g
				p[c] += g
			}
		}
	})
}

func (k *cpuKernels) GELUForward(out, inp []float32, N int) {
	k.elems(N, func(lo, hi int) {
		o, x := out[lo:hi], inp[lo:hi]
		for i, v := range x {
			o[i] = geluf(v)
		}
	})
}

func (k *cpuKernels) GELUBackward(dinp, inp, dout []float32, N int) {
	k.elems(N, func(lo, hi int) {
		d, x, g := dinp[lo:hi], inp[lo:hi], dout[lo:hi]
		for i, v := range x {
			d[i] = geluGradf(v) * g[i]
		}
	})
}

func (k *cpuKernels) ResidualForward(out, inp1, inp2 []float32, N int) {
	k.elems(N, func(lo, hi int) {
		o, a, b := out[lo:hi], inp1[lo:hi], inp2[lo:hi]
		for i := range o {
			o[i] = a[i] + b[i]
		}
	})
}

func (k *cpuKernels) Scale(x []float32, s float32) {
	k.elems(len(x), func(lo, hi int) {
		v := x[lo:hi]
		for i := range v {
			v[i] *= s
		}
	})
}

func (k *cpuKernels) SumSquares(x []float32) float64 {
	partial := make([]float64, k.pool.size)
	const grain = 1 << 16
	k.pool.parallelFor(len(x), grain, func(part, lo, hi int) {
		// float32 partial sums over short runs, float64 across them: exact
		// enough for a norm and twice as fast as float64 throughout.
		var s float64
		v := x[lo:hi]
		for len(v) > 0 {
			n := min(len(v), 256)
			var s32 float32
			for _, e := range v[:n] {
				s32 += e * e
			}
			s += float64(s32)
			v = v[n:]
		}
		partial[part] += s
	})
	var s float64
	for _, p := range partial {
		s += p
	}
	return s
}

func (k *cpuKernels) AdamWUpdate(params, grads, m, v []float32, lr, beta1, beta2, eps, weightDecay float32, t int) {
	// Bias corrections folded into the step size and epsilon, computed once
	// in float64: 1 - beta^t underflows float32 precision for large t.
	bc1 := 1 - math.Pow(float64(beta1), float64(t))
	bc2 := 1 - math.Pow(float64(beta2), float64(t))
	invBC1 := float32(1 / bc1)
	invBC2 := float32(1 / bc2)
	decay := 1 - lr*weightDecay
	const grain = 1 << 15
	k.pool.parallelFor(len(params), grain, func(_, lo, hi int) {
		p, g, mm, vv := params[lo:hi], grads[lo:hi], m[lo:hi], v[lo:hi]
		for i := range p {
			gi := g[i]
			mi := beta1*mm[i] + (1-beta1)*gi
			vi := beta2*vv[i] + (1-beta2)*gi*gi
			mm[i], vv[i] = mi, vi
			mhat := mi * invBC1
			vhat := vi * invBC2
			p[i] = p[i]*decay - lr*mhat/(float32(math.Sqrt(float64(vhat)))+eps)
		}
	})
}
