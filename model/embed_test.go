package model

import (
	"math"
	"slices"
	"strings"
	"testing"
)

// embedTestModel is a small model with weights sharp enough that texts
// differ clearly in their hidden states.
func embedTestModel(t *testing.T) *Model {
	t.Helper()
	cfg := Config{NLayer: 2, NHead: 2, NEmbd: 16, NPositions: 64, VocabSize: 50, LayerNormEpsilon: 1e-5}
	m, err := New(cfg, 5)
	if err != nil {
		t.Fatal(err)
	}
	for i := range m.Params {
		m.Params[i] *= 4
	}
	return m
}

// forwardEmbedding is the reference: Forward over seq, the mean over its
// tokens of the final LayerNorm's output, scaled to unit length.
func forwardEmbedding(t *testing.T, m *Model, seq []int32) []float32 {
	t.Helper()
	if _, err := m.Forward(seq, 1, len(seq), nil); err != nil {
		t.Fatal(err)
	}
	C := m.Config.NEmbd
	sum := make([]float64, C)
	for i := range seq {
		for j, v := range m.acts.lnf[i*C : (i+1)*C] {
			sum[j] += float64(v)
		}
	}
	return unitMean(sum, len(seq))
}

func l2(v []float32) float64 {
	var s float64
	for _, x := range v {
		s += float64(x) * float64(x)
	}
	return math.Sqrt(s)
}

func TestEmbedMatchesForwardMeanOfFinalLayerNorm(t *testing.T) {
	m := embedTestModel(t)
	rng := newTestRand(3)
	inputs := [][]int32{randTokens(rng, 1, 50), randTokens(rng, 40, 50), randTokens(rng, 7, 50), randTokens(rng, 64, 50)}
	for _, chunk := range []int{0, 5} { // 0: the default pass; 5: rows split over passes and shared within one
		c, err := m.NewKVCache(len(inputs), 64)
		if err != nil {
			t.Fatal(err)
		}
		if chunk > 0 {
			c.chunk = chunk
		}
		got, err := m.Embed(c, inputs)
		if err != nil {
			t.Fatal(err)
		}
		for i, in := range inputs {
			if n := l2(got[i]); math.Abs(n-1) > 1e-5 {
				t.Fatalf("chunk %d input %d: |v| = %g, want 1", chunk, i, n)
			}
			assertClose(t, "embed vs forward", got[i], forwardEmbedding(t, m, in), 1e-4)
		}
		// The cache holds the inputs afterwards; a second Embed starts over.
		again, err := m.Embed(c, inputs[:1])
		if err != nil {
			t.Fatal(err)
		}
		assertClose(t, "embed again on a used cache", again[0], forwardEmbedding(t, m, inputs[0]), 1e-4)
	}
}

func TestEmbedIsDeterministicAndTellsTextsApart(t *testing.T) {
	m := embedTestModel(t)
	a, b := []int32{1, 2, 3, 4, 5, 6}, []int32{7, 8, 9, 10, 11, 12}
	first, err := m.EmbedAll([][]int32{a, b, a})
	if err != nil {
		t.Fatal(err)
	}
	second, err := m.EmbedAll([][]int32{a, b, a})
	if err != nil {
		t.Fatal(err)
	}
	for i := range first {
		if !slices.Equal(first[i], second[i]) {
			t.Fatalf("input %d: two runs over the same inputs differ", i)
		}
	}
	// The same text in another row of the same pass: equal up to rounding.
	assertClose(t, "same text, other row", first[2], first[0], 1e-5)
	var dot float64
	for j := range first[0] {
		dot += float64(first[0][j]) * float64(first[1][j])
	}
	if dot > 0.999 {
		t.Fatalf("different texts embed alike: cosine %g", dot)
	}
}

// EmbedAll takes more inputs than one cache has rows, in groups, and gives
// each the vector it gets alone; bad inputs are named by index.
func TestEmbedAllGroupsInputsAndNamesBadOnes(t *testing.T) {
	m := embedTestModel(t)
	rng := newTestRand(9)
	inputs := make([][]int32, embedMaxRows+6)
	for i := range inputs {
		inputs[i] = randTokens(rng, 1+i%5, 50)
	}
	all, err := m.EmbedAll(inputs)
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != len(inputs) {
		t.Fatalf("%d vectors for %d inputs", len(all), len(inputs))
	}
	for _, i := range []int{0, embedMaxRows - 1, embedMaxRows, len(inputs) - 1} {
		alone, err := m.EmbedAll(inputs[i : i+1])
		if err != nil {
			t.Fatal(err)
		}
		assertClose(t, "grouped vs alone", all[i], alone[0], 1e-5)
	}
	for _, tc := range []struct {
		inputs [][]int32
		want   string
	}{
		{[][]int32{{1}, {}}, "input 1 is empty"},
		{[][]int32{{1}, {2}, make([]int32, 65)}, "input 2 has 65 tokens, n_positions=64"},
		{[][]int32{{1}, {50}}, "tokens[1][0]=50 outside the vocabulary"},
	} {
		if _, err := m.EmbedAll(tc.inputs); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("EmbedAll(%v) = %v; want an error containing %q", tc.inputs, err, tc.want)
		}
	}
	if out, err := m.EmbedAll(nil); err != nil || out != nil {
		t.Fatalf("EmbedAll(nil) = %v, %v", out, err)
	}
}
