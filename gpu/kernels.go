//go:build cuda

package gpu

import (
	"math"

	"gorgonia.org/cu"
)

// kernel names one CUDA kernel of kernels/*.cu.
type kernel int

const (
	kEncoderForward kernel = iota
	kEncoderBackwardWTE
	kEncoderBackwardWPE
	kGELUForward
	kGELUBackward
	kResidualForward
	kScale
	kAdamW
	kSumSqPartial
	kSumDoubles
	kColumnSumsPartial
	kColumnSumsAccumulate
	kGatherRows
	kLayerNormForward
	kLayerNormBackwardInput
	kLayerNormBackwardParams
	kCrossEntropyForward
	kCrossEntropyBackward
	kArgmaxRows
	kGemmTF32NN
	kGemmTF32NT
	kGemmTF32TN
	kGemmF32NN
	kGemmF32NT
	kGemmF32TN
	kGemmSplitKReduce
	kGemmSkinnyNN
	kGemmSkinnyNT
	kAttentionForward32
	kAttentionForward64
	kAttentionForward128
	kAttentionBackwardD
	kAttentionBackwardDKDV32
	kAttentionBackwardDKDV64
	kAttentionBackwardDKDV128
	kAttentionBackwardDQ32
	kAttentionBackwardDQ64
	kAttentionBackwardDQ128
	kDecodeAppend
	kDecodeAttention
	numKernels
)

var kernelNames = [numKernels]string{
	kEncoderForward:           "encoder_forward",
	kEncoderBackwardWTE:       "encoder_backward_wte",
	kEncoderBackwardWPE:       "encoder_backward_wpe",
	kGELUForward:              "gelu_forward",
	kGELUBackward:             "gelu_backward",
	kResidualForward:          "residual_forward",
	kScale:                    "scale_inplace",
	kAdamW:                    "adamw_update",
	kSumSqPartial:             "sumsq_partial",
	kSumDoubles:               "sum_doubles",
	kColumnSumsPartial:        "column_sums_partial",
	kColumnSumsAccumulate:     "column_sums_accumulate",
	kGatherRows:               "gather_rows",
	kLayerNormForward:         "layernorm_forward",
	kLayerNormBackwardInput:   "layernorm_backward_input",
	kLayerNormBackwardParams:  "layernorm_backward_params_partial",
	kCrossEntropyForward:      "crossentropy_forward",
	kCrossEntropyBackward:     "crossentropy_backward",
	kArgmaxRows:               "argmax_rows",
	kGemmTF32NN:               "gemm_tf32_nn",
	kGemmTF32NT:               "gemm_tf32_nt",
	kGemmTF32TN:               "gemm_tf32_tn",
	kGemmF32NN:                "gemm_f32_nn",
	kGemmF32NT:                "gemm_f32_nt",
	kGemmF32TN:                "gemm_f32_tn",
	kGemmSplitKReduce:         "gemm_splitk_reduce",
	kGemmSkinnyNN:             "gemm_skinny_nn",
	kGemmSkinnyNT:             "gemm_skinny_nt",
	kAttentionForward32:       "attention_forward_hs32",
	kAttentionForward64:       "attention_forward_hs64",
	kAttentionForward128:      "attention_forward_hs128",
	kAttentionBackwardD:       "attention_backward_d",
	kAttentionBackwardDKDV32:  "attention_backward_dkdv_hs32",
	kAttentionBackwardDKDV64:  "attention_backward_dkdv_hs64",
	kAttentionBackwardDKDV128: "attention_backward_dkdv_hs128",
	kAttentionBackwardDQ32:    "attention_backward_dq_hs32",
	kAttentionBackwardDQ64:    "attention_backward_dq_hs64",
	kAttentionBackwardDQ128:   "attention_backward_dq_hs128",
	kDecodeAppend:             "decode_append",
	kDecodeAttention:          "decode_attention",
}

// The launch shapes below must agree with the kernels' assumptions, noted
// where they are made in kernels/*.cu.
const (
	elemBlock  = 256 // grid-stride element-wise kernels
	rowBlock   = 256 // block-per-row kernels (loss, argmax); a multiple of 32
	warpRows   = 8   // warp-per-row kernels: 8 rows per 256-thread block
	gemmTile   = 128 // GEMM_BM = GEMM_BN
	gemmBlock  = 256 // GEMM_THREADS
	skinnyM    = 16  // SKINNY_M: rows the skinny products hold in registers
	skinnyK    = 64  // SKINNY_K: their K step
	attnRows   = 64  // attn_cfg::ROWS
	decodeWarp = 128 // decode_attention: 4 warps
	sumsqBlock = 256 // sumsq_partial's shared scratch holds 8 warps
)

