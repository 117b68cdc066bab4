package model

import (
	"fmt"

	"github.com/tandem-ai/tandem/model/internal/vec"
)

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
	if !transA && alpha == 1 && p.smallM(transB, M, N, K, A, lda, B, ldb, beta, C, ldc) {
		return
	}
	if M == 1 {
		// One row (decoding a single sequence): a matrix-vector product
		// streams B once, where SGEMM would first copy it into packed
		// panels, more than doubling the memory traffic.
		p.sgemv(transA, transB, N, K, alpha, A, lda, B, ldb, beta, C)
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

// useSmallM enables the small-M kernels (a switch for benchmarks).
var useSmallM = true

// smallM runs a product with few rows (a decode step) through package
// vec's kernels, split by columns over the pool, and reports false,
// having done nothing, when they cannot take it. They stream B once
// instead of packing it, and they are batch-invariant: with them a decode
// step gives each sequence the same bits whichever other sequences share
// the step, so a seeded sample does not depend on the batch it ran in.
func (p *workPool) smallM(transB bool, M, N, K int, A []float32, lda int, B []float32, ldb int, beta float32, C []float32, ldc int) bool {
	if !useSmallM || !vec.GemmAvailable() || M > vec.SmallM {
		return false
	}
	if (transB && K%8 != 0) || (!transB && (N%16 != 0 || K%4 != 0)) {
		return false
	}
	if beta != 1 {
		scaleMatrix(C, M, N, ldc, beta)
	}
	if p.size == 1 || M*N*K < sgemmSplitBelow/4 {
		smallMColumns(transB, M, K, A, lda, B, ldb, C, ldc, 0, N)
		return true
	}
	grain := ((N+p.size-1)/p.size + 15) / 16 * 16
	p.parallelFor(N, grain, func(_, lo, hi int) { smallMColumns(transB, M, K, A, lda, B, ldb, C, ldc, lo, hi) })
	return true
}

func smallMColumns(transB bool, M, K int, A []float32, lda int, B []float32, ldb int, C []float32, ldc, lo, hi int) {
	if transB {
		vec.GemmNT(M, hi-lo, K, A, lda, B[lo*ldb:], ldb, C[lo:], ldc)
	} else {
		vec.GemmNN(M, hi-lo, K, A, lda, B[lo:], ldb, C[lo:], ldc)
	}
}

// sgemv computes the single row c[N] = alpha * a[K] @ op(B) + beta*c, with
// the elements of a spaced lda apart when transA (a column of A).
func (p *workPool) sgemv(transA, transB bool, N, K int, alpha float32, a []float32, lda int,
	B []float32, ldb int, beta float32, c []float32) {
	if blasSelfThreaded || p.size == 1 || N*K < sgemmSplitBelow {
		sgemmOne(transA, transB, 1, N, K, alpha, a, lda, B, ldb, beta, c, N)
		return
	}
	grain := ((N+p.size-1)/p.size + 15) / 16 * 16
	p.parallelFor(N, grain, func(_, lo, hi int) {
		bOff := lo
		if transB {
			bOff = lo * ldb
		}
		sgemmOne(transA, transB, 1, hi-lo, K, alpha, a, lda, B[bOff:], ldb, beta, c[lo:], hi-lo)
	})
}

// sgemmOne is a single-threaded product. A one-row product goes to SGEMV,
// which streams B once instead of first packing it into panels.
func sgemmOne(transA, transB bool, M, N, K int, alpha float32, A []float32, lda int,
	B []float32, ldb int, beta float32, C []float32, ldc int) {
	if M != 1 {
		sgemmKernel(transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc)
		return
	}
	incx := 1
	if transA {
		incx = lda
	}
	if transB { // B is N×K: c = B a
		sgemvKernel(false, N, K, alpha, B, ldb, A, incx, beta, C, 1)
	} else { // B is K×N: c = Bᵀ a
		sgemvKernel(true, K, N, alpha, B, ldb, A, incx, beta, C, 1)
	}
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

// DecodeBatchInvariant reports whether this machine's CPU decode steps of
// up to 16 rows give every row the same bits whatever rows share the step
// (the small-M kernels need AVX2 and FMA).
func DecodeBatchInvariant() bool { return useSmallM && vec.GemmAvailable() }

// SmallBatchInvariant is DecodeBatchInvariant for m's own products: the
// small-M kernels take them when the width is a multiple of 16 (then every
// linear layer's and the head's sizes meet smallM's conditions).
func (m *Model) SmallBatchInvariant() bool {
	_, cpu := m.Kernels.(*cpuKernels)
	return cpu && DecodeBatchInvariant() && m.Config.NEmbd%16 == 0
}
