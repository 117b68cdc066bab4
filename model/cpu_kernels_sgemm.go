package model

import "fmt"

// Sgemm computes C = alpha * op(A) @ op(B) + beta * C on row-major float32
// matrices, where op(X) is X or Xᵀ. op(A) is M×K, op(B) is K×N, C is M×N;
// lda, ldb and ldc are row strides, so sub-matrices and interleaved heads
// are used in place without copying. Large products are spread over the
// package's worker pool. It panics on inconsistent dimensions, like the
// BLAS it wraps: these are programming errors, not input.
func Sgemm(transA, transB bool, M, N, K int, alpha float32, A []float32, lda int,
	B []float32, ldb int, beta float32, C []float32, ldc int) {
	if err := checkSgemm(transA, transB, M, N, K, len(A), lda, len(B), ldb, len(C), ldc); err != nil {
		panic(err)
	}
	sharedPool().sgemm(transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc)
}

// checkSgemm validates the strides and slice lengths of a row-major SGEMM.
func checkSgemm(transA, transB bool, M, N, K, lenA, lda, lenB, ldb, lenC, ldc int) error {
	if M < 0 || N < 0 || K < 0 {
		return fmt.Errorf("sgemm: negative dimension M=%d N=%d K=%d", M, N, K)
	}
	need := func(name string, rows, cols, ld, have int) error {
		if ld < max(1, cols) {
			return fmt.Errorf("sgemm: ld%s = %d < %d", name, ld, max(1, cols))
		}
		if rows > 0 && cols > 0 && have < (rows-1)*ld+cols {
			return fmt.Errorf("sgemm: len(%s) = %d < %d", name, have, (rows-1)*ld+cols)
		}
		return nil
	}
	ra, ca := M, K
	if transA {
		ra, ca = K, M
	}
	rb, cb := K, N
	if transB {
		rb, cb = N, K
	}
	if err := need("a", ra, ca, lda, lenA); err != nil {
		return err
	}
	if err := need("b", rb, cb, ldb, lenB); err != nil {
		return err
	}
	return need("c", M, N, ldc, lenC)
}

// sgemmSplitBelow is the M*N*K under which a product runs on one core:
// handing work to another goroutine costs a few microseconds, and OpenBLAS
// itself stays single-threaded below about this size.
const sgemmSplitBelow = 1 << 21

// sgemm runs one product, split over the pool by rows of C (or columns,
// when C is wide and short) for large problems.
func (p *workPool) sgemm(transA, transB bool, M, N, K int, alpha float32, A []float32, lda int,
	B []float32, ldb int, beta float32, C []float32, ldc int) {
	if M == 0 || N == 0 {
		return
	}
	if K == 0 {
		scaleMatrix(C, M, N, ldc, beta)
		return
	}
	if blasSelfThreaded || p.size == 1 || M*N*K < sgemmSplitBelow {
		sgemmKernel(transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc)
		return
	}
	const align = 16 // keep blocks a multiple of the micro-kernel's tile
	if M >= N {
		grain := ((M+p.size-1)/p.size + align - 1) / align * align
		p.parallelFor(M, grain, func(_, lo, hi int) {
			aOff := lo * lda
			if transA {
				aOff = lo
			}
			sgemmKernel(transA, transB, hi-lo, N, K, alpha, A[aOff:], lda, B, ldb, beta, C[lo*ldc:], ldc)
		})
		return
	}
	grain := ((N+p.size-1)/p.size + align - 1) / align * align
	p.parallelFor(N, grain, func(_, lo, hi int) {
		bOff := lo
		if transB {
			bOff = lo * ldb
		}
		sgemmKernel(transA, transB, M, hi-lo, K, alpha, A, lda, B[bOff:], ldb, beta, C[lo:], ldc)
	})
}

// scaleMatrix does C *= beta, the whole of an SGEMM with K = 0.
func scaleMatrix(C []float32, M, N, ldc int, beta float32) {
	for i := 0; i < M; i++ {
		row := C[i*ldc : i*ldc+N]
		if beta == 0 {
			clear(row)
			continue
		}
		for j := range row {
			row[j] *= beta
		}
	}
}
