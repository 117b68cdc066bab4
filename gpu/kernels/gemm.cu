// Matrix products C[M,N] = alpha * op(A)[M,K] @ op(B)[K,N] (+ beta*C)
// (+ bias[N]), row-major with leading dimensions, in two flavours:
//
//   gemm_tf32_*  tensor cores through wmma (TF32 inputs, FP32 accumulation):
//                ~10 mantissa bits per product, the fast path;
//   gemm_f32_*   exact FP32 on the CUDA cores, the reference path.
//
// The suffix names the operands' layouts: n = as stored (A is [M,K], B is
// [K,N]), t = transposed (A stored [K,M], B stored [N,K]). The transformer
// needs nn (forward, dinp of the head), nt (dinp, the head's forward) and tn
// (weight gradients).
//
// Both use 128x128 output tiles, 16-deep K steps and 256 threads, with the
// next K step's tile loaded from global memory into registers while the
// current one is multiplied from shared memory. Loads are bounds-checked
// scalar loads, so any shape, leading dimension and alignment works (the
// vocabulary of 50257 makes the logits' rows odd-sized).
//
// Split K: with gridDim.z > 1, block z covers K range [z*k_chunk,
// (z+1)*k_chunk) and writes its raw partial product to
// partial[z*M*N + m*N + n]; gemm_splitk_reduce then sums the partials in a
// fixed order and applies alpha, beta and bias. Skinny products (decoding a
// few rows, weight gradients of small matrices) get enough blocks this way
// and stay deterministic.
#include <mma.h>

#include "common.cuh"

using namespace nvcuda;

#define GEMM_BM 128
#define GEMM_BN 128
#define GEMM_BK 16
#define GEMM_THREADS 256
// Shared-memory tiles are padded by 4 floats per row: it spreads the rows
// over the banks and keeps every 16x16 wmma fragment 32-byte aligned.
#define GEMM_PAD 4
// Floats per operand tile and stage: the larger of the two layouts
// (128 x (16+4) and 16 x (128+4)).
#define GEMM_TILE_FLOATS (GEMM_BM * (GEMM_BK + GEMM_PAD))

template <bool Cond, typename T, typename F> struct pick { typedef T type; };
template <typename T, typename F> struct pick<false, T, F> { typedef F type; };

// load_a fills r with this thread's 8 elements of the A tile at (m0, k0):
// element (m, k) of op(A). k_end bounds K (the split's end).
template <bool TA>
__device__ __forceinline__ void load_a(float (&r)[8], const float *A, int lda, int M, int k_end, int m0, int k0) {
#pragma unroll
	for (int i = 0; i < 8; i++) {
		const int idx = threadIdx.x + i * GEMM_THREADS; // 0..2047
		// Consecutive threads read consecutive addresses in either layout.
		const int m = TA ? idx % GEMM_BM : idx / GEMM_BK;
		const int k = TA ? idx / GEMM_BM : idx % GEMM_BK;
		const int gm = m0 + m, gk = k0 + k;
		float v = 0.f;
		if (gm < M && gk < k_end) v = TA ? A[(i64)gk * lda + gm] : A[(i64)gm * lda + gk];
		r[i] = v;
	}
}

// load_b fills r with this thread's 8 elements of the B tile at (k0, n0).
template <bool TB>
__device__ __forceinline__ void load_b(float (&r)[8], const float *B, int ldb, int N, int k_end, int k0, int n0) {
#pragma unroll
	for (int i = 0; i < 8; i++) {
		const int idx = threadIdx.x + i * GEMM_THREADS;
		const int n = TB ? idx / GEMM_BK : idx % GEMM_BN;
		const int k = TB ? idx % GEMM_BK : idx / GEMM_BN;
		const int gn = n0 + n, gk = k0 + k;
		float v = 0.f;
		if (gn < N && gk < k_end) v = TB ? B[(i64)gn * ldb + gk] : B[(i64)gk * ldb + gn];
		r[i] = v;
	}
}

