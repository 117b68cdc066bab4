package model

import (
	"math"
	"math/rand/v2"
	"testing"
)

func randSlice(rng *rand.Rand, n int, std float32) []float32 {
	s := make([]float32, n)
	for i := range s {
		s[i] = float32(rng.NormFloat64()) * std
	}
	return s
}

func dot64(a, b []float32) float64 {
	var s float64
	for i := range a {
		s += float64(a[i]) * float64(b[i])
	}
	return s
}

// fdCheck compares analytic, the gradient of loss with respect to x, with
// central differences of loss, at up to maxProbe coordinates of x. atol is
// the noise floor of the differences (float32 rounding of loss / h).
func fdCheck(t *testing.T, name string, x, analytic []float32, loss func() float64, h float32, maxProbe int, atol float64) {
	t.Helper()
	if len(x) != len(analytic) {
		t.Fatalf("%s: len(x)=%d len(grad)=%d", name, len(x), len(analytic))
	}
	var scale float64
	for _, g := range analytic {
		scale = max(scale, math.Abs(float64(g)))
	}
	scale = max(scale, 1e-3)
	step := max(1, len(x)/maxProbe)
	for i := 0; i < len(x); i += step {
		orig := x[i]
		x[i] = orig + h
		lp := loss()
		x[i] = orig - h
		lm := loss()
		x[i] = orig
		num := (lp - lm) / float64(2*h)
		if d := math.Abs(num - float64(analytic[i])); d > atol+2e-3*scale+1e-3*math.Abs(num) {
			t.Errorf("%s[%d]: analytic %.6g numeric %.6g (scale %.3g)", name, i, analytic[i], num, scale)
		}
	}
}

func TestGELUMatchesTanhForm(t *testing.T) {
	for x := -8.0; x <= 8; x += 0.01 {
		want := 0.5 * x * (1 + math.Tanh(math.Sqrt(2/math.Pi)*(x+0.044715*x*x*x)))
		if got := float64(geluf(float32(x))); math.Abs(got-want) > 1e-6*(1+math.Abs(want)) {
			t.Fatalf("gelu(%g) = %g, want %g", x, got, want)
		}
	}
}

func naiveGemm(transA, transB bool, M, N, K int, alpha float32, A []float32, lda int, B []float32, ldb int, beta float32, C []float32, ldc int) {
	for i := 0; i < M; i++ {
		for j := 0; j < N; j++ {
			var s float64
			for p := 0; p < K; p++ {
				var a, b float32
				if transA {
					a = A[p*lda+i]
				} else {
					a = A[i*lda+p]
				}
				if transB {
					b = B[j*ldb+p]
				} else {
					b = B[p*ldb+j]
				}
				s += float64(a) * float64(b)
			}
			C[i*ldc+j] = alpha*float32(s) + beta*C[i*ldc+j]
		}
	}
}

func TestSgemmMatchesNaive(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	// Sizes on both sides of the split threshold, tall and wide, with
	// padded leading dimensions.
	for _, sz := range [][3]int{{1, 1, 1}, {1, 9, 5}, {1, 3000, 800}, {3, 5, 7}, {130, 17, 33}, {160, 150, 140}, {20, 300, 400}, {300, 20, 400}} {
		M, N, K := sz[0], sz[1], sz[2]
		for _, tA := range []bool{false, true} {
			for _, tB := range []bool{false, true} {
				ra, ca := M, K
				if tA {
					ra, ca = K, M
				}
				rb, cb := K, N
				if tB {
					rb, cb = N, K
				}
				lda, ldb, ldc := ca+3, cb+1, N+2
				A := randSlice(rng, ra*lda, 1)
				B := randSlice(rng, rb*ldb, 1)
				C := randSlice(rng, M*ldc, 1)
				want := append([]float32(nil), C...)
				naiveGemm(tA, tB, M, N, K, 0.5, A, lda, B, ldb, 0.25, want, ldc)
				Sgemm(tA, tB, M, N, K, 0.5, A, lda, B, ldb, 0.25, C, ldc)
				for i := range C {
					if math.Abs(float64(C[i]-want[i])) > 1e-4*math.Sqrt(float64(K))+1e-5 {
						t.Fatalf("M=%d N=%d K=%d tA=%v tB=%v: C[%d]=%g want %g", M, N, K, tA, tB, i, C[i], want[i])
					}
				}
			}
		}
	}
}

