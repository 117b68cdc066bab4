package model

import (
	"fmt"
	"math"
)

// Embedding caches: EmbedAll sizes one cache for a group of inputs so that
// it holds at most about embedCacheTokens tokens (for GPT-2 124M, 2048
// tokens of keys and values are 150 MB) and at most embedMaxRows rows (each
// row also costs a [V] logits row that embedding never fills).
const (
	embedCacheTokens = 2048
	embedMaxRows     = 64
)

// Embed returns one vector [C] per row of inputs: the output of the final
// LayerNorm (the hidden state the language-model head reads) for every
// token of the row, averaged over the row's tokens, then scaled to unit
// length (L2), as OpenAI's embeddings are. A row whose average is zero
// (possible only with degenerate weights) gives a zero vector.
//
// Mean pooling, not the last token's state: in a causal decoder only the
// last token has seen the whole text, but its state is shaped to predict
// the next token, so texts that would continue alike embed alike whatever
// they say. The mean over every token weighs the whole text, is robust to
// how a text ends, and is the usual choice for decoder models without an
// embedding head. Pooling after the final LayerNorm gives every token the
// same scale, so no token (GPT-2's first, whose residual stream is far
// larger than the others') dominates the mean.
//
// Embed empties c first and prefills every row through the Decode path
// (c's own scratch, not the activations Forward keeps in the model), so it
// may run concurrently with Decode and other Embeds on other caches. Rows
// must be non-empty and fit c (len(inputs) <= c.Batch(), each at most
// c.MaxLen() tokens).
func (m *Model) Embed(c *KVCache, inputs [][]int32) ([][]float32, error) {
	for i, row := range inputs {
		if len(row) == 0 {
			return nil, fmt.Errorf("embed: row %d is empty", i)
		}
	}
	if c != nil {
		c.Reset()
	}
	pv, err := m.checkRows(c, inputs, "embed")
	if err != nil {
		return nil, err
	}
	cfg := m.Config
	C := cfg.NEmbd
	sums := make([][]float64, len(inputs))
	for i := range sums {
		sums[i] = make([]float64, C)
	}
	clear(c.done)
	for {
		n := c.pack(inputs)
		if n == 0 {
			break
		}
		m.decodePass(c, &pv, n)
		// The blocks are done with c.ln and its statistics: reuse them
		// for the final LayerNorm of every token of the pass.
		m.Kernels.LayerNormForward(c.ln, c.mean, c.rstd, c.x, pv[pLNFW], pv[pLNFB], n, C, cfg.LayerNormEpsilon)
		for _, s := range c.spans {
			sum := sums[s.Slot]
			for r := s.Start; r < s.Start+s.Count; r++ {
				for j, v := range c.ln[r*C : (r+1)*C] {
					sum[j] += float64(v)
				}
			}
		}
		c.advance()
	}
	out := make([][]float32, len(inputs))
	for i, sum := range sums {
		out[i] = unitMean(sum, len(inputs[i]))
	}
	return out, nil
}

// unitMean is sum/n scaled to unit L2 length, as float32 (zero when the
// mean is zero).
func unitMean(sum []float64, n int) []float32 {
	var norm float64
	for j := range sum {
		sum[j] /= float64(n)
		norm += sum[j] * sum[j]
	}
	v := make([]float32, len(sum))
	if norm = math.Sqrt(norm); norm == 0 {
		return v
	}
	for j, x := range sum {
		v[j] = float32(x / norm)
	}
	return v
}

// EmbedAll embeds every input with Embed, in order, through one KV cache
// sized for the longest input and reused group after group, so memory stays
// bounded however many inputs there are. Every input must be non-empty,
// within n_positions and the vocabulary; the error names the first that is
// not by its index.
func (m *Model) EmbedAll(inputs [][]int32) ([][]float32, error) {
	maxLen := 0
	for i, in := range inputs {
		switch {
		case len(in) == 0:
			return nil, fmt.Errorf("embed: input %d is empty", i)
		case len(in) > m.Config.NPositions:
			return nil, fmt.Errorf("embed: input %d has %d tokens, n_positions=%d", i, len(in), m.Config.NPositions)
		}
		maxLen = max(maxLen, len(in))
	}
	if len(inputs) == 0 {
		return nil, nil
	}
	rows := min(len(inputs), embedMaxRows, max(1, embedCacheTokens/maxLen))
	c, err := m.NewKVCache(rows, maxLen)
	if err != nil {
		return nil, fmt.Errorf("embed: %w", err)
	}
	out := make([][]float32, 0, len(inputs))
	for start := 0; start < len(inputs); start += rows {
		group := inputs[start:min(start+rows, len(inputs))]
		vs, err := m.Embed(c, group)
		if err != nil {
			return nil, fmt.Errorf("embed: inputs %d to %d: %w", start, start+len(group)-1, err)
		}
		out = append(out, vs...)
	}
	return out, nil
}