// The epilogue of one output element.
__device__ __forceinline__ void gemm_store(float *C, float *partial, const float *bias, int M, int N, int ldc,
                                           float alpha, float beta, int gm, int gn, float acc) {
	if (gm >= M || gn >= N) return;
	if (partial != nullptr) {
		partial[(i64)blockIdx.z * M * N + (i64)gm * N + gn] = acc;
		return;
	}
	float v = alpha * acc;
	// beta == 0 must not read C: it may hold garbage, and 0*NaN is NaN.
	if (beta != 0.f) v += beta * C[(i64)gm * ldc + gn];
	if (bias != nullptr) v += bias[gn];
	C[(i64)gm * ldc + gn] = v;
}

// The main loop shared by both flavours: the first K step is loaded and
// stored, then each step loads the next tile into registers, multiplies the
// current one from shared memory and stores the next one into the other
// stage. A stage is rewritten only after the barrier that ends the step
// which last read it. Policy supplies the shared layouts (store_a,
// store_b, stage_floats), the multiply (compute) and the epilogue.
template <bool TA, bool TB, class Policy>
__device__ __forceinline__ void gemm_mainloop(Policy &pol, float *smem, const float *A, const float *B, int M, int N,
                                              int lda, int ldb, int m0, int n0, int k_begin, int k_end) {
	float ra[8], rb[8];
	if (k_begin < k_end) {
		load_a<TA>(ra, A, lda, M, k_end, m0, k_begin);
		load_b<TB>(rb, B, ldb, N, k_end, k_begin, n0);
		pol.store_a(smem, ra);
		pol.store_b(smem + Policy::STAGE / 2, rb);
	}
	__syncthreads();
	int stage = 0;
	for (int kt = k_begin; kt < k_end; kt += GEMM_BK) {
		const bool more = kt + GEMM_BK < k_end;
		if (more) {
			load_a<TA>(ra, A, lda, M, k_end, m0, kt + GEMM_BK);
			load_b<TB>(rb, B, ldb, N, k_end, kt + GEMM_BK, n0);
		}
		const float *As = smem + stage * Policy::STAGE;
		pol.compute(As, As + Policy::STAGE / 2);
		if (more) {
			float *next = smem + (stage ^ 1) * Policy::STAGE;
			pol.store_a(next, ra);
			pol.store_b(next + Policy::STAGE / 2, rb);
		}
		__syncthreads();
		stage ^= 1;
	}
}

// ---------------------------------------------------------------- TF32 ---

