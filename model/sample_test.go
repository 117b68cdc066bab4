package model

import (
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

func TestSamplingParamsValidate(t *testing.T) {
	if err := (SamplingParams{}).Validate(); err != nil {
		t.Fatalf("zero value (all defaults) rejected: %v", err)
	}
	nan := float32(math.NaN())
	bad := []struct {
		field string
		p     SamplingParams
	}{
		{"max_tokens", SamplingParams{MaxTokens: -1}},
		{"max_tokens", SamplingParams{MaxTokens: MaxTokensLimit + 1}},
		{"temperature", SamplingParams{Temperature: -0.1}},
		{"temperature", SamplingParams{Temperature: 2.5}},
		{"temperature", SamplingParams{Temperature: nan}},
		{"top_k", SamplingParams{TopK: -2}},
		{"top_p", SamplingParams{TopP: 1.5}},
		{"top_p", SamplingParams{TopP: -0.5}},
		{"top_p", SamplingParams{TopP: nan}},
		{"min_p", SamplingParams{MinP: 1.1}},
		{"repetition_penalty", SamplingParams{RepetitionPenalty: -1}},
		{"repetition_penalty", SamplingParams{RepetitionPenalty: float32(math.Inf(1))}},
		{"presence_penalty", SamplingParams{PresencePenalty: 2.1}},
		{"frequency_penalty", SamplingParams{FrequencyPenalty: -3}},
		{"n", SamplingParams{N: MaxChoices + 1}},
		{"n", SamplingParams{N: -1}},
		{"logprobs", SamplingParams{Logprobs: 6}},
		{"stop", SamplingParams{Stop: []string{"a", "b", "c", "d", "e"}}},
		{"stop[1]", SamplingParams{Stop: []string{"a", ""}}},
		{"stop[0]", SamplingParams{Stop: []string{strings.Repeat("x", MaxStopBytes+1)}}},
	}
	for _, c := range bad {
		err := c.p.Validate()
		if err == nil || !strings.HasPrefix(err.Error(), c.field+":") {
			t.Errorf("%+v: err = %v, want one naming %s", c.p, err, c.field)
		}
	}
	good := SamplingParams{MaxTokens: 5, Temperature: 2, TopK: -1, TopP: 1, MinP: 1, RepetitionPenalty: 1.3,
		PresencePenalty: -2, FrequencyPenalty: 2, N: MaxChoices, Logprobs: MaxLogprobs, Stop: []string{"a", "b", "c", "d"}}
	if err := good.Validate(); err != nil {
		t.Errorf("edge values rejected: %v", err)
	}
}

func newTestSampler(t *testing.T, p SamplingParams, vocab int, seed uint64) *Sampler {
	t.Helper()
	s, err := NewSampler(p, vocab, seed, 0)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestGreedyArgmax(t *testing.T) {
	s := newTestSampler(t, SamplingParams{}, 5, 1)
	nan := float32(math.NaN())
	for _, c := range []struct {
		logits []float32
		want   int32
	}{
		{[]float32{0, 3, 1, 3, -1}, 1}, // tie: lowest id
		{[]float32{nan, -5, float32(math.Inf(1)), -4, nan}, 3},
	} {
		r, err := s.Sample(c.logits)
		if err != nil || r.Token != c.want {
			t.Errorf("Sample(%v) = %d, %v; want %d", c.logits, r.Token, err, c.want)
		}
	}
	if _, err := s.Sample([]float32{nan, nan, nan, nan, nan}); err != ErrBadLogits {
		t.Errorf("all-NaN logits: err = %v", err)
	}
	if _, err := s.Sample([]float32{1, 2}); err == nil {
		t.Error("wrong logits length accepted")
	}
	hot := newTestSampler(t, SamplingParams{Temperature: 1}, 3, 1)
	inf := float32(math.Inf(-1))
	if _, err := hot.Sample([]float32{inf, inf, nan}); err != ErrBadLogits {
		t.Errorf("no finite logits with temperature: err = %v", err)
	}
}

func TestRepetitionPenalty(t *testing.T) {
	// Seen tokens 0 and 1: 2 -> 1 (divided), -1 -> -2 (multiplied); 1.5 wins.
	s := newTestSampler(t, SamplingParams{RepetitionPenalty: 2}, 3, 1)
	s.ObservePrompt([]int32{0, 1, 1, 99, -4}) // out-of-vocabulary ids are ignored
	logits := []float32{2, -1, 1.5}
	r, _ := s.Sample(logits)
	if r.Token != 2 {
		t.Errorf("token %d, want 2", r.Token)
	}
	if logits[0] != 2 {
		t.Error("Sample modified the caller's logits")
	}
	if !slices.Equal(s.work, []float32{1, -2, 1.5}) {
		t.Errorf("penalised logits %v", s.work)
	}
}

func TestPresenceFrequencyPenalty(t *testing.T) {
	for _, c := range []struct {
		freq, pres float32
		want       int32
	}{
		{0.3, 0, 1},   // 3 - 2*0.3 = 2.4 < 2.5
		{0.2, 0, 0},   // 3 - 0.4 = 2.6
		{0, 0.6, 1},   // 3 - 0.6 = 2.4
		{0.2, 0.2, 1}, // 3 - 0.2 - 0.4 = 2.4
	} {
		s := newTestSampler(t, SamplingParams{FrequencyPenalty: c.freq, PresencePenalty: c.pres}, 2, 1)
		s.ObservePrompt([]int32{0, 0, 0}) // the prompt does not count for these penalties
		s.Accept(0)
		s.Accept(0)
		r, _ := s.Sample([]float32{3, 2.5})
		if r.Token != c.want {
			t.Errorf("freq %v pres %v: token %d, want %d", c.freq, c.pres, r.Token, c.want)
		}
	}
}

// sampleLogitsOf returns logits whose softmax is exactly probs.
func sampleLogitsOf(probs ...float64) []float32 {
	l := make([]float32, len(probs))
	for i, p := range probs {
		l[i] = float32(math.Log(p))
	}
	return l
}

func sampleHistogram(t *testing.T, s *Sampler, logits []float32, draws int) []int {
	t.Helper()
	h := make([]int, len(logits))
	for range draws {
		r, err := s.Sample(logits)
		if err != nil {
			t.Fatal(err)
		}
		h[r.Token]++
	}
	return h
}

func TestTruncation(t *testing.T) {
	logits := sampleLogitsOf(0.05, 0.5, 0.15, 0.3)
	cases := []struct {
		name string
		p    SamplingParams
		want []bool // which tokens may appear
	}{
		{"none", SamplingParams{Temperature: 1}, []bool{true, true, true, true}},
		{"top_k=1", SamplingParams{Temperature: 1, TopK: 1}, []bool{false, true, false, false}},
		{"top_k=2", SamplingParams{Temperature: 1, TopK: 2}, []bool{false, true, false, true}},
		{"top_p=0.45", SamplingParams{Temperature: 1, TopP: 0.45}, []bool{false, true, false, false}},
		{"top_p=0.7", SamplingParams{Temperature: 1, TopP: 0.7}, []bool{false, true, false, true}},
		{"top_p=0.9", SamplingParams{Temperature: 1, TopP: 0.9}, []bool{false, true, true, true}},
		{"min_p=0.5", SamplingParams{Temperature: 1, MinP: 0.5}, []bool{false, true, false, true}},
		{"min_p=0.2", SamplingParams{Temperature: 1, MinP: 0.2}, []bool{false, true, true, true}},
		{"top_k=3,min_p=0.5", SamplingParams{Temperature: 1, TopK: 3, MinP: 0.5}, []bool{false, true, false, true}},
	}
	for _, c := range cases {
		h := sampleHistogram(t, newTestSampler(t, c.p, 4, 7), logits, 4000)
		for i, ok := range c.want {
			if ok != (h[i] > 0) {
				t.Errorf("%s: token %d drawn %d times; allowed=%v (histogram %v)", c.name, i, h[i], ok, h)
			}
		}
	}
}

// With no truncation, draws follow the softmax: frequencies within 4 sigma.
func TestSamplingDistribution(t *testing.T) {
	probs := []float64{0.05, 0.5, 0.15, 0.3}
	const n = 20000
	h := sampleHistogram(t, newTestSampler(t, SamplingParams{Temperature: 1}, 4, 3), sampleLogitsOf(probs...), n)
	for i, p := range probs {
		sigma := math.Sqrt(n * p * (1 - p))
		if math.Abs(float64(h[i])-n*p) > 4*sigma {
			t.Errorf("token %d: %d draws, expected %.0f ± %.0f", i, h[i], n*p, sigma)
		}
	}
	// Temperature 0.5 squares the odds: p ∝ probs².
	var z float64
	for _, p := range probs {
		z += p * p
	}
	h = sampleHistogram(t, newTestSampler(t, SamplingParams{Temperature: 0.5}, 4, 3), sampleLogitsOf(probs...), n)
	for i, p := range probs {
		q := p * p / z
		sigma := math.Sqrt(n * q * (1 - q))
		if math.Abs(float64(h[i])-n*q) > 4*sigma+1 {
			t.Errorf("T=0.5 token %d: %d draws, expected %.0f ± %.0f", i, h[i], n*q, sigma)
		}
	}
}

func TestSeedRepeatable(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	logits := make([]float32, 1000)
	for i := range logits {
		logits[i] = float32(rng.NormFloat64() * 2)
	}
	p := SamplingParams{Temperature: 0.9, TopP: 0.95, TopK: 100, FrequencyPenalty: 0.5}
	run := func(seed, stream uint64) []int32 {
		s, err := NewSampler(p, len(logits), seed, stream)
		if err != nil {
			t.Fatal(err)
		}
		var out []int32
		for range 50 {
			r, _ := s.Sample(logits)
			s.Accept(r.Token)
			out = append(out, r.Token)
		}
		return out
	}
	a, b := run(42, 0), run(42, 0)
	if !slices.Equal(a, b) {
		t.Fatalf("same seed, different draws:\n%v\n%v", a, b)
	}
	if slices.Equal(a, run(42, 1)) || slices.Equal(a, run(43, 0)) {
		t.Error("different seed or stream gave identical draws")
	}
}

func TestLogprobs(t *testing.T) {
	probs := []float64{0.05, 0.5, 0.15, 0.3}
	s := newTestSampler(t, SamplingParams{Logprobs: 3, RepetitionPenalty: 5}, 4, 1)
	s.ObservePrompt([]int32{1}) // penalties change the choice, not the reported logprobs
	r, err := s.Sample(sampleLogitsOf(probs...))
	if err != nil {
		t.Fatal(err)
	}
	if r.Token != 3 {
		t.Fatalf("token %d, want 3 (token 1 penalised)", r.Token)
	}
	if math.Abs(float64(r.Logprob)-math.Log(0.3)) > 1e-5 {
		t.Errorf("logprob %v, want %v", r.Logprob, math.Log(0.3))
	}
	want := []int32{1, 3, 2}
	if len(r.Top) != 3 {
		t.Fatalf("top %v", r.Top)
	}
	for i, e := range r.Top {
		if e.Token != want[i] || math.Abs(float64(e.Logprob)-math.Log(probs[want[i]])) > 1e-5 {
			t.Errorf("top[%d] = %+v, want token %d logprob %v", i, e, want[i], math.Log(probs[want[i]]))
		}
	}
	off := newTestSampler(t, SamplingParams{}, 4, 1)
	if r, _ := off.Sample(sampleLogitsOf(probs...)); r.Top != nil || r.Logprob != 0 {
		t.Errorf("logprobs off but got %+v", r)
	}
}

// The nucleus found through thresholds equals the one from a full sort.
func TestNucleusMatchesFullSort(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 9))
	const V = 5000
	s := newTestSampler(t, SamplingParams{Temperature: 1}, V, 1)
	for trial := range 30 {
		prob := make([]float64, V)
		cand := make([]int32, V)
		var z float64
		scale := 0.5 + float64(trial)/3 // from flat to peaked
		for i := range prob {
			prob[i] = math.Exp(rng.NormFloat64() * scale)
			z += prob[i]
			cand[i] = int32(i)
		}
		for i := range prob {
			prob[i] /= z
		}
		p := 0.1 + 0.89*rng.Float64()
		ref := slices.Clone(cand)
		slices.SortFunc(ref, func(a, b int32) int {
			if prob[a] != prob[b] {
				if prob[a] > prob[b] {
					return -1
				}
				return 1
			}
			return int(a - b)
		})
		var cum float64
		n := 0
		for n < V {
			cum += prob[ref[n]]
			n++
			if cum >= p {
				break
			}
		}
		gotTok, _ := s.nucleus(slices.Clone(cand), slices.Clone(prob), p) // prob sums to 1
		gotTok = slices.Clone(gotTok)
		slices.Sort(gotTok)
		want := slices.Clone(ref[:n])
		slices.Sort(want)
		if !slices.Equal(gotTok, want) {
			t.Fatalf("trial %d p=%.3f: nucleus of %d tokens, full sort %d", trial, p, len(gotTok), n)
		}
	}
}