func ceilDiv(a, b int64) int64 { return (a + b - 1) / b }

// elemGrid is the grid of a grid-stride kernel over n elements: enough
// blocks to fill the GPU a few times over, no more.
func (d *Device) elemGrid(n int64) int {
	return int(min(ceilDiv(n, elemBlock), int64(d.sms)*16))
}

func (d *Device) encoderForward(out, tokens, pos cu.DevicePtr, T int, wte, wpe cu.DevicePtr, N, C int) {
	n := int64(N) * int64(C)
	d.run(kEncoderForward, d.elemGrid(n), 1, 1, elemBlock, p(out), p(tokens), p(pos), i32(T), p(wte), p(wpe), i32(N), i32(C))
}

func (d *Device) encoderBackward(dwte, dwpe, dout, tokens cu.DevicePtr, B, T, C int) {
	n := int64(B) * int64(T) * int64(C)
	d.run(kEncoderBackwardWTE, d.elemGrid(n), 1, 1, elemBlock, p(dwte), p(dout), p(tokens), i32(B*T), i32(C))
	d.run(kEncoderBackwardWPE, d.elemGrid(int64(T)*int64(C)), 1, 1, elemBlock, p(dwpe), p(dout), i32(B), i32(T), i32(C))
}

func (d *Device) geluForward(out, inp cu.DevicePtr, n int64) {
	d.run(kGELUForward, d.elemGrid(n), 1, 1, elemBlock, p(out), p(inp), i64(n))
}

func (d *Device) geluBackward(dinp, inp, dout cu.DevicePtr, n int64) {
	d.run(kGELUBackward, d.elemGrid(n), 1, 1, elemBlock, p(dinp), p(inp), p(dout), i64(n))
}

func (d *Device) residualForward(out, a, b cu.DevicePtr, n int64) {
	d.run(kResidualForward, d.elemGrid(n), 1, 1, elemBlock, p(out), p(a), p(b), i64(n))
}

func (d *Device) scale(x cu.DevicePtr, s float32, n int64) {
	d.run(kScale, d.elemGrid(n), 1, 1, elemBlock, p(x), f32(s), i64(n))
}

// adamw is one AdamW step over n parameters; the arguments are those of
// model/internal/vec.Adam.
func (d *Device) adamw(params, grads, m, v cu.DevicePtr, n int64, lr, beta1, beta2, eps, decay, invbc1, invbc2 float32) {
	d.run(kAdamW, d.elemGrid(n), 1, 1, elemBlock, p(params), p(grads), p(m), p(v), i64(n),
		f32(lr), f32(beta1), f32(beta2), f32(eps), f32(decay), f32(invbc1), f32(invbc2))
}

// sumSquares queues Σx² (float64) into the first 8 bytes of d.sumsq; read
// it with readSumSquares after sync.
func (d *Device) sumSquares(x cu.DevicePtr, n int64) {
	blocks := int(min(ceilDiv(n, sumsqBlock), int64(d.sms)*8))
	// float64 partials plus the result, counted in 4-byte elements.
	if !d.grow(&d.sumsq, 2*int64(blocks+1), "sum-of-squares workspace") {
		return
	}
	partial := at(d.sumsq.ptr, 2)
	d.run(kSumSqPartial, blocks, 1, 1, sumsqBlock, p(partial), p(x), i64(n))
	d.run(kSumDoubles, 1, 1, 1, 32, p(d.sumsq.ptr), p(partial), i32(blocks))
}

// columnChunks splits N rows into chunks for the two-pass column sums:
// enough blocks to fill the GPU, at least 32 rows each.
func (d *Device) columnChunks(N, W int) (chunks, rowsPerChunk int) {
	colBlocks := int(ceilDiv(int64(W), elemBlock))
	chunks = max(1, min(N/32, 4*d.sms/max(1, colBlocks), 256))
	rowsPerChunk = int(ceilDiv(int64(N), int64(chunks)))
	chunks = int(ceilDiv(int64(N), int64(rowsPerChunk)))
	return chunks, rowsPerChunk
}