// Shared layouts follow the global ones, so the stores of a loaded tile
// are contiguous: A as [BM][BK+PAD] (row-major fragments) or, transposed,
// [BK][BM+PAD] (column-major fragments); B as [BK][BN+PAD] or [BN][BK+PAD].
// 8 warps as 2 (M) x 4 (N); each computes 64 x 32 = 4 x 2 fragments.
template <bool TA, bool TB> struct tf32_policy {
	typedef typename pick<TA, wmma::col_major, wmma::row_major>::type ALayout;
	typedef typename pick<TB, wmma::col_major, wmma::row_major>::type BLayout;
	// Per stage: an A and a B tile of the larger layout (128 x 20 floats).
	static const int STAGE = 2 * GEMM_TILE_FLOATS;
	static const int LDA = TA ? GEMM_BM + GEMM_PAD : GEMM_BK + GEMM_PAD;
	static const int LDB = TB ? GEMM_BK + GEMM_PAD : GEMM_BN + GEMM_PAD;

	wmma::fragment<wmma::accumulator, 16, 16, 8, float> acc[4][2];
	int wm0, wn0;
	// A warp whose rows or columns all fall outside C skips the arithmetic
	// (decoding multiplies a few rows by a 128-row tile).
	bool active;

	__device__ __forceinline__ void store_a(float *As, const float (&r)[8]) {
#pragma unroll
		for (int i = 0; i < 8; i++) {
			const int idx = threadIdx.x + i * GEMM_THREADS;
			if (TA) As[(idx / GEMM_BM) * LDA + idx % GEMM_BM] = r[i];
			else As[(idx / GEMM_BK) * LDA + idx % GEMM_BK] = r[i];
		}
	}

	__device__ __forceinline__ void store_b(float *Bs, const float (&r)[8]) {
#pragma unroll
		for (int i = 0; i < 8; i++) {
			const int idx = threadIdx.x + i * GEMM_THREADS;
			if (TB) Bs[(idx / GEMM_BK) * LDB + idx % GEMM_BK] = r[i];
			else Bs[(idx / GEMM_BN) * LDB + idx % GEMM_BN] = r[i];
		}
	}

	__device__ __forceinline__ void compute(const float *As, const float *Bs) {
		if (!active) return;
#pragma unroll
		for (int kk = 0; kk < GEMM_BK; kk += 8) {
			wmma::fragment<wmma::matrix_a, 16, 16, 8, wmma::precision::tf32, ALayout> af[4];
			wmma::fragment<wmma::matrix_b, 16, 16, 8, wmma::precision::tf32, BLayout> bf[2];
#pragma unroll
			for (int i = 0; i < 4; i++) {
				const int m = wm0 + i * 16;
				wmma::load_matrix_sync(af[i], TA ? As + kk * LDA + m : As + m * LDA + kk, LDA);
#pragma unroll
				for (int t = 0; t < af[i].num_elements; t++) af[i].x[t] = wmma::__float_to_tf32(af[i].x[t]);
			}
#pragma unroll
			for (int j = 0; j < 2; j++) {
				const int n = wn0 + j * 16;
				wmma::load_matrix_sync(bf[j], TB ? Bs + n * LDB + kk : Bs + kk * LDB + n, LDB);
#pragma unroll
				for (int t = 0; t < bf[j].num_elements; t++) bf[j].x[t] = wmma::__float_to_tf32(bf[j].x[t]);
			}
#pragma unroll
			for (int i = 0; i < 4; i++)
#pragma unroll
				for (int j = 0; j < 2; j++) wmma::mma_sync(acc[i][j], af[i], bf[j], acc[i][j]);
		}
	}
};

template <bool TA, bool TB>
__device__ __forceinline__ void gemm_tf32(float *C, const float *A, const float *B, const float *bias, float *partial,
                                          int M, int N, int K, int lda, int ldb, int ldc, float alpha, float beta,
                                          int k_chunk) {
	typedef tf32_policy<TA, TB> Policy;
	__shared__ __align__(128) float smem[2 * Policy::STAGE]; // 40 KiB
	const int m0 = blockIdx.y * GEMM_BM, n0 = blockIdx.x * GEMM_BN;
	const int k_begin = blockIdx.z * k_chunk;
	const int k_end = min(K, k_begin + k_chunk);
	const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
	Policy pol;
	pol.wm0 = (warp >> 2) * 64;
	pol.wn0 = (warp & 3) * 32;
	pol.active = m0 + pol.wm0 < M && n0 + pol.wn0 < N;
#pragma unroll
	for (int i = 0; i < 4; i++)
#pragma unroll
		for (int j = 0; j < 2; j++) wmma::fill_fragment(pol.acc[i][j], 0.f);
	gemm_mainloop<TA, TB>(pol, smem, A, B, M, N, lda, ldb, m0, n0, k_begin, k_end);
	// Epilogue: each warp stages one 16x16 fragment at a time in its own
	// 256 floats of shared memory (free now: the loop ended on a barrier)
	// and writes it out element by element with bounds checks.
	if (!pol.active) return;
	float *st = smem + warp * 256;
#pragma unroll
	for (int i = 0; i < 4; i++)
#pragma unroll
		for (int j = 0; j < 2; j++) {
			wmma::store_matrix_sync(st, pol.acc[i][j], 16, wmma::mem_row_major);
			__syncwarp();
			for (int e = lane; e < 256; e += 32) {
				const int gm = m0 + pol.wm0 + i * 16 + e / 16, gn = n0 + pol.wn0 + j * 16 + e % 16;
				gemm_store(C, partial, bias, M, N, ldc, alpha, beta, gm, gn, st[e]);
			}
			__syncwarp();
		}
}

