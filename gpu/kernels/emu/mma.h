// Emulation of the part of CUDA's <mma.h> (nvcuda::wmma) that gemm.cu uses:
// 16x16x8 TF32 fragments. On a GPU a fragment is spread over the 32 lanes
// of a warp in an unspecified layout; here every lane holds the whole
// tile, which keeps the API's semantics (the kernel only touches x[] with
// element-wise conversions) and lets each lane compute the product alone.
// The alignment rules of load/store_matrix_sync (256-bit pointers, ldm a
// multiple of 4 floats) are checked, since breaking them is undefined on a
// GPU.
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <type_traits>

namespace nvcuda {
namespace wmma {

struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
namespace precision {
struct tf32 {};
} // namespace precision
enum layout_t { mem_row_major, mem_col_major };

template <typename Use, int M, int N, int K> struct dims;
template <int M, int N, int K> struct dims<matrix_a, M, N, K> {
	static const int rows = M, cols = K;
};
template <int M, int N, int K> struct dims<matrix_b, M, N, K> {
	static const int rows = K, cols = N;
};
template <int M, int N, int K> struct dims<accumulator, M, N, K> {
	static const int rows = M, cols = N;
};

template <typename Use, int M, int N, int K, typename T, typename Layout = void> struct fragment {
	static const int rows = dims<Use, M, N, K>::rows, cols = dims<Use, M, N, K>::cols;
	static const int num_elements = rows * cols;
	float x[rows * cols]; // element (r, c) at x[r*cols + c]
};

inline void check(const void *p, unsigned ldm, const char *what) {
	if ((uintptr_t)p % 32 != 0 || ldm % 4 != 0) {
		fprintf(stderr, "wmma emu: %s with pointer %p (needs 32-byte alignment) and ldm %u (needs a multiple of 4)\n", what, p, ldm);
		abort();
	}
}

template <typename Use, int M, int N, int K, typename T, typename L>
inline void load_matrix_sync(fragment<Use, M, N, K, T, L> &f, const float *p, unsigned ldm) {
	check(p, ldm, "load_matrix_sync");
	typedef fragment<Use, M, N, K, T, L> F;
	for (int r = 0; r < F::rows; r++)
		for (int c = 0; c < F::cols; c++)
			f.x[r * F::cols + c] = std::is_same<L, col_major>::value ? p[(size_t)c * ldm + r] : p[(size_t)r * ldm + c];
}

template <int M, int N, int K>
inline void store_matrix_sync(float *p, const fragment<accumulator, M, N, K, float> &f, unsigned ldm, layout_t layout) {
	check(p, ldm, "store_matrix_sync");
	typedef fragment<accumulator, M, N, K, float> F;
	for (int r = 0; r < F::rows; r++)
		for (int c = 0; c < F::cols; c++) {
			float *q = layout == mem_col_major ? p + (size_t)c * ldm + r : p + (size_t)r * ldm + c;
			// Every lane stores the same tile; the write is atomic so that
			// ThreadSanitizer sees identical values, not a race.
			__atomic_store(q, &f.x[r * F::cols + c], __ATOMIC_RELAXED);
		}
}

template <int M, int N, int K> inline void fill_fragment(fragment<accumulator, M, N, K, float> &f, float v) {
	for (float &e : f.x) e = v;
}

template <int M, int N, int K, typename LA, typename LB>
inline void mma_sync(fragment<accumulator, M, N, K, float> &d, const fragment<matrix_a, M, N, K, precision::tf32, LA> &a,
                     const fragment<matrix_b, M, N, K, precision::tf32, LB> &b,
                     const fragment<accumulator, M, N, K, float> &c) {
	float out[M * N];
	for (int i = 0; i < M; i++)
		for (int j = 0; j < N; j++) {
			float s = c.x[i * N + j];
			for (int k = 0; k < K; k++) s += a.x[i * K + k] * b.x[k * N + j];
			out[i * N + j] = s;
		}
	memcpy(d.x, out, sizeof out);
}

// TF32: round to nearest (ties away from zero) keeping 10 mantissa bits,
// like cvt.rna.tf32.f32.
inline float __float_to_tf32(float f) {
	uint32_t u;
	memcpy(&u, &f, 4);
	if ((u & 0x7f800000u) != 0x7f800000u) { // finite
		u += 0x1000u;
		u &= 0xffffe000u;
	}
	memcpy(&f, &u, 4);
	return f;
}

} // namespace wmma
} // namespace nvcuda