// columnSums adds the column sums of x [N, W] into out [W].
func (d *Device) columnSums(out, x cu.DevicePtr, N, W int) {
	chunks, rows := d.columnChunks(N, W)
	if !d.grow(&d.colsum, int64(chunks)*int64(W), "column-sum workspace") {
		return
	}
	gx := int(ceilDiv(int64(W), elemBlock))
	d.run(kColumnSumsPartial, gx, chunks, 1, elemBlock, p(d.colsum.ptr), p(x), i32(N), i32(W), i32(rows))
	d.run(kColumnSumsAccumulate, gx, 1, 1, elemBlock, p(out), p(d.colsum.ptr), i32(chunks), i32(W), i32(W))
}

func (d *Device) gatherRows(dst, src, idx cu.DevicePtr, n, C int) {
	d.run(kGatherRows, d.elemGrid(int64(n)*int64(C)), 1, 1, elemBlock, p(dst), p(src), p(idx), i32(n), i32(C))
}

// layerNormForward: mean and rstd may be 0 (not saved).
func (d *Device) layerNormForward(out, mean, rstd, inp, weight, bias cu.DevicePtr, N, C int, eps float32) {
	d.run(kLayerNormForward, int(ceilDiv(int64(N), warpRows)), 1, 1, 32*warpRows,
		p(out), p(mean), p(rstd), p(inp), p(weight), p(bias), i32(N), i32(C), f32(eps))
}

// layerNormBackward accumulates into dinp, dweight and dbias.
func (d *Device) layerNormBackward(dinp, dweight, dbias, dout, inp, weight, mean, rstd cu.DevicePtr, N, C int) {
	d.run(kLayerNormBackwardInput, int(ceilDiv(int64(N), warpRows)), 1, 1, 32*warpRows,
		p(dinp), p(dout), p(inp), p(weight), p(mean), p(rstd), i32(N), i32(C))
	chunks, rows := d.columnChunks(N, C)
	if !d.grow(&d.colsum, int64(chunks)*2*int64(C), "column-sum workspace") {
		return
	}
	gx := int(ceilDiv(int64(C), elemBlock))
	d.run(kLayerNormBackwardParams, gx, chunks, 1, elemBlock, p(d.colsum.ptr), p(dout), p(inp), p(mean), p(rstd), i32(N), i32(C), i32(rows))
	d.run(kColumnSumsAccumulate, gx, 1, 1, elemBlock, p(dweight), p(d.colsum.ptr), i32(chunks), i32(C), i32(2*C))
	d.run(kColumnSumsAccumulate, gx, 1, 1, elemBlock, p(dbias), p(at(d.colsum.ptr, int64(C))), i32(chunks), i32(C), i32(2*C))
}

func (d *Device) crossEntropyForward(losses, lse, logits, targets cu.DevicePtr, N, V int) {
	d.run(kCrossEntropyForward, N, 1, 1, rowBlock, p(losses), p(lse), p(logits), p(targets), i32(N), i32(V))
}

func (d *Device) crossEntropyBackward(dlogits, logits, lse, targets cu.DevicePtr, scale float32, N, V int) {
	d.run(kCrossEntropyBackward, N, 1, 1, rowBlock, p(dlogits), p(logits), p(lse), p(targets), f32(scale), i32(N), i32(V))
}

// argmaxRows writes into out[i] the greedy token of row i of logits.
func (d *Device) argmaxRows(out, logits cu.DevicePtr, N, V int, rowStride int64) {
	d.run(kArgmaxRows, N, 1, 1, rowBlock, p(out), p(logits), i32(N), i32(V), i64(rowStride))
}

// gemm layouts: which operands are stored transposed.
type gemmOp int

const (
	opNN gemmOp = iota // A [M,K], B [K,N]
	opNT               // A [M,K], B stored [N,K]
	opTN               // A stored [K,M], B [K,N]
)

