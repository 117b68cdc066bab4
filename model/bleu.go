package model

import (
	"errors"
	"fmt"
	"math"
	"strings"
)

// BLEU (Papineni et al., 2002) over whitespace tokens.
//
// Tokenization: strings.Fields, i.e. split on Unicode white space, case
// kept, punctuation left attached to words. This is not sacreBLEU's "13a"
// tokenizer, so scores are comparable only with scores computed the same
// way; callers who want another tokenization pass tokens to the *Tokens
// functions.

// Smoothing selects how zero n-gram counts are handled (Chen & Cherry, 2014).
type Smoothing int

const (
	// SmoothNone: any zero n-gram precision makes the score 0.
	SmoothNone Smoothing = iota
	// SmoothEpsilon (Chen & Cherry method 1): a zero match count becomes
	// Epsilon (0.1) before dividing.
	SmoothEpsilon
	// SmoothAddOne (Lin & Och 2004, Chen & Cherry method 2): add one to the
	// match count and to the total for every order above unigrams.
	SmoothAddOne
)

// BLEUEpsilon is the match count SmoothEpsilon puts in place of zero.
const BLEUEpsilon = 0.1

// BLEUOptions configures BLEU. The zero value is BLEU-4, unsmoothed.
type BLEUOptions struct {
	MaxN      int // highest n-gram order; 0 means 4
	Smoothing Smoothing
}

// BLEUResult holds the score and the parts it is built from.
type BLEUResult struct {
	Score          float64   // 0..1
	Precisions     []float64 // modified n-gram precision per order, 1..MaxN (after smoothing)
	BrevityPenalty float64
	HypLen, RefLen int // summed over the corpus; RefLen uses the closest reference per sentence
}

// CorpusBLEU scores hypotheses against references: refs[i] holds one or
// more references for hyps[i]. Counts are summed over the corpus before the
// precisions are taken (corpus BLEU, not an average of sentence scores).
func CorpusBLEU(hyps []string, refs [][]string, opts BLEUOptions) (BLEUResult, error) {
	if len(hyps) != len(refs) {
		return BLEUResult{}, fmt.Errorf("bleu: %d hypotheses but %d reference sets", len(hyps), len(refs))
	}
	th := make([][]string, len(hyps))
	tr := make([][][]string, len(refs))
	for i := range hyps {
		th[i] = strings.Fields(hyps[i])
		tr[i] = make([][]string, len(refs[i]))
		for j, r := range refs[i] {
			tr[i][j] = strings.Fields(r)
		}
	}
	return CorpusBLEUTokens(th, tr, opts)
}

// SentenceBLEU scores one hypothesis against its references. Short
// sentences often have no matching 4-gram: use smoothing.
func SentenceBLEU(hyp string, refs []string, opts BLEUOptions) (BLEUResult, error) {
	return CorpusBLEU([]string{hyp}, [][]string{refs}, opts)
}

// CorpusBLEUTokens is CorpusBLEU on pre-tokenized text.
func CorpusBLEUTokens(hyps [][]string, refs [][][]string, opts BLEUOptions) (BLEUResult, error) {
	maxN := opts.MaxN
	if maxN == 0 {
		maxN = 4
	}
	if maxN < 1 || maxN > 16 {
		return BLEUResult{}, fmt.Errorf("bleu: MaxN %d out of range [1, 16]", opts.MaxN)
	}
	if opts.Smoothing < SmoothNone || opts.Smoothing > SmoothAddOne {
		return BLEUResult{}, fmt.Errorf("bleu: unknown smoothing %d", opts.Smoothing)
	}
	if len(hyps) != len(refs) {
		return BLEUResult{}, fmt.Errorf("bleu: %d hypotheses but %d reference sets", len(hyps), len(refs))
	}
	if len(hyps) == 0 {
		return BLEUResult{}, errors.New("bleu: empty corpus")
	}
	match := make([]float64, maxN)
	total := make([]float64, maxN)
	var hypLen, refLen int
	for i, h := range hyps {
		if len(refs[i]) == 0 {
			return BLEUResult{}, fmt.Errorf("bleu: hypothesis %d has no reference", i)
		}
		hypLen += len(h)
		refLen += bleuClosestRefLen(len(h), refs[i])
		for n := 1; n <= maxN; n++ {
			hc := bleuNgramCounts(h, n)
			// Clip each n-gram's count by its largest count in any reference.
			maxRef := map[string]int{}
			for _, r := range refs[i] {
				for g, c := range bleuNgramCounts(r, n) {
					if c > maxRef[g] {
						maxRef[g] = c
					}
				}
			}
			for g, c := range hc {
				match[n-1] += float64(min(c, maxRef[g]))
			}
			if len(h) >= n {
				total[n-1] += float64(len(h) - n + 1)
			}
		}
	}
	res := BLEUResult{Precisions: make([]float64, maxN), HypLen: hypLen, RefLen: refLen}
	res.BrevityPenalty = 1
	if hypLen == 0 {
		res.BrevityPenalty = 0
	} else if hypLen < refLen {
		res.BrevityPenalty = math.Exp(1 - float64(refLen)/float64(hypLen))
	}
	logSum := 0.0
	for n := range maxN {
		m, t := match[n], total[n]
		switch opts.Smoothing {
		case SmoothEpsilon:
			if m == 0 {
				m = BLEUEpsilon
			}
		case SmoothAddOne:
			if n > 0 {
				m, t = m+1, t+1
			}
		}
		if t == 0 || m == 0 {
			// No n-grams of this order at all, or none matched: the
			// geometric mean is zero (smoothing was applied above).
			res.Precisions[n] = 0
			logSum = math.Inf(-1)
			continue
		}
		res.Precisions[n] = m / t
		logSum += math.Log(m / t)
	}
	if !math.IsInf(logSum, -1) {
		res.Score = res.BrevityPenalty * math.Exp(logSum/float64(maxN))
	}
	return res, nil
}

// bleuClosestRefLen picks the reference length closest to the hypothesis
// length, the shorter one on a tie (as in the original BLEU script).
func bleuClosestRefLen(h int, refs [][]string) int {
	best := len(refs[0])
	for _, r := range refs[1:] {
		d, bd := bleuAbs(len(r)-h), bleuAbs(best-h)
		if d < bd || (d == bd && len(r) < best) {
			best = len(r)
		}
	}
	return best
}

func bleuAbs(x int) int {
	if x < 0 {
		return -x
	}
	return x
}

// bleuNgramCounts counts n-grams of toks, keyed by the tokens joined with
// NUL (text tokens do not contain it, so distinct n-grams get distinct keys).
func bleuNgramCounts(toks []string, n int) map[string]int {
	c := make(map[string]int)
	for i := 0; i+n <= len(toks); i++ {
		c[strings.Join(toks[i:i+n], "\x00")]++
	}
	return c
}
