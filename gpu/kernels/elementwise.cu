// Element-wise kernels: embeddings, GELU, residual adds, scaling, AdamW,
// sums of squares and column sums. All use grid-stride loops over 64-bit
// indices, so any launch size covers any tensor.
#include "common.cuh"

#define GRID_STRIDE(i, n) for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += (i64)gridDim.x * blockDim.x)

// out[i,:] = wte[tokens[i],:] + wpe[p,:] with p = pos[i], or i mod T when pos
// is null (EncoderForward and EmbedAt of model.Kernels).
extern "C" __global__ void encoder_forward(float *out, const int *tokens, const int *pos, int T,
                                           const float *wte, const float *wpe, int N, int C) {
	GRID_STRIDE(idx, (i64)N * C) {
		const int i = (int)(idx / C), c = (int)(idx % C);
		const int p = pos ? pos[i] : i % T;
		out[idx] = wte[(i64)tokens[i] * C + c] + wpe[(i64)p * C + c];
	}
}

// dwte[tokens[i],:] += dout[i,:]. Rows with the same token add into the same
// row of dwte, hence the atomics (the summation order varies run to run).
extern "C" __global__ void encoder_backward_wte(float *dwte, const float *dout, const int *tokens, int N, int C) {
	GRID_STRIDE(idx, (i64)N * C) {
		const int i = (int)(idx / C), c = (int)(idx % C);
		atomicAdd(&dwte[(i64)tokens[i] * C + c], dout[idx]);
	}
}

// dwpe[t,:] += sum over b of dout[b,t,:]: one thread per (t, c), no atomics.
extern "C" __global__ void encoder_backward_wpe(float *dwpe, const float *dout, int B, int T, int C) {
	GRID_STRIDE(idx, (i64)T * C) {
		float s = 0.f;
		for (int b = 0; b < B; b++) s += dout[(i64)b * T * C + idx];
		dwpe[idx] += s;
	}
}

// out = gelu(inp); out may alias inp.
extern "C" __global__ void gelu_forward(float *out, const float *inp, i64 n) {
	GRID_STRIDE(i, n) out[i] = gelu_f(inp[i]);
}

// dinp = gelu'(inp) * dout; dinp may alias dout.
extern "C" __global__ void gelu_backward(float *dinp, const float *inp, const float *dout, i64 n) {
	GRID_STRIDE(i, n) dinp[i] = gelu_grad_f(inp[i]) * dout[i];
}

// out = a + b; out may alias either.
extern "C" __global__ void residual_forward(float *out, const float *a, const float *b, i64 n) {
	GRID_STRIDE(i, n) out[i] = a[i] + b[i];
}

// x *= s.
extern "C" __global__ void scale_inplace(float *x, float s, i64 n) {
	GRID_STRIDE(i, n) x[i] *= s;
}

// One AdamW step, the arithmetic of model/internal/vec.AdamW:
//   m = beta1*m + (1-beta1)*g;  v = beta2*v + (1-beta2)*g^2
//   p = p*decay - lr * (m*invbc1) / (sqrt(v*invbc2) + eps)
// with decay = 1 - lr*weight_decay and the bias corrections computed on the
// host in float64.
extern "C" __global__ void adamw_update(float *p, const float *g, float *m, float *v, i64 n, float lr, float beta1,
                                        float beta2, float eps, float decay, float invbc1, float invbc2) {
	GRID_STRIDE(i, n) {
		const float gi = g[i];
		const float mi = beta1 * m[i] + (1.f - beta1) * gi;
		const float vi = beta2 * v[i] + (1.f - beta2) * gi * gi;
		m[i] = mi;
		v[i] = vi;
		p[i] = p[i] * decay - lr * (mi * invbc1) / (sqrtf(vi * invbc2) + eps);
	}
}

// Sum of squares, first pass: each block writes the float64 sum of its
// grid-stride share into partial[blockIdx.x]. blockDim.x must be 256.
extern "C" __global__ void sumsq_partial(double *partial, const float *x, i64 n) {
	__shared__ double scratch[8];
	float s = 0.f;
	double acc = 0.0;
	int k = 0;
	GRID_STRIDE(i, n) {
		const float v = x[i];
		s += v * v;
		// Short float runs, summed in float64 across them, as on the CPU.
		if (++k == 64) {
			acc += s;
			s = 0.f;
			k = 0;
		}
	}
	acc += s;
	acc = warp_sum_d(acc);
	const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
	if (lane == 0) scratch[warp] = acc;
	__syncthreads();
	if (threadIdx.x == 0) {
		double t = 0.0;
		for (int w = 0; w < (int)(blockDim.x >> 5); w++) t += scratch[w];
		partial[blockIdx.x] = t;
	}
}

// Second pass: out[0] = sum of partial[0..n), in a fixed order. One block of
// 32 threads.
extern "C" __global__ void sum_doubles(double *out, const double *partial, int n) {
	double s = 0.0;
	for (int i = threadIdx.x; i < n; i += 32) s += partial[i];
	s = warp_sum_d(s);
	if (threadIdx.x == 0) out[0] = s;
}

// Column sums, first pass: partial[y, c] = sum of x[r, c] over the rows r of
// chunk y (rows [y*rows_per_chunk, ...)). Grid (ceil(W/blockDim), chunks).
extern "C" __global__ void column_sums_partial(float *partial, const float *x, int N, int W, int rows_per_chunk) {
	const int c = blockIdx.x * blockDim.x + threadIdx.x;
	if (c >= W) return;
	const int r0 = blockIdx.y * rows_per_chunk;
	const int r1 = min(N, r0 + rows_per_chunk);
	float s = 0.f;
	for (int r = r0; r < r1; r++) s += x[(i64)r * W + c];
	partial[(i64)blockIdx.y * W + c] = s;
}

// Second pass: out[c] += sum over y < chunks of partial[y*stride + c], in a
// fixed order (deterministic, unlike atomics).
extern "C" __global__ void column_sums_accumulate(float *out, const float *partial, int chunks, int W, int stride) {
	const int c = blockIdx.x * blockDim.x + threadIdx.x;
	if (c >= W) return;
	float s = 0.f;
	for (int y = 0; y < chunks; y++) s += partial[(i64)y * stride + c];
	out[c] += s;
}

// dst[i,:] = src[idx[i],:] for i < n: the last hidden state of the rows that
// finish in a decode pass.
extern "C" __global__ void gather_rows(float *dst, const float *src, const int *idx, int n, int C) {
	GRID_STRIDE(k, (i64)n * C) {
		const int i = (int)(k / C), c = (int)(k % C);
		dst[k] = src[(i64)idx[i] * C + c];
	}
}
