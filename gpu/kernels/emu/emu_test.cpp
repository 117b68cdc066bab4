// Runs every kernel of gpu/kernels on the CPU emulation (cuda_emu.h) with
// the launch shapes package gpu uses, and checks each against a plain
// float64 reference written here. Shapes are chosen to end inside tiles,
// to misalign rows (odd widths), and to reach every template variant.
// Prints one line per check and "N passed, M failed". See
// scripts/cuda-emu.sh.
#include "cuda_emu.h"

#include <cstring>
#include <random>
#include <string>

#include "../attention.cu"
#include "../elementwise.cu"
#include "../gemm.cu"
#include "../layernorm.cu"
#include "../loss.cu"

static int passed, failed;
static std::mt19937_64 rng(42);

static std::vector<float> randv(size_t n, float scale = 1.f) {
	std::normal_distribution<float> d(0.f, scale);
	std::vector<float> v(n);
	for (auto &x : v) x = d(rng);
	return v;
}

static std::vector<int> randi(size_t n, int hi) {
	std::uniform_int_distribution<int> d(0, hi - 1);
	std::vector<int> v(n);
	for (auto &x : v) x = d(rng);
	return v;
}

// check compares got with want: max|got-want| / max(max|want|, 1e-6).
static void check(const std::string &name, const float *got, const std::vector<double> &want, double tol) {
	double diff = 0, scale = 0;
	bool nan = false;
	for (size_t i = 0; i < want.size(); i++) {
		if (std::isnan(got[i]) != std::isnan(want[i])) nan = true;
		if (!std::isnan(want[i])) {
			diff = std::max(diff, std::fabs(got[i] - want[i]));
			scale = std::max(scale, std::fabs(want[i]));
		}
	}
	double err = diff / std::max(scale, 1e-6);
	bool ok = !nan && err <= tol;
	printf("%s %-58s error %.2e (tolerance %.0e)%s\n", ok ? "ok  " : "FAIL", name.c_str(), err, tol, nan ? " NaN mismatch" : "");
	(ok ? passed : failed)++;
}

static void check_int(const std::string &name, const std::vector<int> &got, const std::vector<int> &want) {
	bool ok = got == want;
	printf("%s %s\n", ok ? "ok  " : "FAIL", name.c_str());
	if (!ok)
		for (size_t i = 0; i < got.size(); i++)
			if (got[i] != want[i]) printf("     [%zu] got %d want %d\n", i, got[i], want[i]);
	(ok ? passed : failed)++;
}

static float tf32(float f) { return nvcuda::wmma::__float_to_tf32(f); }

static int sms = 4; // a small "GPU": grid-stride loops then take several turns
static int elem_grid(long long n) { return (int)std::min((n + 255) / 256, (long long)sms * 16); }

// ------------------------------------------------------------------ GEMM

typedef void (*gemm_fn)(float *, const float *, const float *, const float *, float *, int, int, int, int, int, int, float,
                        float, int);

static void test_gemm(const char *name, gemm_fn fn, bool ta, bool tb, bool tc, int M, int N, int K, int pad, float beta,
                      bool bias, int splits) {
	int lda = (ta ? M : K) + pad, ldb = (tb ? K : N) + pad, ldc = N + pad;
	auto A = randv((size_t)(ta ? K : M) * lda), B = randv((size_t)(tb ? N : K) * ldb), C = randv((size_t)M * ldc);
	auto bv = randv(N);
	std::vector<double> want(C.begin(), C.end());
	for (int m = 0; m < M; m++)
		for (int n = 0; n < N; n++) {
			double s = 0;
			for (int k = 0; k < K; k++) {
				float a = ta ? A[(size_t)k * lda + m] : A[(size_t)m * lda + k];
				float b = tb ? B[(size_t)n * ldb + k] : B[(size_t)k * ldb + n];
				if (tc) a = tf32(a), b = tf32(b);
				s += (double)a * b;
			}
			double v = 0.5 * s + (beta != 0 ? beta * C[(size_t)m * ldc + n] : 0) + (bias ? bv[n] : 0);
			want[(size_t)m * ldc + n] = v;
		}
	dim3e grid{(unsigned)((N + 127) / 128), (unsigned)((M + 127) / 128), (unsigned)splits};
	if (splits == 1) {
		emu::launch(grid, 256, fn, C.data(), A.data(), B.data(), bias ? bv.data() : nullptr, (float *)nullptr, M, N, K, lda, ldb,
		            ldc, 0.5f, beta, K);
	} else {
		int chunk = ((K + splits - 1) / splits + 15) & ~15;
		grid.z = (K + chunk - 1) / chunk;
		std::vector<float> part((size_t)grid.z * M * N);
		emu::launch(grid, 256, fn, C.data(), A.data(), B.data(), (const float *)nullptr, part.data(), M, N, K, lda, ldb, ldc,
		            1.f, 0.f, chunk);
		emu::launch(dim3e{(unsigned)elem_grid((long long)M * N)}, 256, gemm_splitk_reduce, C.data(), (const float *)part.data(),
		            bias ? (const float *)bv.data() : nullptr, M, N, ldc, (int)grid.z, 0.5f, beta);
	}
	char label[160];
	snprintf(label, sizeof label, "%s M=%d N=%d K=%d pad=%d beta=%g%s splits=%d", name, M, N, K, pad, beta, bias ? " bias" : "",
	         splits);
	check(label, C.data(), want, 2e-5);
}