// ---------------------------------------------------------------- FP32 ---

// c[0..8) += a * (b0, b1): one row of a thread's 8x8 outer product.
__device__ __forceinline__ void fma_row(float (&c)[8], float a, const float4 &b0, const float4 &b1) {
	c[0] = fmaf(a, b0.x, c[0]);
	c[1] = fmaf(a, b0.y, c[1]);
	c[2] = fmaf(a, b0.z, c[2]);
	c[3] = fmaf(a, b0.w, c[3]);
	c[4] = fmaf(a, b1.x, c[4]);
	c[5] = fmaf(a, b1.y, c[5]);
	c[6] = fmaf(a, b1.z, c[6]);
	c[7] = fmaf(a, b1.w, c[7]);
}

// Both tiles stored k-major, [BK][BM+PAD] and [BK][BN+PAD], so the inner
// loop reads float4s along M and N. Thread (tx, ty) owns rows ty*4+{0..3}
// and 64+ty*4+{0..3}, columns tx*4+{0..3} and 64+tx*4+{0..3}: within a warp
// the A reads are broadcasts and the B reads hit 32 different banks.
template <bool TA, bool TB> struct f32_policy {
	static const int LD = GEMM_BM + GEMM_PAD; // GEMM_BM == GEMM_BN
	static const int STAGE = 2 * GEMM_BK * LD;
	float acc[8][8];
	int tx, ty;

	__device__ __forceinline__ void store_a(float *As, const float (&r)[8]) {
#pragma unroll
		for (int i = 0; i < 8; i++) {
			const int idx = threadIdx.x + i * GEMM_THREADS;
			const int m = TA ? idx % GEMM_BM : idx / GEMM_BK;
			const int k = TA ? idx / GEMM_BM : idx % GEMM_BK;
			As[k * LD + m] = r[i];
		}
	}

	__device__ __forceinline__ void store_b(float *Bs, const float (&r)[8]) {
#pragma unroll
		for (int i = 0; i < 8; i++) {
			const int idx = threadIdx.x + i * GEMM_THREADS;
			const int n = TB ? idx / GEMM_BK : idx % GEMM_BN;
			const int k = TB ? idx % GEMM_BK : idx / GEMM_BN;
			Bs[k * LD + n] = r[i];
		}
	}

	__device__ __forceinline__ void compute(const float *As, const float *Bs) {
		// Not unrolled: nvcc 11.8 compiled this loop, fully unrolled or by
		// 2, to different PTX from run to run (seen here: 3-5 variants in 8
		// runs, and 1 in 17), and the committed PTX must be reproducible.
		// The 64 FMAs per iteration leave the loop overhead small.
#pragma unroll 1
		for (int k = 0; k < GEMM_BK; k++) {
			const float4 a0 = *reinterpret_cast<const float4 *>(As + k * LD + ty * 4);
			const float4 a1 = *reinterpret_cast<const float4 *>(As + k * LD + 64 + ty * 4);
			const float4 b0 = *reinterpret_cast<const float4 *>(Bs + k * LD + tx * 4);
			const float4 b1 = *reinterpret_cast<const float4 *>(Bs + k * LD + 64 + tx * 4);
			fma_row(acc[0], a0.x, b0, b1);
			fma_row(acc[1], a0.y, b0, b1);
			fma_row(acc[2], a0.z, b0, b1);
			fma_row(acc[3], a0.w, b0, b1);
			fma_row(acc[4], a1.x, b0, b1);
			fma_row(acc[5], a1.y, b0, b1);
			fma_row(acc[6], a1.z, b0, b1);
			fma_row(acc[7], a1.w, b0, b1);
		}
	}
};