func TestSgemmRejectsShortSlices(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("want a panic for a short A")
		}
	}()
	Sgemm(false, false, 2, 2, 2, 1, make([]float32, 3), 2, make([]float32, 4), 2, 0, make([]float32, 4), 2)
}

func TestWorkPoolCoversEveryIndexOnce(t *testing.T) {
	p := newWorkPool(3)
	for _, n := range []int{1, 2, 7, 100, 1001} {
		for _, grain := range []int{0, 1, 5} {
			hits := make([]int32, n)
			p.parallelFor(n, grain, func(part, lo, hi int) {
				if part < 0 || part >= p.size {
					t.Errorf("part %d out of range", part)
				}
				for i := lo; i < hi; i++ {
					hits[i]++ // chunks are disjoint, so no race
				}
			})
			for i, h := range hits {
				if h != 1 {
					t.Fatalf("n=%d grain=%d: index %d visited %d times", n, grain, i, h)
				}
			}
		}
	}
	// Nested loops must not deadlock.
	total := make([]int, 8)
	p.parallelFor(8, 1, func(_, lo, hi int) {
		for i := lo; i < hi; i++ {
			inner := make([]int, 16)
			p.parallelFor(16, 1, func(_, a, b int) {
				for j := a; j < b; j++ {
					inner[j] = 1
				}
			})
			for _, v := range inner {
				total[i] += v
			}
		}
	})
	for i, v := range total {
		if v != 16 {
			t.Fatalf("nested loop %d summed %d", i, v)
		}
	}
}

func TestLayerNormGradient(t *testing.T) {
	k := CPU()
	rng := rand.New(rand.NewPCG(3, 4))
	N, C := 5, 12
	inp, w, b := randSlice(rng, N*C, 1), randSlice(rng, C, 1), randSlice(rng, C, 1)
	r := randSlice(rng, N*C, 1)
	out, mean, rstd := make([]float32, N*C), make([]float32, N), make([]float32, N)
	loss := func() float64 {
		k.LayerNormForward(out, mean, rstd, inp, w, b, N, C, 1e-5)
		return dot64(out, r)
	}
	loss()
	// Forward against the definition.
	for i := 0; i < N; i++ {
		var m, v float64
		for c := 0; c < C; c++ {
			m += float64(inp[i*C+c])
		}
		m /= float64(C)
		for c := 0; c < C; c++ {
			d := float64(inp[i*C+c]) - m
			v += d * d
		}
		v /= float64(C)
		for c := 0; c < C; c++ {
			want := (float64(inp[i*C+c])-m)/math.Sqrt(v+1e-5)*float64(w[c]) + float64(b[c])
			if math.Abs(float64(out[i*C+c])-want) > 1e-5 {
				t.Fatalf("layernorm out[%d,%d]=%g want %g", i, c, out[i*C+c], want)
			}
		}
	}
	dinp, dw, db := make([]float32, N*C), make([]float32, C), make([]float32, C)
	k.LayerNormBackward(dinp, dw, db, r, inp, w, mean, rstd, N, C)
	fdCheck(t, "dinp", inp, dinp, loss, 1e-2, 200, 0)
	fdCheck(t, "dweight", w, dw, loss, 1e-2, 200, 0)
	fdCheck(t, "dbias", b, db, loss, 1e-2, 200, 0)
}

