package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"reflect"
	"strings"
	"testing"

	"github.com/tandem-ai/tandem/generation"
	"github.com/tandem-ai/tandem/jobs"
	"github.com/tandem-ai/tandem/tokenstream"
)

// TestCompletionChoicesStreamAsTheyCollect asks for n = 3 at a fixed seed:
// the stream's token chunks name choices 0 to 2, each choice ends with a
// chunk of its own, and the usage counts every choice's tokens; the same
// request unstreamed returns three choices with the same texts and finish
// reasons, and each choice is recorded under its own id for feedback.
func TestCompletionChoicesStreamAsTheyCollect(t *testing.T) {
	const n = 3
	e := newGenEnv(t, "")
	e.startWorker(t)
	const body = `{"model":"builtin:tiny","prompt":"The loop","max_tokens":12,"temperature":0.9,"seed":11,"n":3,"user":"u1","stream":true}`
	s := e.stream(t, context.Background(), body, nil)
	if s.err != nil {
		t.Fatal(s.err)
	}
	perChoice := map[int]int{}
	for _, c := range s.tokens {
		if c.Index < 0 || c.Index >= n || c.Logprobs != nil {
			t.Fatalf("token chunk %+v: want a choice in [0, %d) and no logprobs (none asked)", c, n)
		}
		perChoice[c.Index]++
	}
	if len(perChoice) != n || len(s.finishes) != n || s.last.Usage == nil || s.last.Usage.CompletionTokens != len(s.tokens) || s.last.Choices[0].Index != n-1 {
		t.Fatalf("streamed tokens of choices %v, endings %v, last chunk %+v after %d token chunks", perChoice, s.finishes, s.last, len(s.tokens))
	}

	var resp generation.CompletionResponse
	if code, msg := e.postJSON(t, "/v1/completions", strings.Replace(body, `,"stream":true`, "", 1), &resp); code != http.StatusOK {
		t.Fatalf("non-streaming: %d %s", code, msg)
	}
	if len(resp.Choices) != n || resp.Usage != *s.last.Usage {
		t.Fatalf("non-streaming: %d choices, usage %+v; streamed %d, usage %+v", len(resp.Choices), resp.Usage, n, *s.last.Usage)
	}
	for i, ch := range resp.Choices {
		if ch.Index != i || ch.Text != s.choiceText(i) || ch.FinishReason != s.finishes[i] || ch.Logprobs != nil {
			t.Fatalf("choice %d: %+v; streamed %q ending %q", i, ch, s.choiceText(i), s.finishes[i])
		}
		// Each choice's record holds its text, under the id feedback names.
		rec := waitRecord(t, e, jobs.ChoiceID(resp.ID, i))
		if rec.Text != ch.Text || rec.FinishReason != ch.FinishReason || rec.Tokens != perChoice[i] || rec.User != "u1" || rec.Prompt != "The loop" {
			t.Fatalf("record of choice %d: %+v; choice %+v of %d tokens", i, rec, ch, perChoice[i])
		}
	}
	if resp.Choices[0].Text == resp.Choices[1].Text && resp.Choices[1].Text == resp.Choices[2].Text {
		t.Fatalf("three sampled choices are one text %q: the choices share a sampler", resp.Choices[0].Text)
	}
}

