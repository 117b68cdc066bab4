package vec

import (
	"math"
	"math/rand/v2"
	"testing"
)

func TestGemmSmall(t *testing.T) {
	if !useAVX2 {
		t.Skip("no AVX2: the products report false and the caller uses BLAS")
	}
	rng := rand.New(rand.NewPCG(3, 4))
	randn := func(n int) []float32 {
		s := make([]float32, n)
		for i := range s {
			s[i] = float32(rng.NormFloat64())
		}
		return s
	}
	for _, m := range []int{1, 3, 4, 5, 8, 9} {
		for _, sz := range [][2]int{{16, 8}, {48, 24}, {160, 76}} {
			n, k := sz[0], sz[1]
			ldx, ldw, ldy := k+3, n+5, n+2
			x, w, y := randn(m*ldx), randn(k*ldw), randn(m*ldy)
			want := append([]float32(nil), y...)
			for r := 0; r < m; r++ {
				for j := 0; j < n; j++ {
					var s float64
					for p := 0; p < k; p++ {
						s += float64(x[r*ldx+p]) * float64(w[p*ldw+j])
					}
					want[r*ldy+j] += float32(s)
				}
			}
			if !GemmNN(m, n, k, x, ldx, w, ldw, y, ldy) {
				t.Fatal("GemmNN declined")
			}
			for i := range y {
				if math.Abs(float64(y[i]-want[i])) > 1e-4*math.Sqrt(float64(k)) {
					t.Fatalf("NN m=%d n=%d k=%d: y[%d]=%g want %g", m, n, k, i, y[i], want[i])
				}
			}
		}
		for _, sz := range [][2]int{{1, 8}, {7, 24}, {50, 160}} {
			n, k := sz[0], sz[1]
			ldx, ldw, ldy := k+3, k+1, n+2
			x, w, y := randn(m*ldx), randn(n*ldw), randn(m*ldy)
			want := append([]float32(nil), y...)
			for r := 0; r < m; r++ {
				for j := 0; j < n; j++ {
					var s float64
					for p := 0; p < k; p++ {
						s += float64(x[r*ldx+p]) * float64(w[j*ldw+p])
					}
					want[r*ldy+j] += float32(s)
				}
			}
			if !GemmNT(m, n, k, x, ldx, w, ldw, y, ldy) {
				t.Fatal("GemmNT declined")
			}
			for i := range y {
				if math.Abs(float64(y[i]-want[i])) > 1e-4*math.Sqrt(float64(k)) {
					t.Fatalf("NT m=%d n=%d k=%d: y[%d]=%g want %g", m, n, k, i, y[i], want[i])
				}
			}
		}
	}
	// Batch invariance: each row alone gives the bits it gets in a batch.
	const m, n, k = 7, 64, 96
	x, w, wt := randn(m*k), randn(k*n), randn(n*k)
	all, allT := make([]float32, m*n), make([]float32, m*n)
	GemmNN(m, n, k, x, k, w, n, all, n)
	GemmNT(m, n, k, x, k, wt, k, allT, n)
	for r := 0; r < m; r++ {
		one, oneT := make([]float32, n), make([]float32, n)
		GemmNN(1, n, k, x[r*k:], k, w, n, one, n)
		GemmNT(1, n, k, x[r*k:], k, wt, k, oneT, n)
		for j := 0; j < n; j++ {
			if one[j] != all[r*n+j] || oneT[j] != allT[r*n+j] {
				t.Fatalf("row %d column %d differs alone and in a batch", r, j)
			}
		}
	}
	if GemmNN(2, 15, 4, make([]float32, 8), 4, make([]float32, 60), 15, make([]float32, 30), 15) {
		t.Fatal("GemmNN accepted n not a multiple of 16")
	}
	defer func() {
		if recover() == nil {
			t.Fatal("short slice not caught")
		}
	}()
	GemmNN(2, 16, 4, make([]float32, 7), 4, make([]float32, 64), 16, make([]float32, 32), 16)
}
