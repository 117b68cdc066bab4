// Shared helpers of Tandem's CUDA kernels. Every kernel is extern "C" so the
// Go side finds it by its plain name (cu's Module.Function); every tensor is
// a dense row-major float32 array, with the shape conventions of
// model/kernels.go. Offsets into large tensors are computed in 64 bits:
// logits alone can pass 2^31 elements.
#pragma once

typedef long long i64;

#define FULL_MASK 0xffffffffu

__device__ __forceinline__ float warp_sum(float v) {
	for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(FULL_MASK, v, o);
	return v;
}

__device__ __forceinline__ double warp_sum_d(double v) {
	for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(FULL_MASK, v, o);
	return v;
}

__device__ __forceinline__ float warp_max(float v) {
	for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(FULL_MASK, v, o));
	return v;
}

// block_sum and block_max reduce over the whole block and return the result
// to every thread. blockDim.x must be a multiple of 32 (at most 1024), every
// thread must call them, and scratch is __shared__ float[32].
__device__ __forceinline__ float block_sum(float v, float *scratch) {
	const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
	v = warp_sum(v);
	__syncthreads(); // scratch may still be read by a previous call
	if (lane == 0) scratch[warp] = v;
	__syncthreads();
	v = lane < nwarps ? scratch[lane] : 0.f;
	return warp_sum(v);
}

__device__ __forceinline__ float block_max(float v, float *scratch) {
	const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
	v = warp_max(v);
	__syncthreads();
	if (lane == 0) scratch[warp] = v;
	__syncthreads();
	v = lane < nwarps ? scratch[lane] : -INFINITY;
	return warp_max(v);
}

// The GELU of GPT-2 (tanh approximation), written as x * sigmoid(2u) like
// model/cpu_kernels_math.go: one exp and no cancellation.
#define GELU_SCALE 0.7978845608028654f
#define GELU_CUBIC 0.044715f

__device__ __forceinline__ float gelu_f(float x) {
	const float u = GELU_SCALE * (x + GELU_CUBIC * x * x * x);
	return x / (1.f + expf(-2.f * u));
}

__device__ __forceinline__ float gelu_grad_f(float x) {
	const float u = GELU_SCALE * (x + GELU_CUBIC * x * x * x);
	const float s = 1.f / (1.f + expf(-2.f * u));
	const float du = GELU_SCALE * (1.f + 3.f * GELU_CUBIC * x * x);
	return s + x * s * (1.f - s) * 2.f * du;
}
