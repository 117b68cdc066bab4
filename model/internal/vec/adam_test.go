package vec

import (
	"math"
	"math/rand/v2"
	"testing"
)

func TestAdamWMatchesFormula(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	a := Adam{LR: 1e-2, Beta1: 0.9, Beta2: 0.95, Eps: 1e-8, Decay: 1 - 1e-2*0.1, InvBC1: 1 / (1 - 0.9*0.9), InvBC2: 1 / (1 - 0.95*0.95)}
	for _, n := range []int{1, 7, 8, 13, 1000} {
		p, g, m, v := make([]float32, n), make([]float32, n), make([]float32, n), make([]float32, n)
		for i := range p {
			p[i], g[i] = float32(rng.NormFloat64()), float32(rng.NormFloat64()*0.1)
			m[i], v[i] = float32(rng.NormFloat64()*0.01), float32(rng.Float64()*0.01)
		}
		want := make([]float64, n)
		for i := range p {
			mi := 0.9*float64(m[i]) + 0.1*float64(g[i])
			vi := 0.95*float64(v[i]) + 0.05*float64(g[i])*float64(g[i])
			want[i] = float64(p[i])*float64(a.Decay) - float64(a.LR)*mi*float64(a.InvBC1)/(math.Sqrt(vi*float64(a.InvBC2))+1e-8)
		}
		AdamW(p, g, m, v, a)
		for i := range p {
			if math.Abs(float64(p[i])-want[i]) > 1e-6*(1+math.Abs(want[i])) {
				t.Fatalf("n=%d: p[%d]=%.9g want %.9g", n, i, p[i], want[i])
			}
		}
	}
}
