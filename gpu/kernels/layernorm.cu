// LayerNorm forward and backward: one warp per row of C. The statistics are
// the two-pass mean and variance of model/cpu_kernels_layernorm.go, and
// rstd is 1/sqrt (correctly rounded) rather than rsqrtf, to stay close to
// the CPU.
#include "common.cuh"

// out = (inp - mean) * rstd * weight + bias per row; mean and rstd ([N]) are
// saved when mean is not null. Block of 256 threads = 8 rows.
extern "C" __global__ void layernorm_forward(float *out, float *mean, float *rstd, const float *inp,
                                             const float *weight, const float *bias, int N, int C, float eps) {
	const int lane = threadIdx.x & 31;
	const int row = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
	if (row >= N) return; // the whole warp leaves together; no block barrier follows
	const float *x = inp + (i64)row * C;
	float s = 0.f;
	for (int c = lane; c < C; c += 32) s += x[c];
	const float m = warp_sum(s) / (float)C;
	float ss = 0.f;
	for (int c = lane; c < C; c += 32) {
		const float d = x[c] - m;
		ss += d * d;
	}
	const float r = 1.f / sqrtf(warp_sum(ss) / (float)C + eps);
	float *o = out + (i64)row * C;
	for (int c = lane; c < C; c += 32) o[c] = (x[c] - m) * r * weight[c] + bias[c];
	if (mean != nullptr && lane == 0) {
		mean[row] = m;
		rstd[row] = r;
	}
}

// dinp += (dout*w - mean(dout*w) - norm*mean(dout*w*norm)) * rstd per row,
// norm = (inp - mean) * rstd. One warp per row, 8 rows per block.
extern "C" __global__ void layernorm_backward_input(float *dinp, const float *dout, const float *inp, const float *weight,
                                                    const float *mean, const float *rstd, int N, int C) {
	const int lane = threadIdx.x & 31;
	const int row = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
	if (row >= N) return;
	const float *x = inp + (i64)row * C;
	const float *g = dout + (i64)row * C;
	const float m = mean[row], r = rstd[row];
	float sumD = 0.f, sumDN = 0.f;
	for (int c = lane; c < C; c += 32) {
		const float dn = g[c] * weight[c];
		sumD += dn;
		sumDN += dn * (x[c] - m) * r;
	}
	const float meanD = warp_sum(sumD) / (float)C;
	const float meanDN = warp_sum(sumDN) / (float)C;
	float *d = dinp + (i64)row * C;
	for (int c = lane; c < C; c += 32) {
		const float norm = (x[c] - m) * r;
		d[c] += (g[c] * weight[c] - meanD - norm * meanDN) * r;
	}
}

// Parameter gradients, first pass: for the rows of chunk blockIdx.y,
// partial[y, c] = sum of norm*dout (the weight gradient) and
// partial[y, C + c] = sum of dout (the bias gradient). column_sums_accumulate
// then adds the chunks into dweight and dbias.
extern "C" __global__ void layernorm_backward_params_partial(float *partial, const float *dout, const float *inp,
                                                             const float *mean, const float *rstd, int N, int C,
                                                             int rows_per_chunk) {
	const int c = blockIdx.x * blockDim.x + threadIdx.x;
	if (c >= C) return;
	const int r0 = blockIdx.y * rows_per_chunk;
	const int r1 = min(N, r0 + rows_per_chunk);
	float dw = 0.f, db = 0.f;
	for (int r = r0; r < r1; r++) {
		const float g = dout[(i64)r * C + c];
		dw += (inp[(i64)r * C + c] - mean[r]) * rstd[r] * g;
		db += g;
	}
	partial[(i64)blockIdx.y * 2 * C + c] = dw;
	partial[(i64)blockIdx.y * 2 * C + C + c] = db;
}