// The skinny products (M <= 16): nn with K split along y and reduced, nt
// one warp per column. Launched as Device.gemm launches them.
static void test_skinny(bool nt, int M, int N, int K, int pad, float beta, bool bias, int splits) {
	int lda = K + pad, ldb = (nt ? K : N) + pad, ldc = N + pad;
	auto A = randv((size_t)M * lda), B = randv((size_t)(nt ? N : K) * ldb), C = randv((size_t)M * ldc), bv = randv(N);
	std::vector<double> want(C.begin(), C.end());
	for (int m = 0; m < M; m++)
		for (int n = 0; n < N; n++) {
			double s = 0;
			for (int k = 0; k < K; k++) s += (double)A[(size_t)m * lda + k] * (nt ? B[(size_t)n * ldb + k] : B[(size_t)k * ldb + n]);
			want[(size_t)m * ldc + n] = 0.5 * s + (beta != 0 ? beta * C[(size_t)m * ldc + n] : 0) + (bias ? bv[n] : 0);
		}
	const float *bp = bias ? bv.data() : nullptr;
	if (nt) {
		emu::launch(dim3e{(unsigned)((N + 7) / 8)}, 256, gemm_skinny_nt, C.data(), (const float *)A.data(), (const float *)B.data(), bp,
		            M, N, K, lda, ldb, ldc, 0.5f, beta);
	} else if (splits == 1) {
		emu::launch(dim3e{(unsigned)((N + 255) / 256)}, 256, gemm_skinny_nn, C.data(), (const float *)A.data(), (const float *)B.data(),
		            bp, (float *)nullptr, M, N, K, lda, ldb, ldc, 0.5f, beta, K);
	} else {
		int chunk = ((K + splits - 1) / splits + 63) / 64 * 64;
		int z = (K + chunk - 1) / chunk;
		std::vector<float> part((size_t)z * M * N);
		emu::launch(dim3e{(unsigned)((N + 255) / 256), (unsigned)z}, 256, gemm_skinny_nn, C.data(), (const float *)A.data(),
		            (const float *)B.data(), (const float *)nullptr, part.data(), M, N, K, lda, ldb, ldc, 1.f, 0.f, chunk);
		emu::launch(dim3e{(unsigned)elem_grid((long long)M * N)}, 256, gemm_splitk_reduce, C.data(), (const float *)part.data(), bp, M,
		            N, ldc, z, 0.5f, beta);
	}
	char label[160];
	snprintf(label, sizeof label, "gemm_skinny_%s M=%d N=%d K=%d pad=%d beta=%g%s splits=%d", nt ? "nt" : "nn", M, N, K, pad, beta,
	         bias ? " bias" : "", splits);
	check(label, C.data(), want, 2e-5);
}

