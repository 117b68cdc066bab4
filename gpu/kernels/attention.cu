// Causal multi-head self-attention, fused in the manner of FlashAttention:
// scores are computed tile by tile with an online softmax and never stored,
// so memory stays O(T) per head (only the per-row log-sum-exp is kept for
// the backward pass) however long the context. All arithmetic is FP32:
// attention is about 1 % of a GPT-2 step's FLOPs, so tensor cores would buy
// little and cost parity.
//
// qkv is [B,T,3C]: the query, key and value blocks of C, each NH heads of
// hs = C/NH. A query row is handled by TPQ = HSP/32 consecutive threads, each
// holding 32 of the head's dimensions in registers (HSP = hs rounded up to
// 32, 64 or 128); their partial dot products meet through warp shuffles.
// Key/value tiles sit in shared memory with a row stride of TPQ*33 floats,
// so the TPQ threads of a row read different banks.
#include "common.cuh"

template <int HSP> struct attn_cfg {
	static const int TPQ = HSP / 32;              // threads per query (or key) row
	static const int ROWS = 64;                   // query rows per block (forward, dq) / key rows (dk, dv)
	static const int TILE = HSP <= 64 ? 64 : 32;  // rows per shared-memory tile
	static const int RS = TPQ * 33;               // shared row stride in floats
	static const int THREADS = ROWS * TPQ;
};

// Sum over the TPQ threads of one row.
template <int TPQ> __device__ __forceinline__ float row_sum(float a) {
	if (TPQ > 1) a += __shfl_xor_sync(FULL_MASK, a, 1);
	if (TPQ > 2) a += __shfl_xor_sync(FULL_MASK, a, 2);
	return a;
}

// dot2 returns, summed over the TPQ threads of a row, x.a in s and y.b in
// dp: the score and the dout.v product of the backward passes.
template <int TPQ>
__device__ __forceinline__ void dot2(const float *x, const float (&a)[32], const float *y, const float (&b)[32],
                                     float &s, float &dp) {
	float u = 0.f, w = 0.f;
#pragma unroll
	for (int dd = 0; dd < 32; dd++) {
		u = fmaf(x[dd], a[dd], u);
		w = fmaf(y[dd], b[dd], w);
	}
	s = row_sum<TPQ>(u);
	dp = row_sum<TPQ>(w);
}

// load_rows copies rows r0.. of one head's block (offset `which` * C: 0 for
// queries, C for keys, 2C for values) into the padded shared layout, zeros
// past `limit` rows or hs dimensions.
template <int HSP>
__device__ __forceinline__ void load_rows(float *dst, const float *src, i64 row_stride, int r0, int limit, int hs,
                                          int rows) {
	typedef attn_cfg<HSP> cfg;
	for (int idx = threadIdx.x; idx < rows * HSP; idx += cfg::THREADS) {
		const int j = idx / HSP, d = idx % HSP;
		float v = 0.f;
		if (r0 + j < limit && d < hs) v = src[(i64)(r0 + j) * row_stride + d];
		dst[j * cfg::RS + (d >> 5) * 33 + (d & 31)] = v;
	}
}