// TestCompletionLogprobsAreTheChosenTokens asks for logprobs = 2, greedy,
// with n = 2: every token comes with its log probability and two
// alternatives, the first of which (on the token stream) is the chosen
// token; the OpenAI object has the chosen token's text among the
// alternatives with its log probability, the highest, and text offsets
// that add up; streamed chunks carry the same entries one at a time.
func TestCompletionLogprobsAreTheChosenTokens(t *testing.T) {
	e := newGenEnv(t, "")
	e.startWorker(t)
	tap := tapTokens(t, e)
	const body = `{"model":"builtin:tiny","prompt":"The loop","max_tokens":8,"temperature":0,"logprobs":2,"n":2}`
	var resp generation.CompletionResponse
	if code, msg := e.postJSON(t, "/v1/completions", body, &resp); code != http.StatusOK {
		t.Fatalf("non-streaming: %d %s", code, msg)
	}
	if len(resp.Choices) != 2 {
		t.Fatalf("%d choices, want 2", len(resp.Choices))
	}
	total := 0
	for i, ch := range resp.Choices {
		lp := ch.Logprobs
		if lp == nil || len(lp.Tokens) == 0 || len(lp.TokenLogprobs) != len(lp.Tokens) || len(lp.TopLogprobs) != len(lp.Tokens) || len(lp.TextOffset) != len(lp.Tokens) {
			t.Fatalf("choice %d: logprobs %+v", i, lp)
		}
		total += len(lp.Tokens)
		for j, tok := range lp.Tokens {
			top, chosen := lp.TopLogprobs[j], lp.TokenLogprobs[j]
			v, ok := top[tok]
			if len(top) < 1 || len(top) > 2 || !ok || math.Abs(float64(v-chosen)) > 1e-6 {
				t.Fatalf("choice %d token %d %q (%g): alternatives %v; want at most 2 holding it", i, j, tok, chosen, top)
			}
			for alt, w := range top {
				if w > chosen+1e-6 {
					t.Fatalf("choice %d token %d: greedy chose %q (%g) over %q (%g)", i, j, tok, chosen, alt, w)
				}
			}
			want := 0
			if j > 0 {
				want = lp.TextOffset[j-1] + len(lp.Tokens[j-1])
			}
			if lp.TextOffset[j] != want {
				t.Fatalf("choice %d: text offsets %v for tokens %q", i, lp.TextOffset, lp.Tokens)
			}
		}
	}
	if total != resp.Usage.CompletionTokens {
		t.Fatalf("%d tokens with logprobs, usage counts %d", total, resp.Usage.CompletionTokens)
	}

	// Streamed, each token chunk carries its own entry; joined per choice
	// they are the unstreamed object (greedy: the same tokens).
	s := e.stream(t, context.Background(), strings.Replace(body, `}`, `,"stream":true}`, 1), nil)
	if s.err != nil {
		t.Fatal(s.err)
	}
	joined := make([]generation.ChoiceLogprobs, 2)
	for _, c := range s.tokens {
		if c.Logprobs == nil || len(c.Logprobs.Tokens) != 1 {
			t.Fatalf("token chunk %+v: want the logprobs of its one token", c)
		}
		j := &joined[c.Index]
		j.Tokens = append(j.Tokens, c.Logprobs.Tokens...)
		j.TokenLogprobs = append(j.TokenLogprobs, c.Logprobs.TokenLogprobs...)
		j.TopLogprobs = append(j.TopLogprobs, c.Logprobs.TopLogprobs...)
		j.TextOffset = append(j.TextOffset, c.Logprobs.TextOffset...)
	}
	for i := range joined {
		if !reflect.DeepEqual(&joined[i], resp.Choices[i].Logprobs) {
			t.Fatalf("choice %d: streamed logprobs %+v, unstreamed %+v", i, joined[i], *resp.Choices[i].Logprobs)
		}
	}
	// On the token stream the alternatives are in order, most likely
	// first: greedy, that is the chosen token.
	for _, m := range tap(s.id) {
		if m.Type != tokenstream.TypeToken {
			continue
		}
		if m.Logprobs == nil || len(m.Logprobs.Top) != 2 || m.Logprobs.Top[0].Token != *m.Token || m.Logprobs.Top[0].Logprob != m.Logprobs.Logprob {
			t.Fatalf("token message %+v with logprobs %+v: want 2 alternatives, the first the chosen token", m, m.Logprobs)
		}
	}
}

// TestCompletionChoicesRefusedInASession: a session keeps one reply per
// turn, so n > 1 with a session is refused, naming n.
func TestCompletionChoicesRefusedInASession(t *testing.T) {
	e := newGenEnv(t, "")
	var sess sessionView
	if code, msg := e.postJSON(t, "/v1/sessions", `{"user":"u1"}`, &sess); code != http.StatusCreated {
		t.Fatalf("create session: %d %s", code, msg)
	}
	body := fmt.Sprintf(`{"model":"builtin:tiny","prompt":"x","session":%q,"n":2}`, sess.ID)
	if code, msg := e.postJSON(t, "/v1/completions", body, nil); code != http.StatusBadRequest || !strings.Contains(msg, "n: 2") || !strings.Contains(msg, "session") {
		t.Fatalf("n=2 in a session: %d %s, want 400 naming n", code, msg)
	}
}

// TestDroppedClientCancelsEveryChoice: a client that leaves a stream of
// three choices after the first token stops all three; each is recorded
// as cancelled and the job ends without a retry.
func TestDroppedClientCancelsEveryChoice(t *testing.T) {
	e := newGenEnv(t, "")
	e.startWorker(t)
	body := fmt.Sprintf(`{"model":%q,"prompt":"Go on and on","max_tokens":%d,"n":3,"logprobs":1,"stream":true}`, longContextModel(t), jobs.MaxInteractiveTokens)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stop := errors.New("client leaves")
	got := e.stream(t, ctx, body, func() error {
		cancel()
		return stop
	})
	if got.id == "" || !errors.Is(got.err, stop) && !errors.Is(got.err, context.Canceled) {
		t.Fatalf("stream: id %q err %v", got.id, got.err)
	}
	for i := range 3 {
		rec := waitRecord(t, e, jobs.ChoiceID(got.id, i))
		if rec.FinishReason != jobs.FinishCancelled || rec.Tokens >= jobs.MaxInteractiveTokens-10 {
			t.Fatalf("record of choice %d after the client left: finish %q after %d tokens, want cancelled well before %d", i, rec.FinishReason, rec.Tokens, jobs.MaxInteractiveTokens)
		}
	}
	waitQueueIdle(t, e)
}