static void gemm_tests() {
	test_skinny(false, 1, 300, 100, 0, 0.f, true, 1);
	test_skinny(false, 16, 513, 200, 3, 1.f, true, 3);
	test_skinny(false, 5, 70, 1000, 1, 0.f, false, 4);
	test_skinny(true, 1, 1003, 96, 0, 0.f, false, 1);
	test_skinny(true, 16, 37, 200, 2, 1.f, true, 1);
	test_skinny(true, 7, 300, 33, 0, 0.f, true, 1);
	struct {
		const char *name;
		gemm_fn fn;
		bool ta, tb, tc;
	} ks[] = {
	    {"gemm_f32_nn", gemm_f32_nn, false, false, false},    {"gemm_f32_nt", gemm_f32_nt, false, true, false},
	    {"gemm_f32_tn", gemm_f32_tn, true, false, false},     {"gemm_tf32_nn", gemm_tf32_nn, false, false, true},
	    {"gemm_tf32_nt", gemm_tf32_nt, false, true, true},    {"gemm_tf32_tn", gemm_tf32_tn, true, false, true},
	};
	for (auto &k : ks) {
		test_gemm(k.name, k.fn, k.ta, k.tb, k.tc, 130, 70, 45, 0, 0.f, true, 1);    // partial tiles everywhere
		test_gemm(k.name, k.fn, k.ta, k.tb, k.tc, 3, 257, 64, 3, 1.f, false, 1);    // decode-like, odd leading dims
		test_gemm(k.name, k.fn, k.ta, k.tb, k.tc, 128, 128, 32, 0, 1.f, true, 1);   // exact tiles, accumulate
		test_gemm(k.name, k.fn, k.ta, k.tb, k.tc, 40, 136, 200, 1, 0.f, true, 3);   // split K and reduce
		test_gemm(k.name, k.fn, k.ta, k.tb, k.tc, 17, 33, 7, 0, 1.f, false, 1);     // K shorter than a step
	}
}

// ------------------------------------------------------------- attention

struct attn_k {
	void (*fwd)(float *, float *, const float *, int, int, int, int, float);
	void (*dkdv)(float *, const float *, const float *, const float *, const float *, int, int, int, int, float);
	void (*dq)(float *, const float *, const float *, const float *, const float *, int, int, int, int, float);
	int threads;
};

static attn_k attn_for(int hs) {
	if (hs <= 32) return {attention_forward_hs32, attention_backward_dkdv_hs32, attention_backward_dq_hs32, 64};
	if (hs <= 64) return {attention_forward_hs64, attention_backward_dkdv_hs64, attention_backward_dq_hs64, 128};
	return {attention_forward_hs128, attention_backward_dkdv_hs128, attention_backward_dq_hs128, 256};
}