// Forward: out[B,T,C] and lse[B,NH,T] (log-sum-exp of each row's scaled
// scores). Grid (ceil(T/64), B*NH), cfg::THREADS threads.
template <int HSP>
__device__ __forceinline__ void attention_forward(float *out, float *lse, const float *qkv, int B, int T, int C, int NH,
                                                  float scale) {
	typedef attn_cfg<HSP> cfg;
	const int TPQ = cfg::TPQ, RS = cfg::RS, TILE = cfg::TILE;
	__shared__ float Ks[cfg::TILE * cfg::RS];
	__shared__ float Vs[cfg::TILE * cfg::RS];
	const int hs = C / NH;
	const int b = blockIdx.y / NH, h = blockIdx.y % NH;
	const int q0 = blockIdx.x * cfg::ROWS;
	const int part = threadIdx.x % TPQ;
	const int t = q0 + threadIdx.x / TPQ;
	const i64 C3 = 3 * (i64)C;
	const float *head = qkv + (i64)b * T * C3 + h * hs; // query row 0 of this head

	float q[32], o[32];
#pragma unroll
	for (int dd = 0; dd < 32; dd++) {
		const int d = part * 32 + dd;
		q[dd] = (t < T && d < hs) ? head[(i64)t * C3 + d] * scale : 0.f;
		o[dd] = 0.f;
	}
	float m = -INFINITY, l = 0.f;
	const int kmax = min(T, q0 + cfg::ROWS); // keys this block's queries can see
	for (int k0 = 0; k0 < kmax; k0 += TILE) {
		__syncthreads(); // the previous tile is no longer read
		load_rows<HSP>(Ks, head + C, C3, k0, kmax, hs, TILE);
		load_rows<HSP>(Vs, head + 2 * C, C3, k0, kmax, hs, TILE);
		__syncthreads();
		const int kend = min(TILE, kmax - k0);
		for (int j0 = 0; j0 < kend; j0 += 16) {
			float s[16];
#pragma unroll
			for (int jj = 0; jj < 16; jj++) {
				const float *kr = Ks + (j0 + jj) * RS + part * 33;
				float a = 0.f;
#pragma unroll
				for (int dd = 0; dd < 32; dd++) a = fmaf(q[dd], kr[dd], a);
				a = row_sum<TPQ>(a);
				const int key = k0 + j0 + jj;
				s[jj] = (j0 + jj < kend && key <= t) ? a : -INFINITY;
			}
			float cm = s[0];
#pragma unroll
			for (int jj = 1; jj < 16; jj++) cm = fmaxf(cm, s[jj]);
			const float mn = fmaxf(m, cm);
			if (mn != -INFINITY) { // no shuffles below: divergence is harmless
				const float corr = expf(m - mn); // 0 while m is still -inf
				l *= corr;
#pragma unroll
				for (int dd = 0; dd < 32; dd++) o[dd] *= corr;
#pragma unroll
				for (int jj = 0; jj < 16; jj++) {
					const float p = expf(s[jj] - mn); // 0 for masked keys
					l += p;
					const float *vr = Vs + (j0 + jj) * RS + part * 33;
#pragma unroll
					for (int dd = 0; dd < 32; dd++) o[dd] = fmaf(p, vr[dd], o[dd]);
				}
				m = mn;
			}
		}
	}
	if (t >= T) return;
	float *orow = out + ((i64)b * T + t) * C + h * hs;
	const float inv = 1.f / l; // l >= 1: key 0 is visible to every query
#pragma unroll
	for (int dd = 0; dd < 32; dd++) {
		const int d = part * 32 + dd;
		if (d < hs) orow[d] = o[dd] * inv;
	}
	if (part == 0) lse[((i64)b * NH + h) * T + t] = m + logf(l);
}

// Backward, first pass: D[b,h,t] = sum over the head's dimensions of
// dout*out (equal to sum_j p_tj * dp_tj). One warp per (b, t, h).
extern "C" __global__ void attention_backward_d(float *D, const float *out, const float *dout, int B, int T, int C,
                                                int NH) {
	const i64 w = (i64)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
	if (w >= (i64)B * T * NH) return;
	const int lane = threadIdx.x & 31;
	const int h = (int)(w % NH);
	const i64 bt = w / NH; // b*T + t
	const int hs = C / NH;
	const float *o = out + bt * C + h * hs;
	const float *g = dout + bt * C + h * hs;
	float s = 0.f;
	for (int d = lane; d < hs; d += 32) s += o[d] * g[d];
	s = warp_sum(s);
	if (lane == 0) {
		const i64 b = bt / T, t = bt % T;
		D[(b * NH + h) * T + t] = s;
	}
}