template <bool TA, bool TB>
__device__ __forceinline__ void gemm_f32(float *C, const float *A, const float *B, const float *bias, float *partial,
                                         int M, int N, int K, int lda, int ldb, int ldc, float alpha, float beta,
                                         int k_chunk) {
	typedef f32_policy<TA, TB> Policy;
	__shared__ __align__(16) float smem[2 * Policy::STAGE]; // 33 KiB
	const int m0 = blockIdx.y * GEMM_BM, n0 = blockIdx.x * GEMM_BN;
	const int k_begin = blockIdx.z * k_chunk;
	const int k_end = min(K, k_begin + k_chunk);
	Policy pol;
	pol.tx = threadIdx.x & 15;
	pol.ty = threadIdx.x >> 4;
#pragma unroll
	for (int i = 0; i < 8; i++)
#pragma unroll
		for (int j = 0; j < 8; j++) pol.acc[i][j] = 0.f;
	gemm_mainloop<TA, TB>(pol, smem, A, B, M, N, lda, ldb, m0, n0, k_begin, k_end);
#pragma unroll
	for (int i = 0; i < 8; i++) {
		const int gm = m0 + (i < 4 ? pol.ty * 4 + i : 64 + pol.ty * 4 + (i - 4));
#pragma unroll
		for (int j = 0; j < 8; j++) {
			const int gn = n0 + (j < 4 ? pol.tx * 4 + j : 64 + pol.tx * 4 + (j - 4));
			gemm_store(C, partial, bias, M, N, ldc, alpha, beta, gm, gn, pol.acc[i][j]);
		}
	}
}

#define GEMM_ENTRY(name, impl, TA, TB)                                                                               \
	extern "C" __global__ void __launch_bounds__(GEMM_THREADS)                                                     \
	    name(float *C, const float *A, const float *B, const float *bias, float *partial, int M, int N, int K,     \
	         int lda, int ldb, int ldc, float alpha, float beta, int k_chunk) {                                    \
		impl<TA, TB>(C, A, B, bias, partial, M, N, K, lda, ldb, ldc, alpha, beta, k_chunk);                       \
	}

GEMM_ENTRY(gemm_tf32_nn, gemm_tf32, false, false)
GEMM_ENTRY(gemm_tf32_nt, gemm_tf32, false, true)
GEMM_ENTRY(gemm_tf32_tn, gemm_tf32, true, false)
GEMM_ENTRY(gemm_f32_nn, gemm_f32, false, false)
GEMM_ENTRY(gemm_f32_nt, gemm_f32, false, true)
GEMM_ENTRY(gemm_f32_tn, gemm_f32, true, false)

// C = alpha * (sum over z < splits of partial[z]) + beta*C + bias, in a fixed
// order.
extern "C" __global__ void gemm_splitk_reduce(float *C, const float *partial, const float *bias, int M, int N, int ldc,
                                              int splits, float alpha, float beta) {
	for (i64 idx = (i64)blockIdx.x * blockDim.x + threadIdx.x; idx < (i64)M * N; idx += (i64)gridDim.x * blockDim.x) {
		const int m = (int)(idx / N), n = (int)(idx % N);
		float s = 0.f;
		for (int z = 0; z < splits; z++) s += partial[(i64)z * M * N + idx];
		float v = alpha * s;
		if (beta != 0.f) v += beta * C[(i64)m * ldc + n];
		if (bias != nullptr) v += bias[n];
		C[(i64)m * ldc + n] = v;
	}
}

// ------------------------------------------------------------- skinny ---

// Decoding multiplies a few rows (one per sequence) by every weight
// matrix: the products are bound by reading the weights once, and a 128-row
// tile would leave most of the GPU idle. These two kernels stream the
// weights with fully coalesced loads and keep up to SKINNY_M rows of
// results in registers, in exact FP32 at either precision.
#define SKINNY_M 16
#define SKINNY_K 64

