package model

import (
	"math"
	"sync"

	"github.com/tandem-ai/tandem/model/internal/vec"
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

func (k *cpuKernels) EncoderForward(out []float32, tokens []int32, wte, wpe []float32, B, T, C int) {
	if !k.pool.split(B*T, C) {
		embedRows(out, tokens, nil, T, wte, wpe, C, 0, B*T)
		return
	}
	k.pool.parallelFor(B*T, 0, func(_, lo, hi int) { embedRows(out, tokens, nil, T, wte, wpe, C, lo, hi) })
}

func (k *cpuKernels) EmbedAt(out []float32, tokens, pos []int32, wte, wpe []float32, N, C int) {
	if !k.pool.split(N, C) {
		embedRows(out, tokens, pos, 0, wte, wpe, C, 0, N)
		return
	}
	k.pool.parallelFor(N, 0, func(_, lo, hi int) { embedRows(out, tokens, pos, 0, wte, wpe, C, lo, hi) })
}

// embedRows adds token and position embeddings for rows [lo, hi). The
// position of row i is pos[i], or i mod T when pos is nil.
func embedRows(out []float32, tokens, pos []int32, T int, wte, wpe []float32, C, lo, hi int) {
	for i := lo; i < hi; i++ {
		p := 0
		if pos != nil {
			p = int(pos[i])
		} else {
			p = i % T
		}
		o := out[i*C : i*C+C]
		w := wte[int(tokens[i])*C:][:C]
		pe := wpe[p*C:][:C]
		for c := range o {
			o[c] = w[c] + pe[c]
		}
	}
}

func (k *cpuKernels) EncoderBackward(dwte, dwpe, dout []float32, tokens []int32, B, T, C int) {
	// Split by columns: two rows with the same token must not add into the
	// same row of dwte from two goroutines.
	if !k.pool.split(B*T, C) {
		embedGradCols(dwte, dwpe, dout, tokens, B*T, T, C, 0, C)
		return
	}
	k.pool.parallelFor(C, colGrain(C, k.pool.size), func(_, lo, hi int) {
		embedGradCols(dwte, dwpe, dout, tokens, B*T, T, C, lo, hi)
	})
}

func embedGradCols(dwte, dwpe, dout []float32, tokens []int32, N, T, C, lo, hi int) {
	for i := 0; i < N; i++ {
		d := dout[i*C+lo : i*C+hi]
		w := dwte[int(tokens[i])*C+lo:][:len(d)]
		p := dwpe[(i%T)*C+lo:][:len(d)]
		for c, g := range d {
			w[c] += g
			p[c] += g
		}
	}
}

func (k *cpuKernels) GELUForward(out, inp []float32, N int) {
	if !k.pool.split(N, 8) {
		geluRange(out, inp, 0, N)
		return
	}
	k.pool.parallelFor(N, 0, func(_, lo, hi int) { geluRange(out, inp, lo, hi) })
}

func geluRange(out, inp []float32, lo, hi int) {
	o, x := out[lo:hi], inp[lo:hi]
	for i, v := range x {
		o[i] = geluf(v)
	}
}

func (k *cpuKernels) GELUBackward(dinp, inp, dout []float32, N int) {
	if !k.pool.split(N, 8) {
		geluGradRange(dinp, inp, dout, 0, N)
		return
	}
	k.pool.parallelFor(N, 0, func(_, lo, hi int) { geluGradRange(dinp, inp, dout, lo, hi) })
}

func geluGradRange(dinp, inp, dout []float32, lo, hi int) {
	d, x, g := dinp[lo:hi], inp[lo:hi], dout[lo:hi]
	for i, v := range x {
		d[i] = geluGradf(v) * g[i]
	}
}

func (k *cpuKernels) ResidualForward(out, inp1, inp2 []float32, N int) {
	if !k.pool.split(N, 1) {
		addRange(out, inp1, inp2, 0, N)
		return
	}
	k.pool.parallelFor(N, 0, func(_, lo, hi int) { addRange(out, inp1, inp2, lo, hi) })
}

func addRange(out, a, b []float32, lo, hi int) {
	o, x, y := out[lo:hi], a[lo:hi], b[lo:hi]
	for i := range o {
		o[i] = x[i] + y[i]
	}
}

func (k *cpuKernels) Scale(x []float32, s float32) {
	if !k.pool.split(len(x), 1) {
		scaleRange(x, s, 0, len(x))
		return
	}
	k.pool.parallelFor(len(x), 0, func(_, lo, hi int) { scaleRange(x, s, lo, hi) })
}

func scaleRange(x []float32, s float32, lo, hi int) {
	v := x[lo:hi]
	for i := range v {
		v[i] *= s
	}
}

func (k *cpuKernels) SumSquares(x []float32) float64 {
	if !k.pool.split(len(x), 1) {
		return sumSquaresRange(x)
	}
	partial := make([]float64, k.pool.size)
	const grain = 1 << 16
	k.pool.parallelFor(len(x), grain, func(part, lo, hi int) { partial[part] += sumSquaresRange(x[lo:hi]) })
	var s float64
	for _, p := range partial {
		s += p
	}
	return s
}

// sumSquaresRange sums x² in float32 over short runs and float64 across
// them: exact enough for a norm and twice as fast as float64 throughout.
func sumSquaresRange(v []float32) float64 {
	var s float64
	for len(v) > 0 {
		n := min(len(v), 256)
		var s32 float32
		for _, e := range v[:n] {
			s32 += e * e
		}
		s += float64(s32)
		v = v[n:]
	}
	return s
}

func (k *cpuKernels) AdamWUpdate(params, grads, m, v []float32, lr, beta1, beta2, eps, weightDecay float32, t int) {
	// Bias corrections computed once in float64: 1 - beta^t loses float32
	// precision for large t.
	u := vec.Adam{
		LR: lr, Beta1: beta1, Beta2: beta2, Eps: eps, Decay: 1 - lr*weightDecay,
		InvBC1: float32(1 / (1 - math.Pow(float64(beta1), float64(t)))),
		InvBC2: float32(1 / (1 - math.Pow(float64(beta2), float64(t)))),
	}
	if !k.pool.split(len(params), 4) {
		vec.AdamW(params, grads, m, v, u)
		return
	}
	const grain = 1 << 15
	k.pool.parallelFor(len(params), grain, func(_, lo, hi int) {
		vec.AdamW(params[lo:hi], grads[lo:hi], m[lo:hi], v[lo:hi], u)
	})
}