// Backward, keys and values: each block owns 64 key rows of one head and
// walks the query rows that see them (t >= key), recomputing
// p = exp(scale*q.k - lse) on the way:
//   dv += p * dout_t;  ds = p * (dout_t.v - D_t);  dk += scale * ds * q_t.
// Writes the key and value blocks of dqkv. Grid (ceil(T/64), B*NH).
template <int HSP>
__device__ __forceinline__ void attention_backward_dkdv(float *dqkv, const float *qkv, const float *dout,
                                                        const float *lse, const float *D, int B, int T, int C, int NH,
                                                        float scale) {
	typedef attn_cfg<HSP> cfg;
	const int TPQ = cfg::TPQ, RS = cfg::RS, TILE = cfg::TILE;
	__shared__ float Qs[cfg::TILE * cfg::RS];
	__shared__ float Gs[cfg::TILE * cfg::RS];
	__shared__ float Ls[cfg::TILE], Ds[cfg::TILE];
	const int hs = C / NH;
	const int b = blockIdx.y / NH, h = blockIdx.y % NH;
	const int k0 = blockIdx.x * cfg::ROWS;
	const int part = threadIdx.x % TPQ;
	const int key = k0 + threadIdx.x / TPQ;
	const i64 C3 = 3 * (i64)C;
	const float *head = qkv + (i64)b * T * C3 + h * hs;
	const float *ghead = dout + (i64)b * T * C + h * hs;
	const float *lrow = lse + ((i64)b * NH + h) * T;
	const float *drow = D + ((i64)b * NH + h) * T;

	float k[32], v[32], dk[32], dv[32];
#pragma unroll
	for (int dd = 0; dd < 32; dd++) {
		const int d = part * 32 + dd;
		const bool ok = key < T && d < hs;
		k[dd] = ok ? head[(i64)key * C3 + C + d] : 0.f;
		v[dd] = ok ? head[(i64)key * C3 + 2 * C + d] : 0.f;
		dk[dd] = 0.f;
		dv[dd] = 0.f;
	}
	for (int q0 = k0; q0 < T; q0 += TILE) {
		__syncthreads();
		load_rows<HSP>(Qs, head, C3, q0, T, hs, TILE);
		load_rows<HSP>(Gs, ghead, C, q0, T, hs, TILE);
		for (int i = threadIdx.x; i < TILE; i += cfg::THREADS) {
			Ls[i] = q0 + i < T ? lrow[q0 + i] : 0.f;
			Ds[i] = q0 + i < T ? drow[q0 + i] : 0.f;
		}
		__syncthreads();
		const int qend = min(TILE, T - q0);
		for (int i = 0; i < qend; i++) {
			const float *qr = Qs + i * RS + part * 33;
			const float *gr = Gs + i * RS + part * 33;
			float s, dp;
			dot2<TPQ>(qr, k, gr, v, s, dp);
			const int tq = q0 + i;
			const float p = (key < T && key <= tq) ? expf(s * scale - Ls[i]) : 0.f;
			const float ds = p * (dp - Ds[i]) * scale;
#pragma unroll
			for (int dd = 0; dd < 32; dd++) {
				dv[dd] = fmaf(p, gr[dd], dv[dd]);
				dk[dd] = fmaf(ds, qr[dd], dk[dd]);
			}
		}
	}
	if (key >= T) return;
	float *row = dqkv + ((i64)b * T + key) * C3 + h * hs;
#pragma unroll
	for (int dd = 0; dd < 32; dd++) {
		const int d = part * 32 + dd;
		if (d < hs) {
			row[C + d] = dk[dd];
			row[2 * C + d] = dv[dd];
		}
	}
}

