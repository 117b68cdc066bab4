//go:build !cgo || noblas

package model

import (
	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/gonum"
)

// BLASName names the matrix-product library this build uses.
const BLASName = "gonum"

// blasSelfThreaded: gonum's Sgemm already splits large products over
// GOMAXPROCS goroutines, so the pool must not split them again.
const blasSelfThreaded = true

var gonumBLAS gonum.Implementation

// sgemmKernel is the portable fallback, used when cgo or OpenBLAS is
// unavailable. It is about ten times slower than OpenBLAS on this kind of
// machine: it exists so the package builds and runs everywhere.
func sgemmKernel(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int,
	b []float32, ldb int, beta float32, c []float32, ldc int) {
	ta, tb := blas.NoTrans, blas.NoTrans
	if transA {
		ta = blas.Trans
	}
	if transB {
		tb = blas.Trans
	}
	gonumBLAS.Sgemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
}

// sgemvKernel is the portable SGEMV: y = alpha*op(A)*x + beta*y.
func sgemvKernel(trans bool, m, n int, alpha float32, a []float32, lda int, x []float32, incx int,
	beta float32, y []float32, incy int) {
	t := blas.NoTrans
	if trans {
		t = blas.Trans
	}
	gonumBLAS.Sgemv(t, m, n, alpha, a, lda, x, incx, beta, y, incy)
}
