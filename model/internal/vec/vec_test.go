package vec

import (
	"math"
	"math/rand/v2"
	"testing"
)

func TestExpAccuracy(t *testing.T) {
	for x := float32(-87); x <= 88; x += 0.0137 {
		want := math.Exp(float64(x))
		if rel := math.Abs(float64(Exp(x))-want) / want; rel > 2e-7 {
			t.Fatalf("Exp(%g) = %g, want %g (rel %g)", x, Exp(x), want, rel)
		}
	}
	if !math.IsNaN(float64(Exp(float32(math.NaN())))) {
		t.Fatal("Exp(NaN) is not NaN")
	}
	if v := Exp(float32(math.Inf(-1))); v > 1e-37 {
		t.Fatalf("Exp(-Inf) = %g", v)
	}
}

// The slice functions, whichever implementation runs, agree with
// math.Exp on every length around the 8-lane blocks.
func TestSliceFunctions(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, n := range []int{1, 3, 7, 8, 9, 16, 31, 1000, 50257} {
		src := make([]float32, n)
		for i := range src {
			src[i] = float32(rng.NormFloat64() * 20)
		}
		src[n/2] = 200 // clamped to exp(88)
		const shift, scale = 3.5, 0.25
		dst := make([]float32, n)
		sum := ExpShiftScale(dst, src, shift, scale)
		var want float64
		for i, v := range src {
			e := math.Exp(math.Min(math.Max(float64(v-shift), -87), 88)) // the documented clamp, on the float32 difference
			want += e
			if rel := math.Abs(float64(dst[i])-scale*e) / (scale * e); rel > 3e-7 {
				t.Fatalf("n=%d: dst[%d]=%g want %g", n, i, dst[i], scale*e)
			}
		}
		if rel := math.Abs(float64(sum)-want) / want; rel > 1e-5 {
			t.Fatalf("n=%d: sum %g want %g", n, sum, want)
		}
		if rel := math.Abs(float64(SumExpShift(src, shift))-want) / want; rel > 1e-5 {
			t.Fatalf("n=%d: SumExpShift %g want %g", n, SumExpShift(src, shift), want)
		}
		mx := src[0]
		for _, v := range src {
			mx = max(mx, v)
		}
		if got := Max(src); got != mx {
			t.Fatalf("n=%d: Max %g want %g", n, got, mx)
		}
		// In place.
		cp := append([]float32(nil), src...)
		ExpShift(cp, cp, shift)
		for i := range cp {
			if math.Abs(float64(cp[i]-dst[i]/scale)) > 1e-6*float64(cp[i]) {
				t.Fatalf("n=%d: in-place differs at %d", n, i)
			}
		}
	}
	// NaN propagates into the sum, so a broken row cannot look healthy.
	nan := make([]float32, 16)
	nan[5] = float32(math.NaN())
	if s := SumExpShift(nan, 0); !math.IsNaN(float64(s)) {
		t.Fatalf("sum with NaN = %g", s)
	}
}

func BenchmarkSumExpShift(b *testing.B) {
	src := make([]float32, 50257)
	for i := range src {
		src[i] = float32(i%97) * 0.1
	}
	var s float32
	for i := 0; i < b.N; i++ {
		s += SumExpShift(src, 10)
	}
	b.ReportMetric(float64(b.N*len(src))/b.Elapsed().Seconds()/1e6, "Mexp/s")
}
