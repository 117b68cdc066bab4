package model

import (
	"math"
	"strings"
	"testing"
)

func metricNear(t *testing.T, name string, got, want float64) {
	t.Helper()
	if math.Abs(got-want) > 1e-9 {
		t.Errorf("%s = %.12f, want %.12f", name, got, want)
	}
}

func TestSentenceBLEUIdentical(t *testing.T) {
	r, err := SentenceBLEU("the cat sat on the mat", []string{"the cat sat on the mat"}, BLEUOptions{})
	if err != nil {
		t.Fatal(err)
	}
	metricNear(t, "score", r.Score, 1)
	metricNear(t, "bp", r.BrevityPenalty, 1)
}

// The clipping example of Papineni et al.: "the" seven times scores a
// unigram precision of 2/7, since no reference holds "the" more than twice.
func TestBLEUClipping(t *testing.T) {
	r, err := SentenceBLEU("the the the the the the the",
		[]string{"the cat is on the mat", "there is a cat on the mat"}, BLEUOptions{MaxN: 1})
	if err != nil {
		t.Fatal(err)
	}
	metricNear(t, "p1", r.Precisions[0], 2.0/7)
	metricNear(t, "bp", r.BrevityPenalty, 1) // closest reference has 7 tokens
	metricNear(t, "score", r.Score, 2.0/7)
	if r.RefLen != 7 || r.HypLen != 7 {
		t.Errorf("lengths %d/%d", r.HypLen, r.RefLen)
	}
}

// Hand computation: precisions 4/5, 3/4, 2/3, 1/2; BP = exp(1 - 6/5).
func TestBLEUHandComputed(t *testing.T) {
	r, err := SentenceBLEU("a b c d e", []string{"a b c d f g"}, BLEUOptions{})
	if err != nil {
		t.Fatal(err)
	}
	want := []float64{4.0 / 5, 3.0 / 4, 2.0 / 3, 1.0 / 2}
	for i, w := range want {
		metricNear(t, "precision", r.Precisions[i], w)
	}
	bp := math.Exp(1 - 6.0/5)
	metricNear(t, "bp", r.BrevityPenalty, bp)
	metricNear(t, "score", r.Score, bp*math.Pow(0.8*0.75*(2.0/3)*0.5, 0.25))
}

func TestBLEUSmoothing(t *testing.T) {
	hyp, refs := "a b c x", []string{"a b c d"}
	r, _ := SentenceBLEU(hyp, refs, BLEUOptions{})
	metricNear(t, "unsmoothed", r.Score, 0)
	r, _ = SentenceBLEU(hyp, refs, BLEUOptions{Smoothing: SmoothEpsilon})
	metricNear(t, "epsilon", r.Score, math.Pow(0.75*(2.0/3)*0.5*0.1, 0.25))
	r, _ = SentenceBLEU(hyp, refs, BLEUOptions{Smoothing: SmoothAddOne})
	// 3/4, (2+1)/(3+1), (1+1)/(2+1), (0+1)/(1+1)
	metricNear(t, "add-one", r.Score, math.Pow(0.75*0.75*(2.0/3)*0.5, 0.25))
}

// Corpus BLEU sums counts before dividing: 6/7 unigrams, 4/5 bigrams.
func TestCorpusBLEUSumsCounts(t *testing.T) {
	r, err := CorpusBLEU([]string{"a b c d e", "a b"}, [][]string{{"a b c d f g"}, {"a b"}}, BLEUOptions{MaxN: 2})
	if err != nil {
		t.Fatal(err)
	}
	bp := math.Exp(1 - 8.0/7)
	metricNear(t, "score", r.Score, bp*math.Sqrt(6.0/7*4.0/5))
}

func TestBLEUClosestReferenceTie(t *testing.T) {
	// Hypothesis of 5 tokens, references of 4 and 6: the shorter wins the tie.
	r, _ := SentenceBLEU("a b c d e", []string{"a b c d e f", "a b c d"}, BLEUOptions{MaxN: 1})
	if r.RefLen != 4 {
		t.Errorf("RefLen = %d, want 4", r.RefLen)
	}
	metricNear(t, "bp", r.BrevityPenalty, 1)
}

func TestBLEUEmptyHypothesis(t *testing.T) {
	r, err := SentenceBLEU("", []string{"a b"}, BLEUOptions{Smoothing: SmoothAddOne})
	if err != nil {
		t.Fatal(err)
	}
	metricNear(t, "score", r.Score, 0)
}

func TestBLEUErrors(t *testing.T) {
	cases := []struct {
		name string
		err  func() error
		want string
	}{
		{"mismatch", func() error { _, e := CorpusBLEU([]string{"a"}, nil, BLEUOptions{}); return e }, "reference sets"},
		{"noref", func() error { _, e := CorpusBLEU([]string{"a"}, [][]string{{}}, BLEUOptions{}); return e }, "hypothesis 0 has no reference"},
		{"empty", func() error { _, e := CorpusBLEU(nil, nil, BLEUOptions{}); return e }, "empty corpus"},
		{"maxn", func() error { _, e := SentenceBLEU("a", []string{"a"}, BLEUOptions{MaxN: -1}); return e }, "MaxN"},
		{"smoothing", func() error { _, e := SentenceBLEU("a", []string{"a"}, BLEUOptions{Smoothing: 9}); return e }, "smoothing"},
	}
	for _, c := range cases {
		err := c.err()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want mention of %q", c.name, err, c.want)
		}
	}
}
