package model

import "math"

// Scalar helpers for the element-wise kernels. math.Exp works in float64 and
// costs several times more than the float32 range reduction below; the
// softmaxes and GELU call it tens of millions of times per training step.

const (
	log2e = 1.44269504088896341
	ln2Hi = 0.693145751953125     // high bits of ln 2, exact in float32
	ln2Lo = 1.428606765330187e-06 // ln 2 - ln2Hi
)

// expf is exp(x) in float32 to about 2 ulp. Outside the range where the
// result is a normal float32 it defers to math.Exp, which also handles NaN
// and infinities.
func expf(x float32) float32 {
	if !(x > -87 && x < 88) {
		return float32(math.Exp(float64(x)))
	}
	t := x * log2e
	var k int32
	if t >= 0 {
		k = int32(t + 0.5)
	} else {
		k = int32(t - 0.5)
	}
	kf := float32(k)
	r := x - kf*ln2Hi - kf*ln2Lo
	// Taylor series of e^r for |r| <= ln2/2; the degree-7 term keeps the
	// truncation error below float32 resolution.
	p := 1 + r*(1+r*(0.5+r*(1.0/6+r*(1.0/24+r*(1.0/120+r*(1.0/720+r*(1.0/5040)))))))
	return p * math.Float32frombits(uint32(k+127)<<23)
}

// GELU with the tanh approximation used by GPT-2:
//
//	gelu(x) = 0.5 x (1 + tanh(u)),  u = sqrt(2/pi) (x + 0.044715 x^3)
//
// Since 0.5 (1 + tanh(u)) = sigmoid(2u), it is computed as x * sigmoid(2u),
// which needs one exp and no cancellation.
const (
	geluScale = 0.7978845608028654 // sqrt(2/pi)
	geluCubic = 0.044715
)

func geluf(x float32) float32 {
	u := geluScale * (x + geluCubic*x*x*x)
	return x / (1 + expf(-2*u))
}

// geluGradf is d gelu(x) / dx.
func geluGradf(x float32) float32 {
	u := geluScale * (x + geluCubic*x*x*x)
	s := 1 / (1 + expf(-2*u))
	du := geluScale * (1 + 3*geluCubic*x*x)
	return s + x*s*(1-s)*2*du
}