// gemm_skinny_nn: C[M,N] = alpha * A[M,K] @ B[K,N] + beta*C + bias, M <=
// SKINNY_M. One thread per column (256 per block); blockIdx.y takes K range
// [y*k_chunk, (y+1)*k_chunk) and, when gridDim.y > 1, writes its raw
// partial product to partial[y*M*N + m*N + n] for gemm_splitk_reduce.
extern "C" __global__ void __launch_bounds__(256)
    gemm_skinny_nn(float *C, const float *A, const float *B, const float *bias, float *partial, int M, int N, int K, int lda,
                   int ldb, int ldc, float alpha, float beta, int k_chunk) {
	__shared__ float As[SKINNY_M][SKINNY_K];
	const int n = blockIdx.x * blockDim.x + threadIdx.x;
	const int k0 = blockIdx.y * k_chunk, k1 = min(K, k0 + k_chunk);
	float acc[SKINNY_M];
#pragma unroll
	for (int m = 0; m < SKINNY_M; m++) acc[m] = 0.f;
	for (int kb = k0; kb < k1; kb += SKINNY_K) {
		__syncthreads(); // the previous chunk of A is no longer read
		for (int i = threadIdx.x; i < SKINNY_M * SKINNY_K; i += blockDim.x) {
			const int m = i / SKINNY_K, k = i % SKINNY_K;
			As[m][k] = (m < M && kb + k < k1) ? A[(i64)m * lda + kb + k] : 0.f;
		}
		__syncthreads();
		if (n < N) {
			const int kend = min(SKINNY_K, k1 - kb);
			const float *b = B + (i64)kb * ldb + n;
#pragma unroll 8
			for (int k = 0; k < kend; k++) {
				const float bv = b[(i64)k * ldb];
#pragma unroll
				for (int m = 0; m < SKINNY_M; m++) acc[m] = fmaf(As[m][k], bv, acc[m]);
			}
		}
	}
	if (n >= N) return;
#pragma unroll
	for (int m = 0; m < SKINNY_M; m++) { // unrolled: acc stays in registers
		if (m >= M) break;
		if (gridDim.y > 1) {
			partial[(i64)blockIdx.y * M * N + (i64)m * N + n] = acc[m];
			continue;
		}
		float v = alpha * acc[m];
		if (beta != 0.f) v += beta * C[(i64)m * ldc + n];
		if (bias != nullptr) v += bias[n];
		C[(i64)m * ldc + n] = v;
	}
}

// gemm_skinny_nt: C[M,N] = alpha * A[M,K] @ B^T + beta*C + bias with B
// stored [N,K] (the language-model head over the token embedding), M <=
// SKINNY_M. One warp per column: the lanes walk the column's contiguous K
// and meet in a warp sum per row. 8 columns per 256-thread block.
extern "C" __global__ void __launch_bounds__(256)
    gemm_skinny_nt(float *C, const float *A, const float *B, const float *bias, int M, int N, int K, int lda, int ldb, int ldc,
                   float alpha, float beta) {
	const int lane = threadIdx.x & 31;
	const int n = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
	if (n >= N) return; // the whole warp
	const float *b = B + (i64)n * ldb;
	float acc[SKINNY_M];
#pragma unroll
	for (int m = 0; m < SKINNY_M; m++) acc[m] = 0.f;
	for (int k = lane; k < K; k += 32) {
		const float bv = b[k];
#pragma unroll
		for (int m = 0; m < SKINNY_M; m++)
			if (m < M) acc[m] = fmaf(A[(i64)m * lda + k], bv, acc[m]);
	}
#pragma unroll
	for (int m = 0; m < SKINNY_M; m++) {
		const float s = warp_sum(acc[m]); // every lane, every row: shuffles stay warp-uniform
		if (lane == 0 && m < M) {
			float v = alpha * s;
			if (beta != 0.f) v += beta * C[(i64)m * ldc + n];
			if (bias != nullptr) v += bias[n];
			C[(i64)m * ldc + n] = v;
		}
	}
}