static void test_attention(int B, int T, int NH, int hs) {
	const int C = NH * hs;
	const float scale = (float)(1 / std::sqrt((double)hs));
	auto qkv = randv((size_t)B * T * 3 * C), dout = randv((size_t)B * T * C);
	std::vector<double> out((size_t)B * T * C), lse((size_t)B * NH * T), dqkv((size_t)B * T * 3 * C, 0.0);
	auto Q = [&](int b, int t, int h, int d) { return (double)qkv[((size_t)b * T + t) * 3 * C + h * hs + d]; };
	auto K = [&](int b, int t, int h, int d) { return (double)qkv[((size_t)b * T + t) * 3 * C + C + h * hs + d]; };
	auto Vv = [&](int b, int t, int h, int d) { return (double)qkv[((size_t)b * T + t) * 3 * C + 2 * C + h * hs + d]; };
	for (int b = 0; b < B; b++)
		for (int h = 0; h < NH; h++) {
			std::vector<double> P((size_t)T * T, 0.0);
			for (int t = 0; t < T; t++) {
				double mx = -INFINITY;
				for (int j = 0; j <= t; j++) {
					double s = 0;
					for (int d = 0; d < hs; d++) s += Q(b, t, h, d) * K(b, j, h, d);
					P[(size_t)t * T + j] = s * scale;
					mx = std::max(mx, s * scale);
				}
				double sum = 0;
				for (int j = 0; j <= t; j++) sum += std::exp(P[(size_t)t * T + j] - mx);
				lse[((size_t)b * NH + h) * T + t] = mx + std::log(sum);
				for (int j = 0; j <= t; j++) P[(size_t)t * T + j] = std::exp(P[(size_t)t * T + j] - mx) / sum;
				for (int d = 0; d < hs; d++) {
					double o = 0;
					for (int j = 0; j <= t; j++) o += P[(size_t)t * T + j] * Vv(b, j, h, d);
					out[((size_t)b * T + t) * C + h * hs + d] = o;
				}
			}
			// Backward.
			auto G = [&](int t, int d) { return (double)dout[((size_t)b * T + t) * C + h * hs + d]; };
			for (int t = 0; t < T; t++) {
				std::vector<double> dp(t + 1);
				double dot = 0;
				for (int j = 0; j <= t; j++) {
					double s = 0;
					for (int d = 0; d < hs; d++) s += G(t, d) * Vv(b, j, h, d);
					dp[j] = s;
					dot += P[(size_t)t * T + j] * s;
				}
				for (int j = 0; j <= t; j++) {
					double p = P[(size_t)t * T + j], ds = p * (dp[j] - dot) * scale;
					for (int d = 0; d < hs; d++) {
						dqkv[((size_t)b * T + t) * 3 * C + h * hs + d] += ds * K(b, j, h, d);
						dqkv[((size_t)b * T + j) * 3 * C + C + h * hs + d] += ds * Q(b, t, h, d);
						dqkv[((size_t)b * T + j) * 3 * C + 2 * C + h * hs + d] += p * G(t, d);
					}
				}
			}
		}
	attn_k k = attn_for(hs);
	std::vector<float> gout((size_t)B * T * C, NAN), glse((size_t)B * NH * T, NAN), gD((size_t)B * NH * T, NAN);
	std::vector<float> gdqkv((size_t)B * T * 3 * C, NAN);
	dim3e grid{(unsigned)((T + 63) / 64), (unsigned)(B * NH), 1};
	emu::launch(grid, k.threads, k.fwd, gout.data(), glse.data(), (const float *)qkv.data(), B, T, C, NH, scale);
	char label[120];
	snprintf(label, sizeof label, "attention_forward hs=%d B=%d T=%d NH=%d: out", hs, B, T, NH);
	check(label, gout.data(), out, 2e-5);
	snprintf(label, sizeof label, "attention_forward hs=%d B=%d T=%d NH=%d: lse", hs, B, T, NH);
	check(label, glse.data(), lse, 2e-6);
	long long warps = (long long)B * T * NH;
	emu::launch(dim3e{(unsigned)((warps + 7) / 8)}, 256, attention_backward_d, gD.data(), (const float *)gout.data(),
	            (const float *)dout.data(), B, T, C, NH);
	emu::launch(grid, k.threads, k.dkdv, gdqkv.data(), (const float *)qkv.data(), (const float *)dout.data(),
	            (const float *)glse.data(), (const float *)gD.data(), B, T, C, NH, scale);
	emu::launch(grid, k.threads, k.dq, gdqkv.data(), (const float *)qkv.data(), (const float *)dout.data(),
	            (const float *)glse.data(), (const float *)gD.data(), B, T, C, NH, scale);
	snprintf(label, sizeof label, "attention_backward hs=%d B=%d T=%d NH=%d: dqkv", hs, B, T, NH);
	check(label, gdqkv.data(), dqkv, 5e-5);
}

