package model

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

// genTestConfig is small enough for tests but keeps the full GPT-2 vocabulary,
// so that the real tokenizer decodes every token the model emits.
func genTestConfig() Config {
	return Config{NLayer: 2, NHead: 2, NEmbd: 16, NPositions: 40, VocabSize: 50257, LayerNormEpsilon: 1e-5}
}

// genTestModel is a random model whose weights are scaled up: with GPT-2's
// 0.02 initialisation the logits of a 16-wide model differ by too little
// for greedy decoding to be a sharp test.
func genTestModel(t *testing.T, seed int64) *Model {
	t.Helper()
	m, err := New(genTestConfig(), seed)
	if err != nil {
		t.Fatal(err)
	}
	for i := range m.Params {
		m.Params[i] *= 5
	}
	return m
}

func genTestTokenizer(t *testing.T) *Tokenizer {
	t.Helper()
	tok, err := NewTokenizer()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func genParam(t *testing.T, m *Model, name string) []float32 {
	t.Helper()
	for _, pt := range m.Config.ParamTensors() {
		if pt.Name == name {
			return m.Params[pt.Offset : pt.Offset+pt.Size]
		}
	}
	t.Fatalf("no parameter %q", name)
	return nil
}

func genRandomPrompt(rng *rand.Rand, n, vocab int) []int32 {
	p := make([]int32, n)
	for i := range p {
		p[i] = int32(rng.IntN(vocab))
	}
	return p
}

// checkNaiveGreedy checks, token by token, that gen is the greedy continuation
// of prompt by running a full Forward over the growing sequence (no KV
// cache). A token is accepted when its logit is within tol of the best, as
// batched and unbatched products may round differently.
func checkNaiveGreedy(t *testing.T, m *Model, prompt, gen []int32, label string) {
	t.Helper()
	V := m.Config.VocabSize
	seq := slices.Clone(prompt)
	for i, g := range gen {
		if _, err := m.Forward(seq, 1, len(seq), nil); err != nil {
			t.Fatal(err)
		}
		last := m.Logits()[(len(seq)-1)*V : len(seq)*V]
		best := finiteArgmax(last)
		if g != int32(best) && last[g] < last[best]-1e-4 {
			t.Fatalf("%s: token %d is %d (logit %v), naive argmax %d (logit %v)", label, i, g, last[g], best, last[best])
		}
		seq = append(seq, g)
	}
}

func TestGenerateGreedyMatchesNaiveForward(t *testing.T) {
	m := genTestModel(t, 1)
	rng := rand.New(rand.NewPCG(1, 1))
	var reqs []Request
	for _, n := range []int{1, 7, 3, 12, 5} {
		reqs = append(reqs, Request{Prompt: genRandomPrompt(rng, n, 50000), Params: SamplingParams{MaxTokens: 10, IgnoreEOS: true}})
	}
	all, err := Generate(context.Background(), m, nil, reqs, GenerateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for i, cs := range all {
		c := cs[0]
		if len(c.Tokens) != 10 || c.FinishReason != FinishLength || c.CompletionTokens != 10 || c.PromptTokens != len(reqs[i].Prompt) {
			t.Fatalf("request %d: %d tokens, finish %q, usage %d/%d", i, len(c.Tokens), c.FinishReason, c.PromptTokens, c.CompletionTokens)
		}
		checkNaiveGreedy(t, m, reqs[i].Prompt, c.Tokens, fmt.Sprintf("request %d", i))
	}
	// Continuous batching: with two slots, rows wait, reuse finished slots
	// and are prefilled next to rows that are decoding. Same tokens.
	narrow, err := Generate(context.Background(), m, nil, reqs, GenerateOptions{MaxRows: 2})
	if err != nil {
		t.Fatal(err)
	}
	for i := range all {
		if !slices.Equal(all[i][0].Tokens, narrow[i][0].Tokens) {
			t.Errorf("request %d: MaxRows 2 gave %v, full batch %v", i, narrow[i][0].Tokens, all[i][0].Tokens)
		}
	}
}

func TestGenerateSeededSamplingRepeatable(t *testing.T) {
	m := genTestModel(t, 2)
	seed := int64(77)
	p := SamplingParams{MaxTokens: 8, Temperature: 1, TopP: 0.95, Seed: &seed, N: 3, IgnoreEOS: true, Logprobs: 2}
	reqs := []Request{{Prompt: []int32{10, 20, 30}, Params: p}, {Prompt: []int32{5}, Params: p}}
	a, err := Generate(context.Background(), m, nil, reqs, GenerateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := Generate(context.Background(), m, nil, reqs, GenerateOptions{MaxRows: 1})
	if err != nil {
		t.Fatal(err)
	}
	for i := range a {
		if len(a[i]) != 3 {
			t.Fatalf("request %d: %d choices, want 3", i, len(a[i]))
		}
		for c := range a[i] {
			if !slices.Equal(a[i][c].Tokens, b[i][c].Tokens) {
				t.Errorf("request %d choice %d: not repeatable: %v vs %v", i, c, a[i][c].Tokens, b[i][c].Tokens)
			}
			lp := a[i][c].Logprobs
			if len(lp) != 8 || len(lp[0].Top) != 2 || lp[0].Token != a[i][c].Tokens[0] || !(lp[0].Logprob <= 0) {
				t.Errorf("request %d choice %d: logprobs %+v", i, c, lp)
			}
		}
		if slices.Equal(a[i][0].Tokens, a[i][1].Tokens) && slices.Equal(a[i][1].Tokens, a[i][2].Tokens) {
			t.Errorf("request %d: three sampled choices are identical: %v", i, a[i][0].Tokens)
		}
	}
	// n > 1 with greedy decoding: every choice is the greedy one.
	g, err := Generate(context.Background(), m, nil, []Request{{Prompt: []int32{1, 2}, Params: SamplingParams{MaxTokens: 5, N: 2, IgnoreEOS: true}}}, GenerateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(g[0][0].Tokens, g[0][1].Tokens) {
		t.Errorf("greedy choices differ: %v %v", g[0][0].Tokens, g[0][1].Tokens)
	}
}

func TestGenerateStopSequence(t *testing.T) {
	m := genTestModel(t, 3)
	tok := genTestTokenizer(t)
	prompt := tok.Encode("Once upon a time")
	free, err := Generate(context.Background(), m, tok, []Request{{Prompt: prompt, Params: SamplingParams{MaxTokens: 12}}}, GenerateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	full := free[0][0]
	if full.FinishReason != FinishLength || len(full.Text) < 8 {
		t.Fatalf("unconstrained run: %q finish %q", full.Text, full.FinishReason)
	}
	if full.Text != tok.Decode(full.Tokens) {
		t.Fatalf("text %q != decoded tokens %q", full.Text, tok.Decode(full.Tokens))
	}
	// A stop sequence taken from the middle of that text, likely spanning
	// a token boundary, cuts the text before its first occurrence.
	stop := full.Text[len(full.Text)/2 : len(full.Text)/2+3]
	want := full.Text[:strings.Index(full.Text, stop)]
	var streamed strings.Builder
	calls := 0
	got, err := Generate(context.Background(), m, tok,
		[]Request{{Prompt: prompt, Params: SamplingParams{MaxTokens: 12, Stop: []string{"never appears", stop}}}},
		GenerateOptions{OnToken: func(req, choice int, tk int32, text string) {
			calls++
			if req != 0 || choice != 0 {
				t.Errorf("callback for request %d choice %d", req, choice)
			}
			streamed.WriteString(text)
		}})
	if err != nil {
		t.Fatal(err)
	}
	c := got[0][0]
	if c.Text != want || c.FinishReason != FinishStop {
		t.Errorf("with stop %q: text %q finish %q; want %q, stop", stop, c.Text, c.FinishReason, want)
	}
	if !slices.Equal(c.Tokens, full.Tokens[:len(c.Tokens)]) || len(c.Tokens) > len(full.Tokens) {
		t.Errorf("tokens %v are not a prefix of %v", c.Tokens, full.Tokens)
	}
	if streamed.String() != c.Text || calls != len(c.Tokens) {
		t.Errorf("streamed %q in %d calls; text %q from %d tokens", streamed.String(), calls, c.Text, len(c.Tokens))
	}
}

func TestGenerateEOT(t *testing.T) {
	m := genTestModel(t, 4)
	tok := genTestTokenizer(t)
	// Make end-of-text the greedy choice everywhere: the final LayerNorm
	// outputs its bias, and only the EOT embedding points along it.
	C := m.Config.NEmbd
	clear(genParam(t, m, "ln_f.weight"))
	lnfb := genParam(t, m, "ln_f.bias")
	wte := genParam(t, m, "wte.weight")
	for i := range C {
		lnfb[i] = 1
		wte[int(EOTToken)*C+i] = 3
	}
	got, err := Generate(context.Background(), m, tok, []Request{
		{Prompt: []int32{1, 2, 3}, Params: SamplingParams{MaxTokens: 5, Logprobs: 1}},
		{Prompt: []int32{4}, Params: SamplingParams{MaxTokens: 3, IgnoreEOS: true}},
	}, GenerateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	c := got[0][0]
	if c.FinishReason != FinishStop || len(c.Tokens) != 0 || c.CompletionTokens != 1 || c.Text != "" || len(c.Logprobs) != 1 || c.Logprobs[0].Token != EOTToken {
		t.Errorf("EOT: %+v", c)
	}
	c = got[1][0]
	if c.FinishReason != FinishLength || len(c.Tokens) != 3 || c.Tokens[0] != EOTToken {
		t.Errorf("IgnoreEOS: %+v", c)
	}
}

func TestGenerateContextPolicy(t *testing.T) {
	m := genTestModel(t, 5)
	np := m.Config.NPositions
	rng := rand.New(rand.NewPCG(5, 5))
	got, err := Generate(context.Background(), m, nil, []Request{
		{Prompt: genRandomPrompt(rng, np-3, 1000), Params: SamplingParams{MaxTokens: 50, IgnoreEOS: true}},
		{Prompt: genRandomPrompt(rng, np-1, 1000), Params: SamplingParams{MaxTokens: 50, IgnoreEOS: true}},
	}, GenerateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []int{3, 1} {
		if c := got[i][0]; len(c.Tokens) != want || c.FinishReason != FinishLength {
			t.Errorf("request %d: %d tokens (%s), want %d (length)", i, len(c.Tokens), c.FinishReason, want)
		}
	}
	_, err = Generate(context.Background(), m, nil, []Request{
		{Prompt: []int32{1}}, {Prompt: genRandomPrompt(rng, np, 1000)},
	}, GenerateOptions{})
	if err == nil || !strings.Contains(err.Error(), "request 1: prompt") {
		t.Errorf("prompt of n_positions tokens: err = %v", err)
	}
}

func TestGenerateBadInput(t *testing.T) {
	m := genTestModel(t, 6)
	cases := []struct {
		name string
		reqs []Request
		opts GenerateOptions
		want string
	}{
		{"empty prompt", []Request{{Prompt: []int32{1}}, {Prompt: nil}}, GenerateOptions{}, "request 1: prompt: empty"},
		{"bad token", []Request{{Prompt: []int32{1, 50257}}}, GenerateOptions{}, "request 0: prompt[1]"},
		{"negative token", []Request{{Prompt: []int32{-1}}}, GenerateOptions{}, "request 0: prompt[0]"},
		{"bad temperature", []Request{{Prompt: []int32{1}, Params: SamplingParams{Temperature: 3}}}, GenerateOptions{}, "request 0: temperature"},
		{"bad n", []Request{{Prompt: []int32{1}}, {Prompt: []int32{1}, Params: SamplingParams{N: 17}}}, GenerateOptions{}, "request 1: n"},
		{"stop without tokenizer", []Request{{Prompt: []int32{1}, Params: SamplingParams{Stop: []string{"x"}}}}, GenerateOptions{}, "request 0: stop"},
		{"bad MaxRows", []Request{{Prompt: []int32{1}}}, GenerateOptions{MaxRows: -1}, "MaxRows"},
	}
	for _, c := range cases {
		_, err := Generate(context.Background(), m, nil, c.reqs, c.opts)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want mention of %q", c.name, err, c.want)
		}
	}
	if _, err := Generate(context.Background(), nil, nil, nil, GenerateOptions{}); err == nil {
		t.Error("nil model accepted")
	}
	if out, err := Generate(context.Background(), m, nil, nil, GenerateOptions{}); err != nil || len(out) != 0 {
		t.Errorf("no requests: %v, %v", out, err)
	}
}

func TestGenerateCancel(t *testing.T) {
	m := genTestModel(t, 7)
	reqs := []Request{{Prompt: []int32{1, 2}, Params: SamplingParams{MaxTokens: 30, IgnoreEOS: true}}}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Generate(ctx, m, nil, reqs, GenerateOptions{}); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled before start: err = %v", err)
	}
	ctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	calls := 0
	_, err := Generate(ctx, m, nil, reqs, GenerateOptions{OnToken: func(int, int, int32, string) {
		calls++
		if calls == 3 {
			cancel()
		}
	}})
	if !errors.Is(err, context.Canceled) || calls != 3 {
		t.Errorf("cancelled mid-way: err = %v after %d tokens, want context.Canceled after 3", err, calls)
	}
}

func TestFirstStopAndHoldBack(t *testing.T) {
	stops := []string{"END", "xy"}
	if at := firstStop([]byte("abcEN"), 3, stops); at != -1 {
		t.Errorf("partial stop matched at %d", at)
	}
	if at := firstStop([]byte("abcENDxy"), 5, stops); at != 3 {
		t.Errorf("stop across the old boundary: %d, want 3", at)
	}
	if at := firstStop([]byte("axyEND"), 1, stops); at != 1 {
		t.Errorf("earliest stop: %d, want 1", at)
	}
	for _, c := range []struct {
		buf  string
		want int
	}{
		{"hello", 5},
		{"hello E", 6},     // "E" may start "END"
		{"hello EN", 6},    // "EN" too
		{"hello x", 6},     // "x" may start "xy"
		{"hello ENx", 8},   // "x" held, "EN" is no longer a prefix at the end
		{"caf\xc3", 3},     // incomplete UTF-8 é held back
		{"caf\xc3\xa9", 5}, // complete
		{"\xe2\x82", 0},    // two bytes of a three-byte rune
		{"ab\xffcd", 5},    // invalid bytes are released as they are
	} {
		if got := safeEmitEnd([]byte(c.buf), 0, stops); got != c.want {
			t.Errorf("safeEmitEnd(%q) = %d, want %d", c.buf, got, c.want)
		}
	}
	if got := safeEmitEnd([]byte("abcE"), 4, stops); got != 4 {
		t.Errorf("never below emitted: %d", got)
	}
}

// Streaming a multi-byte character split over tokens releases it whole.
func TestAdvanceHoldsSplitCharacter(t *testing.T) {
	tok := genTestTokenizer(t)
	ids := tok.Encode("é€")
	var pieces []string
	s, err := NewSampler(SamplingParams{}, 50257, 1, 0)
	if err != nil {
		t.Fatal(err)
	}
	r := &Row{maxNew: 100, sampler: s}
	for _, id := range ids {
		r.next = SampleResult{Token: id}
		r.Advance(tok, EOTToken, func(_, _ int, _ int32, text string) { pieces = append(pieces, text) })
	}
	r.next = SampleResult{Token: EOTToken}
	r.Advance(tok, EOTToken, func(_, _ int, _ int32, text string) { pieces = append(pieces, text) })
	for _, p := range pieces {
		if !genValidUTF8(p) {
			t.Errorf("piece %q is not valid UTF-8 (pieces %q)", p, pieces)
		}
	}
	if strings.Join(pieces, "") != "é€" || r.out.Text != "é€" {
		t.Errorf("pieces %q, text %q", pieces, r.out.Text)
	}
}

func genValidUTF8(s string) bool { return strings.ToValidUTF8(s, "\uFFFD") == s }

// More rows than DefaultMaxRows, with no MaxRows set, are decoded in turns
// of DefaultMaxRows and complete exactly as one row at a time would.
func TestGenerateDefaultRows(t *testing.T) {
	m := genTestModel(t, 2)
	rng := rand.New(rand.NewPCG(3, 3))
	reqs := make([]Request, DefaultMaxRows+3)
	for i := range reqs {
		reqs[i] = Request{Prompt: genRandomPrompt(rng, 1+i%5, 50000), Params: SamplingParams{MaxTokens: 4, IgnoreEOS: true}}
	}
	wide, err := Generate(context.Background(), m, nil, reqs, GenerateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	one, err := Generate(context.Background(), m, nil, reqs, GenerateOptions{MaxRows: 1})
	if err != nil {
		t.Fatal(err)
	}
	for i := range reqs {
		if len(wide[i][0].Tokens) != 4 || !slices.Equal(wide[i][0].Tokens, one[i][0].Tokens) {
			t.Fatalf("request %d of %d: %v by default, %v one at a time", i, len(reqs), wide[i][0].Tokens, one[i][0].Tokens)
		}
	}
}