func TestMatmulGradient(t *testing.T) {
	k := CPU()
	rng := rand.New(rand.NewPCG(5, 6))
	N, C, OC := 6, 7, 5
	inp, w, b := randSlice(rng, N*C, 1), randSlice(rng, C*OC, 1), randSlice(rng, OC, 1)
	r := randSlice(rng, N*OC, 1)
	out := make([]float32, N*OC)
	loss := func() float64 { k.MatmulForward(out, inp, w, b, N, C, OC); return dot64(out, r) }
	loss()
	want := make([]float32, N*OC)
	for i := 0; i < N; i++ {
		copy(want[i*OC:], b)
	}
	naiveGemm(false, false, N, OC, C, 1, inp, C, w, OC, 1, want, OC)
	for i := range out {
		if math.Abs(float64(out[i]-want[i])) > 1e-5 {
			t.Fatalf("matmul out[%d]=%g want %g", i, out[i], want[i])
		}
	}
	dinp, dw, db := make([]float32, N*C), make([]float32, C*OC), make([]float32, OC)
	k.MatmulBackward(dinp, dw, db, r, inp, w, N, C, OC)
	fdCheck(t, "dinp", inp, dinp, loss, 1e-2, 200, 0)
	fdCheck(t, "dweight", w, dw, loss, 1e-2, 200, 0)
	fdCheck(t, "dbias", b, db, loss, 1e-2, 200, 0)

	// The transposed form used by the language-model head.
	wt := randSlice(rng, OC*C, 1)
	lossT := func() float64 { k.MatmulTransposedForward(out, inp, wt, N, C, OC); return dot64(out, r) }
	lossT()
	clear(dinp)
	dwt := make([]float32, OC*C)
	k.MatmulTransposedBackward(dinp, dwt, r, inp, wt, N, C, OC)
	fdCheck(t, "T.dinp", inp, dinp, lossT, 1e-2, 200, 0)
	fdCheck(t, "T.dweight", wt, dwt, lossT, 1e-2, 200, 0)
}

// naiveAttention is the textbook causal attention in float64.
func naiveAttention(qkv []float32, B, T, C, NH int) []float32 {
	hs := C / NH
	out := make([]float32, B*T*C)
	for b := 0; b < B; b++ {
		for h := 0; h < NH; h++ {
			for t := 0; t < T; t++ {
				q := qkv[(b*T+t)*3*C+h*hs:]
				scores := make([]float64, t+1)
				mx := math.Inf(-1)
				for j := 0; j <= t; j++ {
					kk := qkv[(b*T+j)*3*C+C+h*hs:]
					var s float64
					for d := 0; d < hs; d++ {
						s += float64(q[d]) * float64(kk[d])
					}
					scores[j] = s / math.Sqrt(float64(hs))
					mx = max(mx, scores[j])
				}
				var sum float64
				for j := range scores {
					scores[j] = math.Exp(scores[j] - mx)
					sum += scores[j]
				}
				for d := 0; d < hs; d++ {
					var s float64
					for j := 0; j <= t; j++ {
						s += scores[j] / sum * float64(qkv[(b*T+j)*3*C+2*C+h*hs+d])
					}
					out[(b*T+t)*C+h*hs+d] = float32(s)
				}
			}
		}
	}
	return out
}

func TestAttentionForwardAndGradient(t *testing.T) {
	k := CPU()
	// The second shape spans several causal tiles (attTile = 64).
	for _, sh := range [][4]int{{2, 5, 8, 2}, {1, 140, 8, 2}} {
		B, T, C, NH := sh[0], sh[1], sh[2], sh[3]
		rng := rand.New(rand.NewPCG(uint64(T), 7))
		qkv := randSlice(rng, B*T*3*C, 1)
		r := randSlice(rng, B*T*C, 1)
		out, att := make([]float32, B*T*C), make([]float32, B*NH*T*T)
		loss := func() float64 { k.AttentionForward(out, att, qkv, B, T, C, NH); return dot64(out, r) }
		loss()
		want := naiveAttention(qkv, B, T, C, NH)
		for i := range out {
			if math.Abs(float64(out[i]-want[i])) > 1e-5 {
				t.Fatalf("T=%d: attention out[%d]=%g want %g", T, i, out[i], want[i])
			}
		}
		dqkv, datt := randSlice(rng, B*T*3*C, 1), make([]float32, B*NH*T*T) // dqkv garbage: must be overwritten
		k.AttentionBackward(dqkv, datt, r, qkv, att, B, T, C, NH)
		fdCheck(t, "dqkv", qkv, dqkv, loss, 1e-2, 300, 0)
	}
}