static void test_decode(int slots, int maxLen, int NH, int hs) {
	const int C = NH * hs;
	const float scale = (float)(1 / std::sqrt((double)hs));
	// Rows: slot 0 decodes one token at position 40; slot 2 prefills 5
	// tokens at 0..4; slot 1 one token at position 0; slot 3 one at maxLen-1.
	std::vector<int> slot = {0, 2, 2, 2, 2, 2, 1, 3}, pos = {40, 0, 1, 2, 3, 4, 0, maxLen - 1};
	const int n = (int)slot.size();
	auto kc = randv((size_t)slots * maxLen * C), vc = randv((size_t)slots * maxLen * C), qkv = randv((size_t)n * 3 * C);
	std::vector<double> wk(kc.begin(), kc.end()), wv(vc.begin(), vc.end()), out((size_t)n * C);
	for (int r = 0; r < n; r++)
		for (int c = 0; c < C; c++) {
			size_t dst = ((size_t)slot[r] * maxLen + pos[r]) * C + c;
			wk[dst] = qkv[(size_t)r * 3 * C + C + c];
			wv[dst] = qkv[(size_t)r * 3 * C + 2 * C + c];
		}
	for (int r = 0; r < n; r++)
		for (int h = 0; h < NH; h++) {
			int L = pos[r] + 1;
			std::vector<double> s(L);
			double mx = -INFINITY;
			for (int j = 0; j < L; j++) {
				double a = 0;
				for (int d = 0; d < hs; d++)
					a += (double)(qkv[(size_t)r * 3 * C + h * hs + d] * scale) * wk[((size_t)slot[r] * maxLen + j) * C + h * hs + d];
				s[j] = a;
				mx = std::max(mx, a);
			}
			double sum = 0;
			for (double &x : s) sum += (x = std::exp(x - mx));
			for (int d = 0; d < hs; d++) {
				double o = 0;
				for (int j = 0; j < L; j++) o += s[j] * wv[((size_t)slot[r] * maxLen + j) * C + h * hs + d];
				out[(size_t)r * C + h * hs + d] = o / sum;
			}
		}
	std::vector<float> gout((size_t)n * C, NAN);
	emu::launch(dim3e{(unsigned)elem_grid((long long)n * C)}, 256, decode_append, kc.data(), vc.data(), (const float *)qkv.data(),
	            (const int *)slot.data(), (const int *)pos.data(), n, C, maxLen);
	emu::launch(dim3e{(unsigned)n, (unsigned)NH}, 128, decode_attention, gout.data(), (const float *)qkv.data(),
	            (const float *)kc.data(), (const float *)vc.data(), (const int *)slot.data(), (const int *)pos.data(), n, C, NH,
	            maxLen, scale);
	char label[100];
	snprintf(label, sizeof label, "decode_append hs=%d: keys", hs);
	check(label, kc.data(), wk, 0);
	snprintf(label, sizeof label, "decode_append hs=%d: values", hs);
	check(label, vc.data(), wv, 0);
	snprintf(label, sizeof label, "decode_attention hs=%d NH=%d maxLen=%d", hs, NH, maxLen);
	check(label, gout.data(), out, 2e-5);
}

// ------------------------------------------------------- row-wise kernels

static void test_layernorm(int N, int C) {
	auto x = randv((size_t)N * C, 2.f), w = randv(C), bias = randv(C), dout = randv((size_t)N * C), dinp0 = randv((size_t)N * C);
	auto dw0 = randv(C), db0 = randv(C);
	std::vector<double> out((size_t)N * C), mean(N), rstd(N), dinp(dinp0.begin(), dinp0.end()), dw(dw0.begin(), dw0.end()),
	    db(db0.begin(), db0.end());
	for (int i = 0; i < N; i++) {
		double m = 0, v = 0;
		for (int c = 0; c < C; c++) m += x[(size_t)i * C + c];
		m /= C;
		for (int c = 0; c < C; c++) v += (x[(size_t)i * C + c] - m) * (x[(size_t)i * C + c] - m);
		double r = 1 / std::sqrt(v / C + 1e-5);
		mean[i] = m, rstd[i] = r;
		double sd = 0, sdn = 0;
		for (int c = 0; c < C; c++) {
			double nrm = (x[(size_t)i * C + c] - m) * r, g = dout[(size_t)i * C + c];
			out[(size_t)i * C + c] = nrm * w[c] + bias[c];
			sd += g * w[c];
			sdn += g * w[c] * nrm;
			dw[c] += nrm * g;
			db[c] += g;
		}
		for (int c = 0; c < C; c++) {
			double nrm = (x[(size_t)i * C + c] - m) * r;
			dinp[(size_t)i * C + c] += (dout[(size_t)i * C + c] * w[c] - sd / C - nrm * sdn / C) * r;
		}
	}
	std::vector<float> gout((size_t)N * C), gm(N), gr(N);
	emu::launch(dim3e{(unsigned)((N + 7) / 8)}, 256, layernorm_forward, gout.data(), gm.data(), gr.data(), (const float *)x.data(),
	            (const float *)w.data(), (const float *)bias.data(), N, C, 1e-5f);
	check("layernorm_forward out N=" + std::to_string(N) + " C=" + std::to_string(C), gout.data(), out, 1e-5);
	check("layernorm_forward mean", gm.data(), mean, 1e-5);
	check("layernorm_forward rstd", gr.data(), rstd, 1e-5);
	emu::launch(dim3e{(unsigned)((N + 7) / 8)}, 256, layernorm_backward_input, dinp0.data(), (const float *)dout.data(),
	            (const float *)x.data(), (const float *)w.data(), (const float *)gm.data(), (const float *)gr.data(), N, C);
	check("layernorm_backward_input", dinp0.data(), dinp, 1e-5);
	// Chunked parameter gradients, as Device.layerNormBackward launches them.
	int chunks = 3, rows = (N + chunks - 1) / chunks;
	chunks = (N + rows - 1) / rows;
	std::vector<float> part((size_t)chunks * 2 * C);
	unsigned gx = (C + 255) / 256;
	emu::launch(dim3e{gx, (unsigned)chunks}, 256, layernorm_backward_params_partial, part.data(), (const float *)dout.data(),
	            (const float *)x.data(), (const float *)gm.data(), (const float *)gr.data(), N, C, rows);
	emu::launch(dim3e{gx}, 256, column_sums_accumulate, dw0.data(), (const float *)part.data(), chunks, C, 2 * C);
	emu::launch(dim3e{gx}, 256, column_sums_accumulate, db0.data(), (const float *)part.data() + C, chunks, C, 2 * C);
	check("layernorm_backward_params dweight", dw0.data(), dw, 1e-5);
	check("layernorm_backward_params dbias", db0.data(), db, 1e-5);
}

