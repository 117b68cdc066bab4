package model

import (
	"math/rand/v2"
	"slices"
	"sync"
)

// probeRows are the row counts PrefillGroupInvariant compares: products
// of more than 16 rows (those take BLAS) up to a large prefill.
var probeRows = []int{17, 23, 40, 64, 100, 128, 200, 256, 512}

var prefillProbe sync.Map // map[int]bool, by width

// PrefillGroupInvariant reports whether this machine's products of more
// than 16 rows give each row the same bits whatever the row count, for m's
// shapes (the four linear layers of a block). Then prompt chunks of more
// than 16 tokens may share a decode call and stay batch-invariant; where
// BLAS picks its rounding by row count (OpenBLAS does with
// OPENBLAS_CORETYPE=Haswell), each chunk needs a call of its own. The
// answer comes from running the products once per process and shape; a
// backend other than the CPU's answers false.
func (m *Model) PrefillGroupInvariant() bool {
	if _, ok := m.Kernels.(*cpuKernels); !ok {
		return false
	}
	C := m.Config.NEmbd
	key := C
	if v, ok := prefillProbe.Load(key); ok {
		return v.(bool)
	}
	ok := probeRowInvariance(m.Kernels, C)
	prefillProbe.Store(key, ok)
	return ok
}

// probeRowInvariance multiplies random rows by random weights of each
// linear layer's shape at every probeRows count and compares the first
// rows bit for bit with the smallest count's.
func probeRowInvariance(k Kernels, C int) bool {
	rng := rand.New(rand.NewPCG(uint64(C), 17))
	maxM := slices.Max(probeRows)
	for _, sh := range [][2]int{{C, 3 * C}, {C, C}, {C, 4 * C}, {4 * C, C}} {
		in, out := sh[0], sh[1]
		w, b := make([]float32, in*out), make([]float32, out)
		for i := range w {
			w[i] = float32(rng.NormFloat64() * 0.02)
		}
		for i := range b {
			b[i] = float32(rng.NormFloat64() * 0.02)
		}
		x := make([]float32, maxM*in)
		for i := range x {
			x[i] = float32(rng.NormFloat64())
		}
		first := probeRows[0]
		ref := make([]float32, first*out)
		k.MatmulForward(ref, x, w, b, first, in, out)
		y := make([]float32, maxM*out)
		for _, M := range probeRows[1:] {
			k.MatmulForward(y, x, w, b, M, in, out)
			if !slices.Equal(y[:first*out], ref) {
				return false
			}
		}
	}
	return true
}
