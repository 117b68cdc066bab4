// Softmax cross-entropy and greedy sampling over rows of V logits. One block
// per row: a GPT-2 row is 50257 floats, enough work for 256 threads.
#include "common.cuh"

// lse[i] = log(sum exp(logits[i,:])) and losses[i] = lse[i] - logits[i,t]
// for target t, or 0 when t < 0 (ignored row). Block of 256 threads per row.
extern "C" __global__ void crossentropy_forward(float *losses, float *lse, const float *logits, const int *targets,
                                                int N, int V) {
	__shared__ float scratch[32];
	const int i = blockIdx.x;
	if (i >= N) return; // uniform per block
	const float *x = logits + (i64)i * V;
	float mx = -INFINITY;
	for (int v = threadIdx.x; v < V; v += blockDim.x) mx = fmaxf(mx, x[v]);
	mx = block_max(mx, scratch);
	float s = 0.f;
	for (int v = threadIdx.x; v < V; v += blockDim.x) s += expf(x[v] - mx);
	s = block_sum(s, scratch);
	if (threadIdx.x == 0) {
		const float l = mx + logf(s);
		lse[i] = l;
		const int t = targets[i];
		losses[i] = t >= 0 ? l - x[t] : 0.f;
	}
}

// dlogits = scale * (softmax - onehot(target)) from the saved lse; ignored
// rows get zeros. dlogits may alias logits (each element is read, then
// written, by one thread).
extern "C" __global__ void crossentropy_backward(float *dlogits, const float *logits, const float *lse,
                                                 const int *targets, float scale, int N, int V) {
	const int i = blockIdx.x;
	if (i >= N) return;
	const int t = targets[i];
	const float *x = logits + (i64)i * V;
	float *d = dlogits + (i64)i * V;
	const float l = lse[i];
	for (int v = threadIdx.x; v < V; v += blockDim.x) {
		float g = 0.f;
		if (t >= 0) {
			g = expf(x[v] - l) * scale;
			if (v == t) g -= scale;
		}
		d[v] = g;
	}
}

// out[i] = the index of the largest finite value of row i of logits (lowest
// index on a tie), or -1 when none is finite: the greedy choice of
// model.Sampler at temperature 0 without penalties. Block of 256 threads per
// row; rows are row_stride floats apart.
extern "C" __global__ void argmax_rows(int *out, const float *logits, int N, int V, i64 row_stride) {
	__shared__ float sval[32];
	__shared__ int sidx[32];
	const int i = blockIdx.x;
	if (i >= N) return;
	const float *x = logits + (i64)i * row_stride;
	float bv = -INFINITY;
	int bi = -1;
	for (int v = threadIdx.x; v < V; v += blockDim.x) {
		const float y = x[v];
		if (y > bv && y < INFINITY) { // false for NaN and -inf; strides keep the lowest index per thread
			bv = y;
			bi = v;
		}
	}
	// Warp then block reduction of (value, index): larger value wins, the
	// lower index on equal values; -1 only when nothing was finite.
	for (int o = 16; o > 0; o >>= 1) {
		const float ov = __shfl_xor_sync(FULL_MASK, bv, o);
		const int oi = __shfl_xor_sync(FULL_MASK, bi, o);
		if (oi >= 0 && (bi < 0 || ov > bv || (ov == bv && oi < bi))) {
			bv = ov;
			bi = oi;
		}
	}
	const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
	if (lane == 0) {
		sval[warp] = bv;
		sidx[warp] = bi;
	}
	__syncthreads();
	if (threadIdx.x == 0) {
		for (int w = 1; w < nwarps; w++) {
			const float ov = sval[w];
			const int oi = sidx[w];
			if (oi >= 0 && (bi < 0 || ov > bv || (ov == bv && oi < bi))) {
				bv = ov;
				bi = oi;
			}
		}
		out[i] = bi;
	}
}