static void test_crossentropy(int N, int V) {
	auto logits = randv((size_t)N * V, 3.f);
	auto targets = randi(N, V);
	targets[1] = -1;
	std::vector<double> loss(N), lse(N), dl((size_t)N * V);
	const float scale = 0.25f;
	for (int i = 0; i < N; i++) {
		double mx = -INFINITY, s = 0;
		for (int v = 0; v < V; v++) mx = std::max(mx, (double)logits[(size_t)i * V + v]);
		for (int v = 0; v < V; v++) s += std::exp(logits[(size_t)i * V + v] - mx);
		lse[i] = mx + std::log(s);
		loss[i] = targets[i] >= 0 ? lse[i] - logits[(size_t)i * V + targets[i]] : 0;
		for (int v = 0; v < V; v++)
			dl[(size_t)i * V + v] = targets[i] < 0 ? 0 : scale * (std::exp(logits[(size_t)i * V + v] - lse[i]) - (v == targets[i]));
	}
	std::vector<float> gl(N), glse(N);
	emu::launch(dim3e{(unsigned)N}, 256, crossentropy_forward, gl.data(), glse.data(), (const float *)logits.data(),
	            (const int *)targets.data(), N, V);
	check("crossentropy_forward losses V=" + std::to_string(V), gl.data(), loss, 1e-5);
	check("crossentropy_forward lse", glse.data(), lse, 1e-6);
	// In place, as the model runs it.
	emu::launch(dim3e{(unsigned)N}, 256, crossentropy_backward, logits.data(), (const float *)logits.data(), (const float *)glse.data(),
	            (const int *)targets.data(), scale, N, V);
	check("crossentropy_backward (in place)", logits.data(), dl, 1e-5);
}

static void test_argmax() {
	const int V = 1001, N = 5;
	std::vector<float> x = randv((size_t)N * V);
	std::vector<int> want(N);
	x[0 * V + 700] = 9.f, x[0 * V + 300] = 9.f; // tie: lowest index
	want[0] = 300;
	for (int v = 0; v < V; v++) x[1 * V + v] = NAN; // nothing finite
	want[1] = -1;
	x[2 * V + 5] = INFINITY, x[2 * V + 6] = NAN, x[2 * V + 999] = 50.f; // +inf and NaN skipped
	want[2] = 999;
	for (int v = 0; v < V; v++) x[3 * V + v] = -INFINITY;
	x[3 * V + 1000] = -1e30f;
	want[3] = 1000;
	want[4] = (int)(std::max_element(x.begin() + 4 * V, x.begin() + 5 * V) - (x.begin() + 4 * V));
	std::vector<int> got(N, -7);
	emu::launch(dim3e{(unsigned)N}, 256, argmax_rows, got.data(), (const float *)x.data(), N, V, (long long)V);
	check_int("argmax_rows (ties, NaN, infinities)", got, want);
}

// ---------------------------------------------------- element-wise kernels