// gemm computes C[M,N] = alpha * op(A) @ op(B) + beta*C + bias (bias may
// be 0), at the device's precision. Products of at most 16 rows (decode
// steps) take the skinny kernels, which stream the weights at full width
// in FP32; small grids are split along K so the GPU has enough blocks,
// with partial products summed in a fixed order.
func (d *Device) gemm(op gemmOp, M, N, K int, A cu.DevicePtr, lda int, B cu.DevicePtr, ldb int, C cu.DevicePtr, ldc int,
	bias cu.DevicePtr, alpha, beta float32) {
	if M == 0 || N == 0 {
		return
	}
	if M <= skinnyM && op == opNT {
		d.run(kGemmSkinnyNT, int(ceilDiv(int64(N), warpRows)), 1, 1, 32*warpRows, p(C), p(A), p(B), p(bias),
			i32(M), i32(N), i32(K), i32(lda), i32(ldb), i32(ldc), f32(alpha), f32(beta))
		return
	}
	k := [2][3]kernel{
		{kGemmF32NN, kGemmF32NT, kGemmF32TN},
		{kGemmTF32NN, kGemmTF32NT, kGemmTF32TN},
	}[d.opts.Precision][op]
	gx, gy := int(ceilDiv(int64(N), gemmTile)), int(ceilDiv(int64(M), gemmTile))
	step := 16 // GEMM_BK
	if M <= skinnyM && op == opNN {
		k, gx, gy, step = kGemmSkinnyNN, int(ceilDiv(int64(N), gemmBlock)), 1, skinnyK
	}
	splits := splitK(gx*gy, K, d.sms, int64(M)*int64(N))
	if splits == 1 {
		d.run(k, gx, gy, 1, gemmBlock, p(C), p(A), p(B), p(bias), 0, i32(M), i32(N), i32(K),
			i32(lda), i32(ldb), i32(ldc), f32(alpha), f32(beta), i32(K))
		return
	}
	chunk := int(ceilDiv(int64(K), int64(splits)))
	chunk = (chunk + step - 1) / step * step // whole K steps per split
	splits = int(ceilDiv(int64(K), int64(chunk)))
	if !d.grow(&d.splitK, int64(splits)*int64(M)*int64(N), "split-K workspace") {
		return
	}
	if k == kGemmSkinnyNN {
		// The skinny kernel splits K along y.
		d.run(k, gx, splits, 1, gemmBlock, p(C), p(A), p(B), 0, p(d.splitK.ptr), i32(M), i32(N), i32(K),
			i32(lda), i32(ldb), i32(ldc), f32(1), f32(0), i32(chunk))
	} else {
		d.run(k, gx, gy, splits, gemmBlock, p(C), p(A), p(B), 0, p(d.splitK.ptr), i32(M), i32(N), i32(K),
			i32(lda), i32(ldb), i32(ldc), f32(1), f32(0), i32(chunk))
	}
	d.run(kGemmSplitKReduce, d.elemGrid(int64(M)*int64(N)), 1, 1, elemBlock, p(C), p(d.splitK.ptr), p(bias),
		i32(M), i32(N), i32(ldc), i32(splits), f32(alpha), f32(beta))
}

// maxSplitKFloats bounds the split-K workspace (256 MiB).
const maxSplitKFloats = 64 << 20

// splitK picks how many K ranges a product of `blocks` blocks is cut
// into: none when the blocks already fill the GPU twice or K is short,
// else enough for about four blocks per multiprocessor (more loads in
// flight for the weight-bound decode products), each range at least 128
// deep, the partials within maxSplitKFloats.
func splitK(blocks, K, sms int, mn int64) int {
	if blocks >= 2*sms || K < 256 {
		return 1
	}
	s := min(int(ceilDiv(int64(4*sms), int64(blocks))), K/128, 32)
	if lim := int(maxSplitKFloats / max(mn, 1)); s > lim {
		s = lim
	}
	return max(s, 1)
}

// matmulForward: out[N,OC] = inp[N,C] @ weight[C,OC] + bias.
func (d *Device) matmulForward(out, inp, weight, bias cu.DevicePtr, N, C, OC int) {
	d.gemm(opNN, N, OC, C, inp, C, weight, OC, out, OC, bias, 1, 0)
}

// matmulBackward: dinp = dout @ weightᵀ (skipped when dinp is 0),
// dweight += inpᵀ @ dout, dbias += column sums of dout (when not 0).
func (d *Device) matmulBackward(dinp, dweight, dbias, dout, inp, weight cu.DevicePtr, N, C, OC int) {
	if dinp != 0 {
		d.gemm(opNT, N, C, OC, dout, OC, weight, OC, dinp, C, 0, 1, 0)
	}
	d.gemm(opTN, C, OC, N, inp, C, dout, OC, dweight, OC, 0, 1, 1)
	if dbias != 0 {
		d.columnSums(dbias, dout, N, OC)
	}
}

