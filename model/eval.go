package model

import (
	"errors"
	"fmt"
	"math"
)

// PerplexityResult is the outcome of Perplexity.
type PerplexityResult struct {
	Tokens     int     // number of predicted tokens (len(tokens) - 1)
	NLL        float64 // mean negative log-likelihood per predicted token, natural log
	Perplexity float64 // exp(NLL)
}

// Perplexity evaluates the model on a token stream: every token but the
// first is predicted once from the tokens before it.
//
// A stream longer than the context window is cut into windows of up to
// n_positions tokens whose starts are stride apart (the sliding-window
// method of the Hugging Face perplexity guide). Only the positions a window
// adds beyond the previous window count; the overlap serves as context, so
// every prediction after the first window sees at least n_positions-stride
// tokens. stride = n_positions gives disjoint windows (fastest, least
// context); smaller strides cost about n_positions/stride forward passes per
// window's worth of tokens. stride 0 means n_positions.
func Perplexity(m *Model, tokens []int32, stride int) (PerplexityResult, error) {
	if m == nil {
		return PerplexityResult{}, errors.New("perplexity: nil model")
	}
	np := m.Config.NPositions
	if stride == 0 {
		stride = np
	}
	if stride < 1 || stride > np {
		return PerplexityResult{}, fmt.Errorf("perplexity: stride %d out of range [1, %d]", stride, np)
	}
	if len(tokens) < 2 {
		return PerplexityResult{}, fmt.Errorf("perplexity: %d tokens, need at least 2", len(tokens))
	}
	for i, t := range tokens {
		if t < 0 || int(t) >= m.Config.VocabSize {
			return PerplexityResult{}, fmt.Errorf("perplexity: tokens[%d]: %d outside the vocabulary [0, %d)", i, t, m.Config.VocabSize)
		}
	}
	// Input position p predicts tokens[p+1]; inputs are positions 0..n-1.
	n := len(tokens) - 1
	targets := make([]int32, min(np, n))
	var sum float64
	counted := 0
	prevEnd := 0
	for begin := 0; prevEnd < n; begin += stride {
		end := min(begin+np, n)
		T := end - begin
		tg := targets[:T]
		for p := begin; p < end; p++ {
			if p < prevEnd {
				tg[p-begin] = -1 // predicted by an earlier window
			} else {
				tg[p-begin] = tokens[p+1]
			}
		}
		loss, err := m.Forward(tokens[begin:end], 1, T, tg)
		if err != nil {
			return PerplexityResult{}, fmt.Errorf("perplexity: window at %d: %w", begin, err)
		}
		newTok := end - prevEnd
		sum += float64(loss) * float64(newTok)
		counted += newTok
		prevEnd = end
	}
	nll := sum / float64(counted)
	return PerplexityResult{Tokens: counted, NLL: nll, Perplexity: math.Exp(nll)}, nil
}
