//go:build cgo && !noblas

package model

/*
#cgo LDFLAGS: -lopenblas
#include <cblas.h>

// tandem_sgemm keeps the enum and blasint types on the C side, so the Go
// code passes plain ints whichever integer width OpenBLAS was built with.
static void tandem_sgemm(int ta, int tb, int m, int n, int k, float alpha,
		const float *a, int lda, const float *b, int ldb, float beta, float *c, int ldc) {
	cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
		m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

static void tandem_sgemv(int trans, int m, int n, float alpha, const float *a, int lda,
		const float *x, int incx, float beta, float *y, int incy) {
	cblas_sgemv(CblasRowMajor, trans ? CblasTrans : CblasNoTrans, m, n, alpha, a, lda, x, incx, beta, y, incy);
}
*/
import "C"

// BLASName names the matrix-product library this build uses.
const BLASName = "openblas"

// blasSelfThreaded reports whether sgemmKernel spreads one call over
// several cores by itself. OpenBLAS is pinned to one thread (below) and the
// package's worker pool splits large products instead: the pool also runs
// attention heads and element-wise kernels, and two thread teams on two
// cores would oversubscribe them.
const blasSelfThreaded = false

func init() { C.openblas_set_num_threads(1) }

// sgemmKernel is one single-threaded row-major SGEMM. Arguments were
// checked by the caller; the slices start at the first element used.
func sgemmKernel(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int,
	b []float32, ldb int, beta float32, c []float32, ldc int) {
	ta, tb := C.int(0), C.int(0)
	if transA {
		ta = 1
	}
	if transB {
		tb = 1
	}
	C.tandem_sgemm(ta, tb, C.int(m), C.int(n), C.int(k), C.float(alpha),
		(*C.float)(&a[0]), C.int(lda), (*C.float)(&b[0]), C.int(ldb), C.float(beta),
		(*C.float)(&c[0]), C.int(ldc))
}

// sgemvKernel is one single-threaded row-major SGEMV: y = alpha*op(A)*x +
// beta*y with A m×n (op(A) = Aᵀ when trans).
func sgemvKernel(trans bool, m, n int, alpha float32, a []float32, lda int, x []float32, incx int,
	beta float32, y []float32, incy int) {
	t := C.int(0)
	if trans {
		t = 1
	}
	C.tandem_sgemv(t, C.int(m), C.int(n), C.float(alpha), (*C.float)(&a[0]), C.int(lda),
		(*C.float)(&x[0]), C.int(incx), C.float(beta), (*C.float)(&y[0]), C.int(incy))
}