// matmulTransposedForward: out[N,V] = inp[N,C] @ weight[V,C]ᵀ (the head).
func (d *Device) matmulTransposedForward(out, inp, weight cu.DevicePtr, N, C, V int) {
	d.gemm(opNT, N, V, C, inp, C, weight, C, out, V, 0, 1, 0)
}

// matmulTransposedBackward: dinp = dout @ weight, dweight += doutᵀ @ inp.
func (d *Device) matmulTransposedBackward(dinp, dweight, dout, inp, weight cu.DevicePtr, N, C, V int) {
	d.gemm(opNN, N, C, V, dout, V, weight, C, dinp, C, 0, 1, 0)
	d.gemm(opTN, V, C, N, dout, V, inp, C, dweight, C, 0, 1, 1)
}

// attnKernels picks the attention kernels for a head size (<= 128): the
// register layouts come in 32, 64 and 128 dimensions.
func attnKernels(hs int) (fwd, dkdv, dq kernel, threads int) {
	switch {
	case hs <= 32:
		return kAttentionForward32, kAttentionBackwardDKDV32, kAttentionBackwardDQ32, attnRows
	case hs <= 64:
		return kAttentionForward64, kAttentionBackwardDKDV64, kAttentionBackwardDQ64, 2 * attnRows
	default:
		return kAttentionForward128, kAttentionBackwardDKDV128, kAttentionBackwardDQ128, 4 * attnRows
	}
}

// attentionScale is 1/sqrt(hs) rounded once, as the CPU computes it.
func attentionScale(hs int) float32 { return float32(1 / math.Sqrt(float64(hs))) }

// attentionForward: out [B,T,C] and lse [B,NH,T] from qkv [B,T,3C].
func (d *Device) attentionForward(out, lse, qkv cu.DevicePtr, B, T, C, NH int) {
	hs := C / NH
	fwd, _, _, threads := attnKernels(hs)
	d.run(fwd, int(ceilDiv(int64(T), attnRows)), B*NH, 1, threads,
		p(out), p(lse), p(qkv), i32(B), i32(T), i32(C), i32(NH), f32(attentionScale(hs)))
}

// attentionBackward writes dqkv [B,T,3C] from dout [B,T,C]; out is the
// forward's output, lse its log-sum-exps, D [B,NH,T] scratch.
func (d *Device) attentionBackward(dqkv, dout, qkv, out, lse, D cu.DevicePtr, B, T, C, NH int) {
	hs := C / NH
	_, dkdv, dq, threads := attnKernels(hs)
	warps := int64(B) * int64(T) * int64(NH)
	d.run(kAttentionBackwardD, int(ceilDiv(warps, warpRows)), 1, 1, 32*warpRows, p(D), p(out), p(dout), i32(B), i32(T), i32(C), i32(NH))
	gx := int(ceilDiv(int64(T), attnRows))
	args := []uint64{p(dqkv), p(qkv), p(dout), p(lse), p(D), i32(B), i32(T), i32(C), i32(NH), f32(attentionScale(hs))}
	d.run(dkdv, gx, B*NH, 1, threads, args...)
	d.run(dq, gx, B*NH, 1, threads, args...)
}

// decodeAttention appends the n new rows' keys and values to one layer's
// caches and attends each new query to its slot's cached positions.
// meta holds row_slot [n] then row_pos [n] (int32).
func (d *Device) decodeAttention(out, qkv, kc, vc, rowSlot, rowPos cu.DevicePtr, n, C, NH, maxLen int) {
	d.run(kDecodeAppend, d.elemGrid(int64(n)*int64(C)), 1, 1, elemBlock, p(kc), p(vc), p(qkv), p(rowSlot), p(rowPos), i32(n), i32(C), i32(maxLen))
	d.run(kDecodeAttention, n, NH, 1, decodeWarp, p(out), p(qkv), p(kc), p(vc), p(rowSlot), p(rowPos),
		i32(n), i32(C), i32(NH), i32(maxLen), f32(attentionScale(C/NH)))
}
