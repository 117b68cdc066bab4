package model

import "github.com/tandem-ai/tandem/model/internal/vec"

// Scalar helpers for the element-wise kernels. exp comes from package vec,
// whose version is inlinable and several times faster than math.Exp.

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
	return x / (1 + vec.Exp(-2*u))
}

// geluGradf is d gelu(x) / dx.
func geluGradf(x float32) float32 {
	u := geluScale * (x + geluCubic*x*x*x)
	s := 1 / (1 + vec.Exp(-2*u))
	du := geluScale * (1 + 3*geluCubic*x*x)
	return s + x*s*(1-s)*2*du
}