// Ties at the nucleus edge go to the lower token id.
func TestNucleusTies(t *testing.T) {
	s := newTestSampler(t, SamplingParams{Temperature: 1}, 6, 1)
	cand := []int32{0, 1, 2, 3, 4, 5}
	prob := []float64{0.1, 0.2, 0.2, 0.2, 0.2, 0.1}
	got, _ := s.nucleus(cand, prob, 0.5) // 0.2+0.2 < 0.5 <= 0.2*3
	got = slices.Clone(got)
	slices.Sort(got)
	if !slices.Equal(got, []int32{1, 2, 3}) {
		t.Errorf("nucleus %v, want [1 2 3]", got)
	}
}

func TestSelectTopKMatchesSort(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 5))
	for trial := range 50 {
		n := 1 + rng.IntN(300)
		w := make([]float32, n)
		for i := range w {
			w[i] = float32(rng.IntN(20)) // many ties
		}
		k := 1 + rng.IntN(n)
		cand := make([]int32, n)
		for i := range cand {
			cand[i] = int32(i)
		}
		ref := slices.Clone(cand)
		slices.SortFunc(ref, func(a, b int32) int {
			if w[a] != w[b] {
				if w[a] > w[b] {
					return -1
				}
				return 1
			}
			return int(a - b)
		})
		selectTopK(cand, w, k)
		got := slices.Clone(cand[:k])
		slices.Sort(got)
		want := slices.Clone(ref[:k])
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Fatalf("trial %d n=%d k=%d: got %v want %v", trial, n, k, got, want)
		}
	}
}