func TestGELUGradient(t *testing.T) {
	k := CPU()
	rng := rand.New(rand.NewPCG(8, 9))
	n := 300
	x := randSlice(rng, n, 2)
	r := randSlice(rng, n, 1)
	out := make([]float32, n)
	loss := func() float64 { k.GELUForward(out, x, n); return dot64(out, r) }
	d := make([]float32, n)
	k.GELUBackward(d, x, r, n)
	fdCheck(t, "dinp", x, d, loss, 1e-2, 300, 0)
}

func TestEncoderGradient(t *testing.T) {
	k := CPU()
	rng := rand.New(rand.NewPCG(10, 11))
	B, T, C, V := 2, 4, 6, 5
	wte, wpe := randSlice(rng, V*C, 1), randSlice(rng, T*C, 1)
	tokens := []int32{0, 3, 3, 1, 4, 0, 3, 2} // repeats exercise the scatter-add
	r := randSlice(rng, B*T*C, 1)
	out := make([]float32, B*T*C)
	loss := func() float64 { k.EncoderForward(out, tokens, wte, wpe, B, T, C); return dot64(out, r) }
	dwte, dwpe := make([]float32, V*C), make([]float32, T*C)
	k.EncoderBackward(dwte, dwpe, r, tokens, B, T, C)
	fdCheck(t, "dwte", wte, dwte, loss, 1e-2, 100, 0)
	fdCheck(t, "dwpe", wpe, dwpe, loss, 1e-2, 100, 0)

	pos := []int32{0, 1, 2, 3, 0, 1, 2, 3}
	out2 := make([]float32, B*T*C)
	k.EmbedAt(out2, tokens, pos, wte, wpe, B*T, C)
	loss()
	for i := range out {
		if out[i] != out2[i] {
			t.Fatalf("EmbedAt differs from EncoderForward at %d", i)
		}
	}
}

func TestSoftmaxCrossEntropyGradient(t *testing.T) {
	k := CPU()
	rng := rand.New(rand.NewPCG(12, 13))
	N, V := 4, 9
	logits := randSlice(rng, N*V, 2)
	targets := []int32{3, -1, 0, 8}
	losses, lse := make([]float32, N), make([]float32, N)
	loss := func() float64 {
		k.SoftmaxCrossEntropyForward(losses, lse, logits, targets, N, V)
		var s float64
		for _, l := range losses {
			s += float64(l)
		}
		return s / 3
	}
	loss()
	for i, tg := range targets {
		if tg < 0 {
			if losses[i] != 0 {
				t.Fatalf("ignored row %d has loss %g", i, losses[i])
			}
			continue
		}
		var sum float64
		for v := 0; v < V; v++ {
			sum += math.Exp(float64(logits[i*V+v]))
		}
		want := math.Log(sum) - float64(logits[i*V+int(tg)])
		if math.Abs(float64(losses[i])-want) > 1e-5 {
			t.Fatalf("loss[%d]=%g want %g", i, losses[i], want)
		}
	}
	d := make([]float32, N*V)
	k.SoftmaxCrossEntropyBackward(d, logits, lse, targets, 1.0/3, N, V)
	fdCheck(t, "dlogits", logits, d, loss, 1e-2, 100, 0)
}

func TestSumSquaresAndScale(t *testing.T) {
	k := CPU()
	rng := rand.New(rand.NewPCG(14, 15))
	x := randSlice(rng, 300001, 1)
	if got, want := k.SumSquares(x), dot64(x, x); math.Abs(got-want) > 1e-6*want {
		t.Fatalf("SumSquares=%g want %g", got, want)
	}
	y := append([]float32(nil), x...)
	k.Scale(y, 0.5)
	for i := range x {
		if y[i] != x[i]*0.5 {
			t.Fatalf("Scale at %d", i)
		}
	}
}