static void test_elementwise() {
	const int B = 3, T = 5, C = 37, V = 11, P = 9, N = B * T;
	auto wte = randv((size_t)V * C), wpe = randv((size_t)P * C);
	std::vector<int> tok = randi(N, V), pos = randi(N, P);
	tok[1] = tok[4] = tok[7] = 2; // repeated tokens meet in dwte
	std::vector<double> enc((size_t)N * C), encp((size_t)N * C);
	for (int i = 0; i < N; i++)
		for (int c = 0; c < C; c++) {
			enc[(size_t)i * C + c] = wte[(size_t)tok[i] * C + c] + wpe[(size_t)(i % T) * C + c];
			encp[(size_t)i * C + c] = wte[(size_t)tok[i] * C + c] + wpe[(size_t)pos[i] * C + c];
		}
	std::vector<float> out((size_t)N * C);
	emu::launch(dim3e{(unsigned)elem_grid((long long)N * C)}, 256, encoder_forward, out.data(), (const int *)tok.data(),
	            (const int *)nullptr, T, (const float *)wte.data(), (const float *)wpe.data(), N, C);
	check("encoder_forward", out.data(), enc, 0);
	emu::launch(dim3e{(unsigned)elem_grid((long long)N * C)}, 256, encoder_forward, out.data(), (const int *)tok.data(),
	            (const int *)pos.data(), 1, (const float *)wte.data(), (const float *)wpe.data(), N, C);
	check("encoder_forward with positions (decode)", out.data(), encp, 0);

	auto dout = randv((size_t)N * C);
	auto dwte = randv((size_t)V * C), dwpe = randv((size_t)P * C);
	std::vector<double> wdwte(dwte.begin(), dwte.end()), wdwpe(dwpe.begin(), dwpe.end());
	for (int i = 0; i < N; i++)
		for (int c = 0; c < C; c++) {
			wdwte[(size_t)tok[i] * C + c] += dout[(size_t)i * C + c];
			wdwpe[(size_t)(i % T) * C + c] += dout[(size_t)i * C + c];
		}
	emu::launch(dim3e{(unsigned)elem_grid((long long)N * C)}, 256, encoder_backward_wte, dwte.data(), (const float *)dout.data(),
	            (const int *)tok.data(), N, C);
	emu::launch(dim3e{(unsigned)elem_grid((long long)T * C)}, 256, encoder_backward_wpe, dwpe.data(), (const float *)dout.data(), B,
	            T, C);
	check("encoder_backward_wte (atomics)", dwte.data(), wdwte, 1e-6);
	check("encoder_backward_wpe", dwpe.data(), wdwpe, 1e-6);

	const long long n = 3000;
	auto x = randv(n, 3.f), g = randv(n), y = randv(n);
	std::vector<double> gelu(n), dgelu(n), sum(n);
	for (long long i = 0; i < n; i++) {
		double v = x[i], u = 0.7978845608028654 * (v + 0.044715 * v * v * v);
		gelu[i] = 0.5 * v * (1 + std::tanh(u));
		double th = std::tanh(u), du = 0.7978845608028654 * (1 + 3 * 0.044715 * v * v);
		dgelu[i] = (0.5 * (1 + th) + 0.5 * v * (1 - th * th) * du) * g[i];
		sum[i] = x[i] + y[i]; // in float, as the kernel adds
	}
	std::vector<float> o(n);
	emu::launch(dim3e{(unsigned)elem_grid(n)}, 256, gelu_forward, o.data(), (const float *)x.data(), n);
	check("gelu_forward", o.data(), gelu, 1e-6);
	std::vector<float> gg(g);
	emu::launch(dim3e{(unsigned)elem_grid(n)}, 256, gelu_backward, gg.data(), (const float *)x.data(), (const float *)gg.data(), n);
	check("gelu_backward (in place)", gg.data(), dgelu, 1e-5);
	emu::launch(dim3e{(unsigned)elem_grid(n)}, 256, residual_forward, o.data(), (const float *)x.data(), (const float *)y.data(), n);
	check("residual_forward", o.data(), sum, 0);
	std::vector<double> scaled(x.begin(), x.end());
	for (auto &v : scaled) v *= 0.3f;
	std::vector<float> xs(x);
	emu::launch(dim3e{(unsigned)elem_grid(n)}, 256, scale_inplace, xs.data(), 0.3f, n);
	check("scale_inplace", xs.data(), scaled, 1e-7);

	// AdamW, the arithmetic of model/internal/vec.AdamW.
	auto p = randv(n), m = randv(n, 0.1f), v2 = randv(n, 0.1f);
	for (auto &e : v2) e = e * e;
	std::vector<double> wp(n), wm(n), wv(n);
	const float lr = 1e-3f, b1 = 0.9f, b2 = 0.999f, eps = 1e-8f, decay = 1 - lr * 0.1f, ib1 = 1 / (1 - 0.9f * 0.9f),
	            ib2 = 1 / (1 - 0.999f * 0.999f);
	for (long long i = 0; i < n; i++) {
		float mi = b1 * m[i] + (1 - b1) * g[i], vi = b2 * v2[i] + (1 - b2) * g[i] * g[i];
		wm[i] = mi, wv[i] = vi;
		wp[i] = p[i] * decay - lr * (mi * ib1) / (std::sqrt(vi * ib2) + eps);
	}
	emu::launch(dim3e{(unsigned)elem_grid(n)}, 256, adamw_update, p.data(), (const float *)g.data(), m.data(), v2.data(), n, lr, b1, b2,
	            eps, decay, ib1, ib2);
	check("adamw_update params", p.data(), wp, 1e-6);
	check("adamw_update m", m.data(), wm, 1e-6);
	check("adamw_update v", v2.data(), wv, 1e-6);

	// Sum of squares over a length no block count divides.
	const long long ns = 100003;
	auto big = randv(ns);
	double ss = 0;
	for (float e : big) ss += (double)e * e;
	int blocks = (int)std::min((ns + 255) / 256, (long long)sms * 8);
	std::vector<double> partial(blocks), res(1);
	emu::launch(dim3e{(unsigned)blocks}, 256, sumsq_partial, partial.data(), (const float *)big.data(), ns);
	emu::launch(dim3e{1}, 32, sum_doubles, res.data(), (const double *)partial.data(), blocks);
	float got = (float)res[0];
	check("sumsq_partial + sum_doubles", &got, std::vector<double>{ss}, 1e-6);

	// Column sums (the bias gradients), chunked.
	const int R = 70, W = 300;
	auto xm = randv((size_t)R * W), acc = randv(W);
	std::vector<double> cs(acc.begin(), acc.end());
	for (int r = 0; r < R; r++)
		for (int c = 0; c < W; c++) cs[c] += xm[(size_t)r * W + c];
	int chunks = 4, rows = (R + chunks - 1) / chunks;
	std::vector<float> part((size_t)chunks * W);
	unsigned gx = (W + 255) / 256;
	emu::launch(dim3e{gx, (unsigned)chunks}, 256, column_sums_partial, part.data(), (const float *)xm.data(), R, W, rows);
	emu::launch(dim3e{gx}, 256, column_sums_accumulate, acc.data(), (const float *)part.data(), chunks, W, W);
	check("column_sums_partial + accumulate", acc.data(), cs, 1e-6);

	// Gather of finishing rows.
	std::vector<int> idx = {4, 0, 9};
	std::vector<double> gw(idx.size() * C);
	for (size_t i = 0; i < idx.size(); i++)
		for (int c = 0; c < C; c++) gw[i * C + c] = enc[(size_t)idx[i] * C + c];
	std::vector<float> encf(enc.begin(), enc.end()), gd(idx.size() * C);
	emu::launch(dim3e{(unsigned)elem_grid((long long)idx.size() * C)}, 256, gather_rows, gd.data(), (const float *)encf.data(),
	            (const int *)idx.data(), (int)idx.size(), C);
	check("gather_rows", gd.data(), gw, 0);
}

int main(int argc, char **argv) {
	bool quick = argc > 1 && std::string(argv[1]) == "--quick";
	test_elementwise();
	test_layernorm(19, 77);
	test_layernorm(8, 1030);
	test_crossentropy(6, 1003);
	test_argmax();
	gemm_tests();
	test_attention(2, 70, 3, 32);
	test_attention(1, 70, 2, 48);
	test_attention(2, 67, 2, 64);
	test_attention(1, 40, 1, 128);
	if (!quick) test_attention(1, 150, 2, 64);
	test_decode(4, 72, 2, 32);
	test_decode(4, 200, 3, 64);
	test_decode(5, 50, 1, 128);
	printf("%d passed, %d failed\n", passed, failed);
	return failed ? 1 : 0;
}