// Backward, queries: each block owns 64 query rows of one head and walks
// the keys they see: dq += scale * p * (dout_t.v - D_t) * k. Writes the query
// block of dqkv. Grid (ceil(T/64), B*NH).
template <int HSP>
__device__ __forceinline__ void attention_backward_dq(float *dqkv, const float *qkv, const float *dout,
                                                      const float *lse, const float *D, int B, int T, int C, int NH,
                                                      float scale) {
	typedef attn_cfg<HSP> cfg;
	const int TPQ = cfg::TPQ, RS = cfg::RS, TILE = cfg::TILE;
	__shared__ float Ks[cfg::TILE * cfg::RS];
	__shared__ float Vs[cfg::TILE * cfg::RS];
	const int hs = C / NH;
	const int b = blockIdx.y / NH, h = blockIdx.y % NH;
	const int q0 = blockIdx.x * cfg::ROWS;
	const int part = threadIdx.x % TPQ;
	const int t = q0 + threadIdx.x / TPQ;
	const i64 C3 = 3 * (i64)C;
	const float *head = qkv + (i64)b * T * C3 + h * hs;
	const float *ghead = dout + (i64)b * T * C + h * hs;

	float q[32], g[32], dq[32];
#pragma unroll
	for (int dd = 0; dd < 32; dd++) {
		const int d = part * 32 + dd;
		const bool ok = t < T && d < hs;
		q[dd] = ok ? head[(i64)t * C3 + d] : 0.f;
		g[dd] = ok ? ghead[(i64)t * C + d] : 0.f;
		dq[dd] = 0.f;
	}
	const float lt = t < T ? lse[((i64)b * NH + h) * T + t] : 0.f;
	const float Dt = t < T ? D[((i64)b * NH + h) * T + t] : 0.f;
	const int kmax = min(T, q0 + cfg::ROWS);
	for (int k0 = 0; k0 < kmax; k0 += TILE) {
		__syncthreads();
		load_rows<HSP>(Ks, head + C, C3, k0, kmax, hs, TILE);
		load_rows<HSP>(Vs, head + 2 * C, C3, k0, kmax, hs, TILE);
		__syncthreads();
		const int kend = min(TILE, kmax - k0);
		for (int j = 0; j < kend; j++) {
			const float *kr = Ks + j * RS + part * 33;
			const float *vr = Vs + j * RS + part * 33;
			float s, dp;
			dot2<TPQ>(kr, q, vr, g, s, dp);
			const float p = (t < T && k0 + j <= t) ? expf(s * scale - lt) : 0.f;
			const float ds = p * (dp - Dt) * scale;
#pragma unroll
			for (int dd = 0; dd < 32; dd++) dq[dd] = fmaf(ds, kr[dd], dq[dd]);
		}
	}
	if (t >= T) return;
	float *row = dqkv + ((i64)b * T + t) * C3 + h * hs;
#pragma unroll
	for (int dd = 0; dd < 32; dd++) {
		const int d = part * 32 + dd;
		if (d < hs) row[d] = dq[dd];
	}
}

#define ATTN_ENTRIES(HSP)                                                                                             \
	extern "C" __global__ void __launch_bounds__(attn_cfg<HSP>::THREADS)                                         \
	    attention_forward_hs##HSP(float *out, float *lse, const float *qkv, int B, int T, int C, int NH,           \
	                              float scale) {                                                                    \
		attention_forward<HSP>(out, lse, qkv, B, T, C, NH, scale);                                                 \
	}                                                                                                              \
	extern "C" __global__ void __launch_bounds__(attn_cfg<HSP>::THREADS)                                         \
	    attention_backward_dkdv_hs##HSP(float *dqkv, const float *qkv, const float *dout, const float *lse,        \
	                                    const float *D, int B, int T, int C, int NH, float scale) {                \
		attention_backward_dkdv<HSP>(dqkv, qkv, dout, lse, D, B, T, C, NH, scale);                                 \
	}                                                                                                              \
	extern "C" __global__ void __launch_bounds__(attn_cfg<HSP>::THREADS)                                         \
	    attention_backward_dq_hs##HSP(float *dqkv, const float *qkv, const float *dout, const float *lse,          \
	                                  const float *D, int B, int T, int C, int NH, float scale) {                  \
		attention_backward_dq<HSP>(dqkv, qkv, dout, lse, D, B, T, C, NH, scale);                                   \
	}

ATTN_ENTRIES(32)
ATTN_ENTRIES(64)
ATTN_ENTRIES(128)

// ------------------------------------------------------------- decoding ---