func TestSampleDoesNotAllocate(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	const V = 50257
	logits := make([]float32, V)
	for i := range logits {
		logits[i] = float32(rng.NormFloat64() * 3)
	}
	for _, p := range []SamplingParams{
		{},
		{Temperature: 0.8, TopP: 0.9, RepetitionPenalty: 1.2, FrequencyPenalty: 0.3, Logprobs: 5},
		{Temperature: 1, TopK: 40, MinP: 0.05},
	} {
		s := newTestSampler(t, p, V, 1)
		s.ObservePrompt([]int32{1, 2, 3})
		s.Accept(4)
		if _, err := s.Sample(logits); err != nil { // warm the buffers
			t.Fatal(err)
		}
		allocs := testing.AllocsPerRun(20, func() { _, _ = s.Sample(logits) })
		if allocs != 0 {
			t.Errorf("%+v: %.1f allocations per Sample", p, allocs)
		}
	}
}

func BenchmarkSampleTopP(b *testing.B) {
	rng := rand.New(rand.NewPCG(3, 4))
	logits := make([]float32, 50257)
	for i := range logits {
		logits[i] = float32(rng.NormFloat64() * 3)
	}
	s, _ := NewSampler(SamplingParams{Temperature: 0.8, TopP: 0.9}, len(logits), 1, 0)
	for b.Loop() {
		_, _ = s.Sample(logits)
	}
}

func TestExpNonPositive(t *testing.T) {
	for x := 0.0; x > -750; x -= 0.0137 {
		got, want := expNonPositive(x), math.Exp(x)
		if x < -700 {
			want = 0
		}
		if math.Abs(got-want) > 1e-8*want {
			t.Fatalf("exp(%v) = %v, want %v", x, got, want)
		}
	}
}
