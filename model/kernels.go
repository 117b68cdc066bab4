package model

// Kernels is the explicit list of operations a GPT-2 forward pass, backward
// pass, KV-cache decode step and optimizer step are made of, in the manner
// of llm.c: the Model is plain code that calls these in order, and a backend
// (CPU here, CUDA in gpu/) supplies the arithmetic. Every tensor is a dense
// row-major float32 slice; shapes are given by the integer arguments.
//
// Conventions, shared by every implementation:
//   - B batch, T time steps, C channels, OC output channels, NH heads,
//     V vocabulary, N = B*T rows; hs = C/NH.
//   - Linear weights are stored (in, out) like Hugging Face's Conv1D, so a
//     forward product is inp[N,C] @ weight[C,OC].
//   - "writes" overwrites the output; "accumulates" adds into it, so
//     parameter gradients can be summed over micro-batches and over the two
//     uses of the tied embedding.
//   - Slices may be longer than the shape needs; only the prefix is used.
//   - Implementations must be safe for concurrent calls on disjoint outputs:
//     two models may run on one backend from different goroutines.
type Kernels interface {
	// Name identifies the backend in logs and benchmarks ("cpu", "cuda").
	Name() string

	// EncoderForward writes out[b,t,:] = wte[tokens[b,t],:] + wpe[t,:].
	EncoderForward(out []float32, tokens []int32, wte, wpe []float32, B, T, C int)
	// EncoderBackward accumulates dout into the rows of dwte and dwpe that
	// the forward read.
	EncoderBackward(dwte, dwpe, dout []float32, tokens []int32, B, T, C int)
	// EmbedAt is EncoderForward for N rows with explicit positions, as
	// decoding needs: out[i,:] = wte[tokens[i],:] + wpe[pos[i],:].
	EmbedAt(out []float32, tokens, pos []int32, wte, wpe []float32, N, C int)

	// LayerNormForward writes out = (inp-mean)*rstd*weight + bias per row of
	// C and, when mean and rstd are non-nil, saves them ([N]) for backward.
	LayerNormForward(out, mean, rstd, inp, weight, bias []float32, N, C int, eps float32)
	// LayerNormBackward accumulates into dinp, dweight and dbias.
	LayerNormBackward(dinp, dweight, dbias, dout, inp, weight, mean, rstd []float32, N, C int)

	// MatmulForward writes out[N,OC] = inp[N,C] @ weight[C,OC] + bias[OC]
	// (bias may be nil).
	MatmulForward(out, inp, weight, bias []float32, N, C, OC int)
	// MatmulBackward writes dinp[N,C] = dout @ weightᵀ (skipped when dinp is
	// nil) and accumulates dweight += inpᵀ @ dout and dbias += Σ_rows dout
	// (skipped when nil).
	MatmulBackward(dinp, dweight, dbias, dout, inp, weight []float32, N, C, OC int)
	// MatmulTransposedForward writes out[N,OC] = inp[N,C] @ weight[OC,C]ᵀ:
	// the language-model head, whose weight is the tied token embedding.
	MatmulTransposedForward(out, inp, weight []float32, N, C, OC int)
	// MatmulTransposedBackward writes dinp = dout @ weight and accumulates
	// dweight[OC,C] += doutᵀ @ inp.
	MatmulTransposedBackward(dinp, dweight, dout, inp, weight []float32, N, C, OC int)

	// AttentionForward is causal multi-head self-attention. qkv is [B,T,3C]
	// (query, key, value blocks of C, each split into NH heads of hs). It
	// writes out[B,T,C] and the attention probabilities att[B,NH,T,T]
	// (zero above the diagonal), which the backward pass reuses.
	AttentionForward(out, att, qkv []float32, B, T, C, NH int)
	// AttentionBackward writes dqkv[B,T,3C]; datt[B,NH,T,T] is scratch.
	AttentionBackward(dqkv, datt, dout, qkv, att []float32, B, T, C, NH int)
	// AttentionDecode appends the keys and values of the new rows of qkv to
	// the caches and attends each new query to everything cached for its
	// sequence. See DecodeSpan for the layout; scratch must hold
	// DecodeScratchLen(maxLen) floats per participant of ScratchParts().
	AttentionDecode(out, qkv, kCache, vCache []float32, spans []DecodeSpan, C, NH, maxLen int, scratch []float32)

	// GELUForward writes out = gelu(inp) (tanh approximation); out may alias inp.
	GELUForward(out, inp []float32, N int)
	// GELUBackward writes dinp = gelu'(inp) * dout; dinp may alias dout.
	GELUBackward(dinp, inp, dout []float32, N int)
	// ResidualForward writes out = inp1 + inp2; out may alias either input.
	ResidualForward(out, inp1, inp2 []float32, N int)

	// SoftmaxCrossEntropyForward takes logits[N,V] and writes, per row, the
	// log-sum-exp lse[i] and the loss losses[i] = lse[i] - logits[i,t] for
	// target t; a negative target marks an ignored row (loss 0).
	SoftmaxCrossEntropyForward(losses, lse, logits []float32, targets []int32, N, V int)
	// SoftmaxCrossEntropyBackward writes dlogits = scale*(softmax - onehot)
	// using the saved lse; ignored rows get zeros. dlogits may alias logits.
	SoftmaxCrossEntropyBackward(dlogits, logits, lse []float32, targets []int32, scale float32, N, V int)

	// AdamWUpdate applies one AdamW step (decoupled weight decay, bias
	// correction with the 1-based step t) to params, updating m and v.
	AdamWUpdate(params, grads, m, v []float32, lr, beta1, beta2, eps, weightDecay float32, t int)
	// SumSquares returns Σ x² accumulated in float64.
	SumSquares(x []float32) float64
	// Scale multiplies x by s in place.
	Scale(x []float32, s float32)

	// ScratchParts is how many private scratch areas AttentionDecode may
	// use at once.
	ScratchParts() int
}

// DecodeSpan describes the new tokens of one sequence in a decode step.
// Rows Start..Start+Count-1 of the packed qkv/out buffers belong to cache
// slot Slot, whose first Pos positions are already cached. The caches are
// [slots, maxLen, C] for one layer.
type DecodeSpan struct {
	Slot, Start, Count, Pos int
}

// decodeQueryTile bounds the query rows attended at once in decode, so the
// score scratch stays at decodeQueryTile*maxLen floats however long a
// prompt is.
const decodeQueryTile = 64

// DecodeScratchLen is the per-participant scratch AttentionDecode needs.
func DecodeScratchLen(maxLen int) int { return decodeQueryTile * maxLen }
