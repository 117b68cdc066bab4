package model

import (
	"strings"
	"testing"
)

func TestROUGELHandComputed(t *testing.T) {
	cases := []struct {
		hyp, ref string
		p, r     float64
	}{
		// Lin (2004): LCS "police the gunman" = 3 of 4 tokens each side.
		{"police kill the gunman", "police killed the gunman", 0.75, 0.75},
		// Only "the gunman" survives reordering.
		{"the gunman kill police", "police killed the gunman", 0.5, 0.5},
		// Subsequence with gaps: LCS 3, hypothesis 3 tokens, reference 6.
		{"a b c", "a x b y c z", 1, 0.5},
		{"", "a b", 0, 0},
		{"x y", "a b", 0, 0},
	}
	for _, c := range cases {
		got, err := ROUGEL(c.hyp, []string{c.ref})
		if err != nil {
			t.Fatal(err)
		}
		f := 0.0
		if c.p+c.r > 0 {
			f = 2 * c.p * c.r / (c.p + c.r)
		}
		metricNear(t, c.hyp+" P", got.Precision, c.p)
		metricNear(t, c.hyp+" R", got.Recall, c.r)
		metricNear(t, c.hyp+" F1", got.F1, f)
	}
}

func TestROUGELBestReference(t *testing.T) {
	got, err := ROUGEL("a b c", []string{"x y z", "a b c"})
	if err != nil {
		t.Fatal(err)
	}
	metricNear(t, "F1", got.F1, 1)
}

func TestCorpusROUGELMean(t *testing.T) {
	got, err := CorpusROUGEL([]string{"a b c", "x"}, [][]string{{"a b c"}, {"y"}})
	if err != nil {
		t.Fatal(err)
	}
	metricNear(t, "F1", got.F1, 0.5)
}

func TestROUGELErrors(t *testing.T) {
	if _, err := ROUGEL("a", nil); err == nil || !strings.Contains(err.Error(), "no reference") {
		t.Errorf("no refs: %v", err)
	}
	if _, err := CorpusROUGEL([]string{"a"}, nil); err == nil {
		t.Error("mismatch accepted")
	}
	long := strings.Repeat("a ", MaxROUGETokens+1)
	if _, err := ROUGEL(long, []string{"a"}); err == nil || !strings.Contains(err.Error(), "at most") {
		t.Errorf("long: %v", err)
	}
}
