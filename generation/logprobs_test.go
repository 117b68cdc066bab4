package generation

import (
	"context"
	"reflect"
	"testing"

	"github.com/tandem-ai/tandem/model"
)

// TestChoiceLogprobsAppendOffsets: each token's text offset is where the
// texts before it end; Last is one streamed chunk's share, at its offset;
// alternatives with one text keep the most likely one's log probability.
func TestChoiceLogprobsAppendOffsets(t *testing.T) {
	var lp ChoiceLogprobs
	if lp.Last() != nil {
		t.Fatal("Last of no token is not nil")
	}
	for _, e := range []LogprobEntry{
		{Text: "Hello", Logprob: -1, Top: []LogprobAlt{{Token: 1, Text: "Hello", Logprob: -1}, {Token: 2, Text: "Hi", Logprob: -2}}},
		{Text: " wörld", Logprob: -0.5, Top: []LogprobAlt{{Token: 3, Text: " wörld", Logprob: -0.5}, {Token: 4, Text: " wörld", Logprob: -3}}},
		{Text: "!", Logprob: -0.25, Top: []LogprobAlt{{Token: 5, Text: "!", Logprob: -0.25}}},
	} {
		lp.Append(e)
	}
	want := ChoiceLogprobs{
		Tokens:        []string{"Hello", " wörld", "!"},
		TokenLogprobs: []float32{-1, -0.5, -0.25},
		TopLogprobs:   []map[string]float32{{"Hello": -1, "Hi": -2}, {" wörld": -0.5}, {"!": -0.25}},
		TextOffset:    []int{0, 5, 12},
	}
	if !reflect.DeepEqual(lp, want) {
		t.Fatalf("appended %+v, want %+v", lp, want)
	}
	last := ChoiceLogprobs{Tokens: []string{"!"}, TokenLogprobs: []float32{-0.25}, TopLogprobs: []map[string]float32{{"!": -0.25}}, TextOffset: []int{12}}
	if got := lp.Last(); !reflect.DeepEqual(*got, last) {
		t.Fatalf("Last() = %+v, want %+v", *got, last)
	}
}

// TestEngineStreamsLogprobsBeforeEachToken: OnLogprobs gets each token's
// log probabilities just before OnToken gets the token, and they are the
// completion's; a request that asks for none gets no call.
func TestEngineStreamsLogprobsBeforeEachToken(t *testing.T) {
	m, tok := engineTestModel(t)
	e := newTestEngine(t, m, tok, EngineConfig{Slots: 4})
	seed := int64(5)
	reqs := []model.Request{
		{Prompt: tok.Encode("Log probabilities"), Params: model.SamplingParams{MaxTokens: 12, Temperature: 1, Seed: &seed, N: 2, Logprobs: 3}},
		{Prompt: tok.Encode("None asked"), Params: model.SamplingParams{MaxTokens: 5}},
	}
	type key struct{ req, choice int }
	var pending *model.TokenLogprobs
	streamed := map[key][]model.TokenLogprobs{}
	comps, err := e.Generate(context.Background(), reqs, Options{Class: Interactive,
		OnLogprobs: func(req, choice int, lp model.TokenLogprobs) {
			if req != 0 {
				t.Errorf("OnLogprobs for request %d, which asked for none", req)
			}
			if pending != nil {
				t.Errorf("request %d choice %d: two OnLogprobs without a token between", req, choice)
			}
			pending = &lp
		},
		OnToken: func(req, choice int, tk int32, _ string) {
			if req != 0 {
				return
			}
			if pending == nil || pending.Token != tk {
				t.Fatalf("request %d choice %d: token %d came with log probabilities %+v", req, choice, tk, pending)
			}
			streamed[key{req, choice}] = append(streamed[key{req, choice}], *pending)
			pending = nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	for c, comp := range comps[0] {
		got := streamed[key{0, c}]
		if len(got) == 0 || len(got[0].Top) != 3 || !reflect.DeepEqual(got, comp.Logprobs) {
			t.Errorf("choice %d: streamed %+v, completion %+v", c, got, comp.Logprobs)
		}
	}
}
