package model

import (
	"errors"
	"fmt"
	"strings"

	"github.com/tandem-ai/tandem/limits"
)

// ROUGE-L (Lin, 2004) from the longest common subsequence of tokens.
// Tokenization is the same as BLEU's: strings.Fields, case kept.

// MaxROUGETokens bounds the length of one text: the LCS table costs
// len(hyp)*len(ref) steps.
const MaxROUGETokens = limits.ROUGETokens

// ROUGEResult is ROUGE-L for one pair (or the mean over a corpus).
type ROUGEResult struct {
	Precision float64 // LCS / hypothesis length
	Recall    float64 // LCS / reference length
	F1        float64 // harmonic mean of the two (beta = 1)
}

// ROUGEL scores a hypothesis against one or more references and keeps the
// reference with the best F1 (as the multi-reference ROUGE scripts do).
func ROUGEL(hyp string, refs []string) (ROUGEResult, error) {
	tr := make([][]string, len(refs))
	for i, r := range refs {
		tr[i] = strings.Fields(r)
	}
	return ROUGELTokens(strings.Fields(hyp), tr)
}

// ROUGELTokens is ROUGEL on pre-tokenized text.
func ROUGELTokens(hyp []string, refs [][]string) (ROUGEResult, error) {
	if len(refs) == 0 {
		return ROUGEResult{}, errors.New("rouge: no reference")
	}
	if len(hyp) > MaxROUGETokens {
		return ROUGEResult{}, fmt.Errorf("rouge: hypothesis has %d tokens, at most %d", len(hyp), MaxROUGETokens)
	}
	var best ROUGEResult
	for i, ref := range refs {
		if len(ref) > MaxROUGETokens {
			return ROUGEResult{}, fmt.Errorf("rouge: reference %d has %d tokens, at most %d", i, len(ref), MaxROUGETokens)
		}
		r := rougeFromLCS(rougeLCSLen(hyp, ref), len(hyp), len(ref))
		if i == 0 || r.F1 > best.F1 {
			best = r
		}
	}
	return best, nil
}

// CorpusROUGEL averages ROUGE-L over pairs: refs[i] are the references of
// hyps[i]. Each field is the mean of the per-pair values.
func CorpusROUGEL(hyps []string, refs [][]string) (ROUGEResult, error) {
	if len(hyps) != len(refs) {
		return ROUGEResult{}, fmt.Errorf("rouge: %d hypotheses but %d reference sets", len(hyps), len(refs))
	}
	if len(hyps) == 0 {
		return ROUGEResult{}, errors.New("rouge: empty corpus")
	}
	var sum ROUGEResult
	for i := range hyps {
		r, err := ROUGEL(hyps[i], refs[i])
		if err != nil {
			return ROUGEResult{}, fmt.Errorf("pair %d: %w", i, err)
		}
		sum.Precision += r.Precision
		sum.Recall += r.Recall
		sum.F1 += r.F1
	}
	n := float64(len(hyps))
	return ROUGEResult{Precision: sum.Precision / n, Recall: sum.Recall / n, F1: sum.F1 / n}, nil
}

func rougeFromLCS(lcs, hypLen, refLen int) ROUGEResult {
	if lcs == 0 {
		return ROUGEResult{}
	}
	p := float64(lcs) / float64(hypLen)
	r := float64(lcs) / float64(refLen)
	return ROUGEResult{Precision: p, Recall: r, F1: 2 * p * r / (p + r)}
}

// rougeLCSLen is the length of the longest common subsequence, by dynamic
// programming with two rows (memory linear in the shorter text).
func rougeLCSLen(a, b []string) int {
	if len(a) < len(b) {
		a, b = b, a
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for i := range a {
		for j := range b {
			switch {
			case a[i] == b[j]:
				cur[j+1] = prev[j] + 1
			case prev[j+1] >= cur[j]:
				cur[j+1] = prev[j+1]
			default:
				cur[j+1] = cur[j]
			}
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
