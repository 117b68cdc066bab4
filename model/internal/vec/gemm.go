package vec

import "fmt"

// SmallM is the largest number of rows GemmNN and GemmNT are meant for;
// beyond it a packing SGEMM amortises its copies and wins.
const SmallM = 16

// GemmAvailable reports whether GemmNN and GemmNT run on this machine.
//
// Both are batch-invariant: every output element is summed in an order
// that depends only on k, never on how many rows are computed together,
// so a decode step gives each sequence bit-identical results whichever
// other sequences share it. (BLAS makes no such promise: OpenBLAS picks
// different kernels for different row counts.)
func GemmAvailable() bool { return useAVX2 }

// GemmNN accumulates y[m×n] += x[m×k] @ w[k×n] (row-major, strides in
// elements) without packing w. It walks w in panels of four rows, each
// streamed sequentially, and applies a panel to four rows of y at a time
// while y stays in cache. It returns false, doing nothing, when it cannot
// run the product (no AVX2, n not a multiple of 16, k not a multiple of
// 4); the caller then uses BLAS.
func GemmNN(m, n, k int, x []float32, ldx int, w []float32, ldw int, y []float32, ldy int) bool {
	if !useAVX2 || m <= 0 || n <= 0 || k <= 0 || n%16 != 0 || k%4 != 0 {
		return false
	}
	mustFit("x", len(x), m, k, ldx)
	mustFit("w", len(w), k, n, ldw)
	mustFit("y", len(y), m, n, ldy)
	for k0 := 0; k0 < k; k0 += 4 {
		r := 0
		for ; r+4 <= m; r += 4 {
			axpyPanel4(&x[r*ldx+k0], ldx, &w[k0*ldw], ldw, &y[r*ldy], ldy, n/16)
		}
		for ; r < m; r++ {
			axpyPanel1(&x[r*ldx+k0], &w[k0*ldw], ldw, &y[r*ldy], n/16)
		}
	}
	return true
}

// GemmNT accumulates y[m×n] += x[m×k] @ w[n×k]ᵀ: each output is a dot
// product of a row of x and a row of w (the language-model head, whose
// weight is the token embedding), w streamed once per four rows of x. It
// returns false when it cannot run (no AVX2, k not a multiple of 8).
func GemmNT(m, n, k int, x []float32, ldx int, w []float32, ldw int, y []float32, ldy int) bool {
	if !useAVX2 || m <= 0 || n <= 0 || k <= 0 || k%8 != 0 {
		return false
	}
	mustFit("x", len(x), m, k, ldx)
	mustFit("w", len(w), n, k, ldw)
	mustFit("y", len(y), m, n, ldy)
	r := 0
	for ; r+4 <= m; r += 4 {
		dotRows4(k, &x[r*ldx], ldx, &w[0], ldw, &y[r*ldy], ldy, n)
	}
	for ; r < m; r++ {
		dotRows1(k, &x[r*ldx], &w[0], ldw, &y[r*ldy], n)
	}
	return true
}

// mustFit guards the assembly against reading or writing out of bounds:
// a rows×cols matrix with row stride ld must lie within n elements.
func mustFit(name string, n, rows, cols, ld int) {
	if ld < cols || n < (rows-1)*ld+cols {
		panic(fmt.Sprintf("vec: %s holds %d elements, a %d×%d matrix with stride %d needs %d", name, n, rows, cols, ld, (rows-1)*ld+cols))
	}
}