// decode_append writes the keys and values of the n new rows of qkv into one
// layer's caches [slots, max_len, C] at (row_slot[r], row_pos[r]).
extern "C" __global__ void decode_append(float *kc, float *vc, const float *qkv, const int *row_slot,
                                         const int *row_pos, int n, int C, int max_len) {
	for (i64 idx = (i64)blockIdx.x * blockDim.x + threadIdx.x; idx < (i64)n * C; idx += (i64)gridDim.x * blockDim.x) {
		const int r = (int)(idx / C), c = (int)(idx % C);
		const i64 dst = ((i64)row_slot[r] * max_len + row_pos[r]) * C + c;
		const i64 src = (i64)r * 3 * C + c;
		kc[dst] = qkv[src + C];
		vc[dst] = qkv[src + 2 * C];
	}
}

// decode_attention: new row r (query in qkv, at position row_pos[r] of slot
// row_slot[r]) attends to cached positions 0..row_pos[r] of its slot, keys
// appended by decode_append first. One block of 128 threads per (row, head):
// each warp takes every fourth run of 32 keys, one key per lane for the
// scores and one dimension per lane for the values, with its own online
// softmax; the four warps' states merge at the end. hs <= 128.
extern "C" __global__ void __launch_bounds__(128)
    decode_attention(float *out, const float *qkv, const float *kc, const float *vc, const int *row_slot,
                     const int *row_pos, int n, int C, int NH, int max_len, float scale) {
	__shared__ float qs[128];
	__shared__ float wm[4], wl[4];
	__shared__ float wo[4][128];
	const int r = blockIdx.x, h = blockIdx.y;
	if (r >= n) return; // uniform per block
	const int hs = C / NH;
	const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
	for (int d = threadIdx.x; d < hs; d += blockDim.x) qs[d] = qkv[(i64)r * 3 * C + h * hs + d] * scale;
	__syncthreads();
	const int L = row_pos[r] + 1;
	const float *kbase = kc + (i64)row_slot[r] * max_len * C + h * hs;
	const float *vbase = vc + (i64)row_slot[r] * max_len * C + h * hs;
	float m = -INFINITY, l = 0.f, o[4] = {0.f, 0.f, 0.f, 0.f};
	for (int jb = warp * 32; jb < L; jb += 128) { // warp-uniform; key jb is always valid
		const int j = jb + lane;
		float s = -INFINITY;
		if (j < L) {
			const float *kr = kbase + (i64)j * C;
			float a = 0.f;
			for (int d = 0; d < hs; d++) a = fmaf(qs[d], kr[d], a);
			s = a;
		}
		const float mn = fmaxf(m, warp_max(s));
		const float corr = expf(m - mn);
		const float p = j < L ? expf(s - mn) : 0.f;
		l = l * corr + warp_sum(p);
#pragma unroll
		for (int i = 0; i < 4; i++) o[i] *= corr;
		const int cnt = min(32, L - jb);
		for (int jj = 0; jj < cnt; jj++) {
			const float pj = __shfl_sync(FULL_MASK, p, jj);
			const float *vr = vbase + (i64)(jb + jj) * C;
#pragma unroll
			for (int i = 0; i < 4; i++) {
				const int d = lane + 32 * i;
				if (d < hs) o[i] = fmaf(pj, vr[d], o[i]);
			}
		}
		m = mn;
	}
	if (lane == 0) {
		wm[warp] = m;
		wl[warp] = l;
	}
#pragma unroll
	for (int i = 0; i < 4; i++) wo[warp][lane + 32 * i] = o[i];
	__syncthreads();
	float M = -INFINITY;
	for (int w = 0; w < 4; w++) M = fmaxf(M, wm[w]);
	for (int d = threadIdx.x; d < hs; d += blockDim.x) {
		float acc = 0.f, sum = 0.f;
		for (int w = 0; w < 4; w++) {
			if (wm[w] == -INFINITY) continue; // a warp that saw no key
			const float f = expf(wm[w] - M);
			acc += f * wo[w][d];
			sum += f * wl[w];
		}
		out[(i64)r * C + h * hs + d] = acc / sum;
	}
}
