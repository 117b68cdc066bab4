// Package vec holds the float32 loops that Go does not vectorise and the
// model cannot leave to BLAS: exp for the softmaxes and GELU, row maxima,
// the AdamW update, and matrix products with a handful of rows (decode
// steps), for which
// BLAS's packing costs more than the product. On amd64 with AVX2 and FMA
// they run eight lanes at a time in assembly; elsewhere portable Go loops
// (or, for the products, the caller's BLAS) do the same work.
//
// It is a separate package only because Go forbids Go assembly in a
// package that uses cgo, and package model calls OpenBLAS through cgo.
package vec

import "math"

// exp2Frac[i] holds the bits of 2^(i/64): Exp reduces x to
// 2^(k/64) * e^r with |r| <= ln2/128, small enough for a cubic.
var exp2Frac [64]uint32

func init() {
	for i := range exp2Frac {
		exp2Frac[i] = math.Float32bits(float32(math.Exp2(float64(i) / 64)))
	}
}

// Exp is exp(x) with a relative error below 2e-7 for x in [-87, 88]; x is
// clamped to that range, so the result is always a normal float32 (or NaN
// for NaN). It is small enough to be inlined, so a loop over a slice keeps
// several independent evaluations in flight; math.Exp is several times
// slower.
func Exp(x float32) float32 {
	x = min(max(x, -87), 88)
	t := float64(x) * (64 / math.Ln2)
	kf := t + 0x1.8p52 - 0x1.8p52 // round to nearest integer
	r := float64(x) - kf*(math.Ln2/64)
	p := 1 + r*(1+r*(0.5+r*(1.0/6)))
	k := int64(kf)
	return float32(p) * math.Float32frombits(exp2Frac[k&63]+uint32(k>>6)<<23)
}

// ExpShift writes dst[i] = exp(src[i] - shift) and returns their sum;
// dst may alias src and must be at least as long.
func ExpShift(dst, src []float32, shift float32) float32 {
	return ExpShiftScale(dst, src, shift, 1)
}

// ExpShiftScale writes dst[i] = scale*exp(src[i] - shift) and returns the
// sum of the unscaled terms; dst may alias src and must be at least as
// long.
func ExpShiftScale(dst, src []float32, shift, scale float32) float32 {
	dst = dst[:len(src)]
	n8 := len(src) &^ 7
	if !useAVX2 || n8 == 0 {
		return expShiftScaleGo(dst, src, shift, scale)
	}
	s := expShiftAsm(&dst[0], &src[0], n8, shift, scale)
	return s + expShiftScaleGo(dst[n8:], src[n8:], shift, scale)
}

// SumExpShift returns the sum of exp(src[i] - shift).
func SumExpShift(src []float32, shift float32) float32 {
	n8 := len(src) &^ 7
	if !useAVX2 || n8 == 0 {
		return sumExpShiftGo(src, shift)
	}
	return expShiftAsm(nil, &src[0], n8, shift, 1) + sumExpShiftGo(src[n8:], shift)
}

// Max returns the largest element of a non-empty slice.
func Max(x []float32) float32 {
	n8 := len(x) &^ 7
	if !useAVX2 || n8 == 0 {
		return maxGo(x)
	}
	m := maxAsm(&x[0], n8)
	if n8 < len(x) {
		m = max(m, maxGo(x[n8:]))
	}
	return m
}

// expShiftScaleGo is the portable ExpShiftScale. Four partial sums keep
// the additions from serialising the loop.
func expShiftScaleGo(dst, src []float32, shift, scale float32) float32 {
	dst = dst[:len(src)]
	var s0, s1, s2, s3 float32
	i := 0
	for ; i+4 <= len(src); i += 4 {
		e0, e1, e2, e3 := Exp(src[i]-shift), Exp(src[i+1]-shift), Exp(src[i+2]-shift), Exp(src[i+3]-shift)
		dst[i], dst[i+1], dst[i+2], dst[i+3] = scale*e0, scale*e1, scale*e2, scale*e3
		s0, s1, s2, s3 = s0+e0, s1+e1, s2+e2, s3+e3
	}
	for ; i < len(src); i++ {
		e := Exp(src[i] - shift)
		dst[i] = scale * e
		s0 += e
	}
	return (s0 + s1) + (s2 + s3)
}

func sumExpShiftGo(src []float32, shift float32) float32 {
	var s0, s1, s2, s3 float32
	i := 0
	for ; i+4 <= len(src); i += 4 {
		s0 += Exp(src[i] - shift)
		s1 += Exp(src[i+1] - shift)
		s2 += Exp(src[i+2] - shift)
		s3 += Exp(src[i+3] - shift)
	}
	for ; i < len(src); i++ {
		s0 += Exp(src[i] - shift)
	}
	return (s0 + s1) + (s2 + s3)
}

func maxGo(x []float32) float32 {
	m0, m1 := x[0], x[0]
	i := 1
	for ; i+2 <= len(x); i += 2 {
		m0 = max(m0, x[i])
		m1 = max(m1, x[i+1])
	}
	for ; i < len(x); i++ {
		m0 = max(m0, x[i])
	}
	return max(m0, m1)
}
