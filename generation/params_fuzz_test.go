package generation

import (
	"encoding/json"
	"math"
	"testing"

	"github.com/tandem-ai/tandem/model"
)

// FuzzCompletionsParams drives CompletionsBody.Params (and through it
// model.SamplingParams.Validate) with arbitrary numbers, NaN and infinities
// included, which JSON cannot carry but a Go caller can.
func FuzzCompletionsParams(f *testing.F) {
	f.Add(16, float32(1), float32(1), 0, float32(0), float32(0), float32(0), float32(1), 1, 0, "\n", uint8(1))
	f.Add(0, float32(0), float32(0), -1, float32(0), float32(0), float32(0), float32(0), 0, 0, "", uint8(0))
	f.Add(9000, float32(3), float32(1.5), -2, float32(2), float32(-3), float32(3), float32(-1), 17, 6, "", uint8(5))
	f.Add(1, float32(math.NaN()), float32(math.Inf(1)), 1, float32(math.NaN()), float32(math.NaN()), float32(0), float32(math.Inf(1)), 1, 0, "x", uint8(2))
	f.Fuzz(func(t *testing.T, maxTokens int, temp, topP float32, topK int, minP, pres, freq, rep float32, n, logprobs int, stop string, nStop uint8) {
		b := CompletionsBody{Prompt: "p", MaxTokens: &maxTokens, Temperature: &temp, TopP: &topP, TopK: &topK,
			MinP: &minP, PresencePenalty: &pres, FrequencyPenalty: &freq, RepetitionPenalty: &rep, N: &n, Logprobs: &logprobs}
		for i := 0; i < int(nStop%8); i++ {
			b.Stop = append(b.Stop, stop)
		}
		p, err := b.Params()
		if err != nil {
			return
		}
		checkParams(t, p)
		if p.Validate() != nil {
			t.Fatal("Params returned params that do not validate")
		}
	})
}

func checkParams(t *testing.T, p model.SamplingParams) {
	t.Helper()
	q := p.WithDefaults()
	in := func(v, lo, hi float32) bool { return v >= lo && v <= hi } // false for NaN
	switch {
	case q.MaxTokens < 1 || q.MaxTokens > model.MaxTokensLimit,
		q.N < 1 || q.N > model.MaxChoices,
		q.Logprobs < 0 || q.Logprobs > model.MaxLogprobs,
		len(q.Stop) > model.MaxStopSequences,
		q.TopK < 0,
		!in(q.Temperature, 0, 2), !in(q.TopP, math.SmallestNonzeroFloat32, 1), !in(q.MinP, 0, 1),
		!in(q.PresencePenalty, -2, 2), !in(q.FrequencyPenalty, -2, 2),
		!(q.RepetitionPenalty > 0) || math.IsInf(float64(q.RepetitionPenalty), 0):
		t.Fatalf("accepted out-of-range params: %+v", p)
	}
	for _, s := range q.Stop {
		if s == "" || len(s) > model.MaxStopBytes {
			t.Fatalf("accepted stop sequence of %d bytes", len(s))
		}
	}
}

// FuzzCompletionsBodyJSON decodes a request body the way a batch line's body
// is decoded, then validates it.
func FuzzCompletionsBodyJSON(f *testing.F) {
	for _, s := range []string{
		`{"prompt":"x","max_tokens":32,"temperature":0.7,"stop":["a","b"]}`,
		`{"prompt":"x","stop":"a"}`, `{"prompt":"x","stop":null}`, `{"prompt":"x","stop":[1]}`,
		`{"prompt":"x","top_p":1e39}`, `{"prompt":"x","seed":-9223372036854775808}`, `{"prompt":"x","n":-0}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var b CompletionsBody
		if err := json.Unmarshal(data, &b); err != nil {
			return
		}
		p, err := b.Params()
		if err != nil {
			return
		}
		checkParams(t, p)
	})
}

// top_p 0, which OpenAI's API takes, keeps the smallest set of tokens
// whose mass reaches 0: the most likely one alone.
func TestTopPZeroKeepsTheMostLikelyToken(t *testing.T) {
	zero := float32(0)
	p, err := CompletionsBody{TopP: &zero}.Params()
	if err != nil {
		t.Fatal(err)
	}
	if p.TopK != 1 || p.TopP != 1 {
		t.Fatalf("top_p 0: top_k %d, top_p %v; want top_k 1, top_p 1", p.TopK, p.TopP)
	}
}
