package finetune

import (
	"fmt"
	"math/rand/v2"

	"github.com/tandem-ai/tandem/limits"
	"github.com/tandem-ai/tandem/model"
)

// Split is a dataset cut into train, dev and test examples.
type Split struct {
	Train, Dev, Test []Example
}

// MinExamples is the smallest dataset SplitExamples accepts.
const MinExamples = limits.MinDatasetExamples

// SplitExamples shuffles examples with seed and cuts them into train, dev
// and test by fraction. Dev and test get at least one example each when
// their fraction is positive and there are at least three examples, so a
// small dataset still has something to evaluate on. The same seed and
// examples always give the same split.
func SplitExamples(examples []Example, devFrac, testFrac float64, seed int64) (Split, error) {
	if !(devFrac >= 0 && testFrac >= 0 && devFrac+testFrac < 1) {
		return Split{}, fmt.Errorf("split: dev %.3g + test %.3g must be in [0, 1)", devFrac, testFrac)
	}
	n := len(examples)
	if n < MinExamples {
		return Split{}, fmt.Errorf("split: %d examples, need at least %d (train, dev and test get one each)", n, MinExamples)
	}
	idx := make([]int, n)
	for i := range idx {
		idx[i] = i
	}
	rng := rand.New(rand.NewPCG(uint64(seed), 0x73706c6974)) // stream id "split"
	rng.Shuffle(n, func(i, j int) { idx[i], idx[j] = idx[j], idx[i] })
	count := func(frac float64) int {
		k := int(frac * float64(n))
		if k == 0 && frac > 0 && n >= 3 {
			k = 1
		}
		return k
	}
	nDev, nTest := count(devFrac), count(testFrac)
	if n-nDev-nTest < 1 {
		return Split{}, fmt.Errorf("split: %d examples leave none to train on (dev %d, test %d)", n, nDev, nTest)
	}
	pick := func(ids []int) []Example {
		out := make([]Example, len(ids))
		for i, j := range ids {
			out[i] = examples[j]
		}
		return out
	}
	return Split{
		Dev:   pick(idx[:nDev]),
		Test:  pick(idx[nDev : nDev+nTest]),
		Train: pick(idx[nDev+nTest:]),
	}, nil
}

// Row is one training sequence: Tokens[t] predicts Targets[t]; a target of
// -1 is left out of the loss (prompt tokens, padding).
type Row struct {
	Tokens, Targets []int32
}

// PackRows concatenates examples (each already ends with end-of-text) into
// one stream and cuts it into rows of T inputs. Consecutive rows overlap by
// one token so that every token after the first is a target exactly once.
// The last row is padded with end-of-text inputs whose targets are -1.
func PackRows(examples []Example, T int) []Row {
	var toks []int32
	var loss []bool
	for _, ex := range examples {
		toks = append(toks, ex.Tokens...)
		loss = append(loss, ex.Loss...)
	}
	var rows []Row
	for start := 0; start+1 < len(toks); start += T {
		r := Row{Tokens: make([]int32, T), Targets: make([]int32, T)}
		for t := 0; t < T; t++ {
			p := start + t
			if p+1 < len(toks) {
				r.Tokens[t] = toks[p]
				if loss[p+1] {
					r.Targets[t] = toks[p+1]
				} else {
					r.Targets[t] = -1
				}
			} else {
				r.Tokens[t] = model.EOTToken
				r.Targets[t] = -1
			}
		}
		rows = append(rows, r)
	}
	return rows
}

// batchOf stacks rows into one model batch.
func batchOf(rows []Row, T int) model.Batch {
	b := model.Batch{B: len(rows), T: T, Tokens: make([]int32, 0, len(rows)*T), Targets: make([]int32, 0, len(rows)*T)}
	for _, r := range rows {
		b.Tokens = append(b.Tokens, r.Tokens...)
		b.Targets = append(b.Targets, r.Targets...)
	}
	return b
}

// countTargets is the number of positions that count in the loss.
func countTargets(targets []int32) int {
	n := 0
	for _, t := range targets {
		if t >= 0 {
			n++
		}
	}
	return n
}
