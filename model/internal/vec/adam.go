package vec

import "math"

// Adam holds the scalars of one AdamW step, with the bias corrections
// already inverted: InvBC1 = 1/(1-beta1^t), InvBC2 = 1/(1-beta2^t), and
// Decay = 1 - lr*weight_decay.
type Adam struct {
	LR, Beta1, Beta2, Eps, Decay, InvBC1, InvBC2 float32
}

// AdamW applies one step to p from g, updating the moments m and v (all of
// the same length):
//
//	m = beta1*m + (1-beta1)*g
//	v = beta2*v + (1-beta2)*g²
//	p = p*Decay - LR * m*InvBC1 / (sqrt(v*InvBC2) + Eps)
func AdamW(p, g, m, v []float32, a Adam) {
	g, m, v = g[:len(p)], m[:len(p)], v[:len(p)]
	n8 := len(p) &^ 7
	if useAVX2 && n8 > 0 {
		c := [9]float32{a.LR, a.Beta1, 1 - a.Beta1, a.Beta2, 1 - a.Beta2, a.Eps, a.Decay, a.InvBC1, a.InvBC2}
		adamAsm(&p[0], &g[0], &m[0], &v[0], n8, &c)
		p, g, m, v = p[n8:], g[n8:], m[n8:], v[n8:]
	}
	for i := range p {
		gi := g[i]
		mi := a.Beta1*m[i] + (1-a.Beta1)*gi
		vi := a.Beta2*v[i] + (1-a.Beta2)*gi*gi
		m[i], v[i] = mi, vi
		p[i] = p[i]*a.Decay - a.LR*(mi*a.InvBC1)/(float32(math.Sqrt(float64(vi*a.InvBC2)))+a.Eps)
	}
}
