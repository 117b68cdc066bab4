package jobs

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/tandem-ai/tandem/generation"
	"github.com/tandem-ai/tandem/loop"
	"github.com/tandem-ai/tandem/model"
	"github.com/tandem-ai/tandem/pipeline"
	"github.com/tandem-ai/tandem/registry"
	"github.com/tandem-ai/tandem/tokenstream"
)

func TestInteractiveArgsValidateNamesTheField(t *testing.T) {
	ok := InteractiveArgs{ID: NewCompletionID(), StreamKey: pipeline.NewSealKey(), Body: generation.CompletionsBody{Model: "builtin:tiny", Prompt: "hi"}}
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	// n and logprobs within their bounds are accepted.
	three, two := 3, 2
	ok3 := ok
	ok3.Body.N, ok3.Body.Logprobs = &three, &two
	if err := ok3.Validate(); err != nil {
		t.Fatal(err)
	}
	// A chat may be given in a session; its messages are its history.
	chat := []generation.ChatMessage{{Role: generation.RoleUser, Content: "hi"}}
	inSession := ok
	inSession.Body.Prompt, inSession.Session, inSession.Prefix, inSession.Messages = "", "s1", "Tone: formal.\n", chat
	if err := inSession.Validate(); err != nil {
		t.Fatal(err)
	}
	// Several prompts, or token ids, each with n choices, within the bound
	// on prompts × n.
	okList := ok
	okList.Body.Prompt, okList.Body.N = "", &two
	okList.Prompts = Prompts{Texts: []string{"a", "b"}}
	okIDs := okList
	okIDs.Prompts = Prompts{Tokens: [][]int32{{1, 2}, {model.EOTToken}}}
	for _, a := range []InteractiveArgs{okList, okIDs} {
		if err := a.Validate(); err != nil || a.Choices() != 4 {
			t.Fatalf("%+v: Validate() = %v, %d choices; want nil, 4", a.Prompts, err, a.Choices())
		}
	}
	many, big, lp := MaxInteractiveChoices+1, MaxInteractiveTokens+1, model.MaxLogprobs+1
	longID := "cmpl-" + strings.Repeat("a", pipeline.MaxTokenLen-5)
	hot := float32(3)
	for field, mutate := range map[string]func(a *InteractiveArgs){
		"id":                            func(a *InteractiveArgs) { a.ID = "a.b" },
		"model":                         func(a *InteractiveArgs) { a.Body.Model = "" },
		"prompt":                        func(a *InteractiveArgs) { a.Body.Prompt = strings.Repeat("p", MaxInteractivePromptBytes+1) },
		"n:":                            func(a *InteractiveArgs) { a.Body.N = &many },
		"n: 2 with":                     func(a *InteractiveArgs) { a.Session, a.Body.N = "s1", &two },
		"id: the record id of choice 2": func(a *InteractiveArgs) { a.ID, a.Body.N = longID, &three },
		"max_tokens":                    func(a *InteractiveArgs) { a.Body.MaxTokens = &big },
		"logprobs":                      func(a *InteractiveArgs) { a.Body.Logprobs = &lp },
		"temperature":                   func(a *InteractiveArgs) { a.Body.Temperature = &hot },
		"session":                       func(a *InteractiveArgs) { a.Prefix = "Tone: formal.\n" },
		"history":                       func(a *InteractiveArgs) { a.Session, a.History = "s1", make([]loop.Turn, loop.MaxSessionTurns+1) },
		"user":                          func(a *InteractiveArgs) { a.Body.User = "a\nb" },
		"topic":                         func(a *InteractiveArgs) { a.Topic = strings.Repeat("t", loop.MaxRecordIDBytes+1) },
		"messages: a chat":              func(a *InteractiveArgs) { a.Body.Prompt, a.History, a.Messages = "", []loop.Turn{{}}, chat },
		"replaces":                      func(a *InteractiveArgs) { a.Replaces = "cmpl-1" }, // without a session
		"replaces: ":                    func(a *InteractiveArgs) { a.Session, a.Replaces = "s1", "a.b" },
		"stream_key":                    func(a *InteractiveArgs) { a.StreamKey = "" },
		"stream_key:":                   func(a *InteractiveArgs) { a.StreamKey = "abc" },
		"prompt: given twice":           func(a *InteractiveArgs) { a.Prompts = okList.Prompts },
		"prompt: a list of prompts":     func(a *InteractiveArgs) { a.Body.Prompt, a.Session, a.Prompts = "", "s1", okList.Prompts },
		"prompt: 3 prompts with n = 8 make 24 choices, at most 16": func(a *InteractiveArgs) {
			a.Body.Prompt, a.Body.N, a.Prompts = "", &[]int{8}[0], Prompts{Texts: []string{"a", "b", "c"}}
		},
		"prompt[1]: empty string": func(a *InteractiveArgs) { a.Body.Prompt, a.Prompts = "", Prompts{Texts: []string{"a", ""}} },
		"prompt[1]: 16385 bytes": func(a *InteractiveArgs) {
			a.Body.Prompt, a.Prompts = "", Prompts{Texts: []string{"a", strings.Repeat("p", MaxInteractivePromptBytes+1)}}
		},
		"prompt[1]: token id 50257 outside the vocabulary": func(a *InteractiveArgs) {
			a.Body.Prompt, a.Prompts = "", Prompts{Tokens: [][]int32{{3, model.EOTToken + 1}}, One: true}
		},
		"prompt[1][0]: token id -1 is negative": func(a *InteractiveArgs) { a.Body.Prompt, a.Prompts = "", Prompts{Tokens: [][]int32{{1}, {-1}}} },
		"id: the record id of choice 3": func(a *InteractiveArgs) {
			a.ID, a.Body.Prompt, a.Body.N, a.Prompts = longID, "", &two, okList.Prompts
		},
	} {
		a := ok
		mutate(&a)
		if err := a.Validate(); err == nil || !strings.Contains(err.Error(), field) {
			t.Errorf("%s: Validate() = %v, want an error naming it", field, err)
		}
	}
}

func TestValidUTF8MatchesJSON(t *testing.T) {
	for in, want := range map[string]string{
		"plain":         "plain",
		"cut \xe2\x80":  "cut \ufffd\ufffd",
		"\x80lone":      "\ufffdlone",
		"ok é and \xff": "ok é and \ufffd",
	} {
		if got := validUTF8(in); got != want || !utf8.ValidString(got) {
			t.Errorf("validUTF8(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestComposePromptDropsOldestTurnsToFit(t *testing.T) {
	tok, err := generation.NewModelStore(OpenEnvDataRoot).Tokenizer()
	if err != nil {
		t.Fatal(err)
	}
	var history []loop.Turn
	for i := range 10 {
		history = append(history, loop.Turn{Prompt: strings.Repeat("word ", 10) + string(rune('a'+i)), Reply: " fine"})
	}
	a := InteractiveArgs{Session: "s1", Prefix: "Tone: formal.\n", History: history, Body: generation.CompletionsBody{Prompt: "now"}}
	var res interactiveResult
	ids, err := composePrompt(tok, 128, a, generation.DefaultChatFormat, 32, &res)
	if err != nil {
		t.Fatal(err)
	}
	if len(ids) > 128-32 || res.DroppedTurns == 0 || res.DroppedTurns == len(history) {
		t.Fatalf("%d prompt tokens, %d turns dropped: want the newest turns that fit 96 tokens", len(ids), res.DroppedTurns)
	}
	if want := loop.Transcript(a.Prefix, history[res.DroppedTurns:], "now"); res.Prompts[0] != want {
		t.Fatalf("prompt %q, want %q", res.Prompts[0], want)
	}
	// A prompt that cannot fit even alone is refused as too long.
	a.Body.Prompt = strings.Repeat("word ", 200)
	if _, err := composePrompt(tok, 128, a, generation.DefaultChatFormat, 32, &res); err == nil || !strings.Contains(err.Error(), "prompt") {
		t.Fatalf("oversized prompt: %v", err)
	}
}

// TestComposePromptTrimsAChat: a chat in a session is written after the
// session's prefix, its oldest messages left out until it fits with room
// for max_tokens; one whose last user message cannot fit even alone is
// refused with the context error, naming messages for the client.
func TestComposePromptTrimsAChat(t *testing.T) {
	tok, err := generation.NewModelStore(OpenEnvDataRoot).Tokenizer()
	if err != nil {
		t.Fatal(err)
	}
	msgs := []generation.ChatMessage{{Role: generation.RoleSystem, Content: "Be brief."}}
	for i := range 10 {
		msgs = append(msgs, generation.ChatMessage{Role: generation.RoleUser, Content: generation.ChatContent(strings.Repeat("word ", 10) + string(rune('a'+i)))},
			generation.ChatMessage{Role: generation.RoleAssistant, Content: " fine"})
	}
	msgs = append(msgs, generation.ChatMessage{Role: generation.RoleUser, Content: "now"})
	a := InteractiveArgs{Session: "s1", Prefix: "Tone: formal.\n", Messages: msgs}
	var res interactiveResult
	ids, err := composePrompt(tok, 128, a, generation.DefaultChatFormat, 32, &res)
	if err != nil {
		t.Fatal(err)
	}
	kept := append([]generation.ChatMessage{msgs[0]}, msgs[1+res.DroppedTurns:]...)
	if len(ids) > 128-32 || res.DroppedTurns == 0 || res.Prompts[0] != a.Prefix+generation.DefaultChatFormat.Render(kept) {
		t.Fatalf("%d prompt tokens, %d messages dropped, prompt %q", len(ids), res.DroppedTurns, res.Prompts[0])
	}
	a.Messages = append(msgs, generation.ChatMessage{Role: generation.RoleUser, Content: generation.ChatContent(strings.Repeat("word ", 200))})
	_, err = composePrompt(tok, 128, a, generation.DefaultChatFormat, 32, &res)
	if f := faultOf(err, nil); f.Code != tokenstream.CodeContext || f.Param != "messages" || !strings.Contains(f.Message, "context holds 128") {
		t.Fatalf("a last message too long: %v, fault %+v", err, f)
	}
}

// TestComposePromptsNamesThePromptAtFault: several prompts are tokenised
// in order, texts as they are and token ids as given (decoded for the
// record), and what only the model can refuse names the prompt at fault:
// a token id past its vocabulary, a prompt its context cannot hold; the
// client's error carries that name as its param.
func TestComposePromptsNamesThePromptAtFault(t *testing.T) {
	tok, err := generation.NewModelStore(OpenEnvDataRoot).Tokenizer()
	if err != nil {
		t.Fatal(err)
	}
	cfg := model.Config{NPositions: 8, VocabSize: 16}
	a := InteractiveArgs{Prompts: Prompts{Texts: []string{"one", "two words"}}}
	var res interactiveResult
	got, err := composePrompts(tok, cfg, a, generation.DefaultChatFormat, 4, &res)
	if err != nil || len(got) != 2 || !slices.Equal(got[1], tok.Encode("two words")) || !slices.Equal(res.Prompts, a.Prompts.Texts) {
		t.Fatalf("texts: %v, %v, records %q", got, err, res.Prompts)
	}
	a.Prompts = Prompts{Tokens: [][]int32{{1, 2}, {3, 4, 5}}}
	if got, err = composePrompts(tok, cfg, a, generation.DefaultChatFormat, 4, &res); err != nil || !slices.Equal(got[1], []int32{3, 4, 5}) || res.Prompts[1] != tok.Decode([]int32{3, 4, 5}) {
		t.Fatalf("token ids: %v, %v, records %q", got, err, res.Prompts)
	}
	for _, c := range []struct {
		prompts     Prompts
		code, param string
	}{
		{Prompts{Tokens: [][]int32{{1}, {2, 16}}}, tokenstream.CodeInvalid, "prompt[1][1]"},
		{Prompts{Tokens: [][]int32{{1, 2, 3, 4, 5, 6, 7, 8}}, One: true}, tokenstream.CodeContext, "prompt"},
		{Prompts{Texts: []string{"fits", strings.Repeat("word ", 20)}}, tokenstream.CodeContext, "prompt[1]"},
	} {
		a.Prompts = c.prompts
		_, err := composePrompts(tok, cfg, a, generation.DefaultChatFormat, 4, &res)
		f := faultOf(err, nil)
		if f.Code != c.code || f.Param != c.param || !strings.HasPrefix(f.Message, c.param+": ") {
			t.Errorf("%+v: %+v; want %s naming %s", c.prompts, f, c.code, c.param)
		}
	}
}

// A client reading an interactive job (GET /v1/jobs/{id}) never sees its
// stream key; other kinds are shown as they are.
func TestPublicPayloadHidesTheStreamKey(t *testing.T) {
	key := pipeline.NewSealKey()
	payload := []byte(`{"id":"cmpl-1","body":{"model":"builtin:tiny","prompt":"hi"},"stream_key":"` + key + `"}`)
	got := string(PublicPayload(KindInteractive, payload))
	if strings.Contains(got, key) || !strings.Contains(got, `"prompt":"hi"`) {
		t.Fatalf("interactive payload shown as %s; want it without the stream key", got)
	}
	if other := PublicPayload("eval", payload); string(other) != string(payload) {
		t.Fatalf("another kind's payload changed: %s", other)
	}
}

// TestFaultNamesOnlyWhatTheClientCaused: a generation's error reaches the
// client with its reason when the request caused it, and as a fixed
// message otherwise, since a worker's errors name its hosts and paths.
func TestFaultNamesOnlyWhatTheClientCaused(t *testing.T) {
	for _, c := range []struct {
		err        error
		ctxErr     error
		code, text string
	}{
		{&interactiveError{tokenstream.CodeModel, fmt.Errorf("model %q: %w", "nope", generation.ErrModelNotFound)}, nil, tokenstream.CodeModel, `model "nope": not found`},
		{&interactiveError{tokenstream.CodeModel, fmt.Errorf("model %q: %w", "m", registry.ErrNoPromoted)}, nil, tokenstream.CodeModel, "no promoted version"},
		{&interactiveError{tokenstream.CodeModel, fmt.Errorf("model: %w %q", generation.ErrUnknownBuiltin, "builtin:huge")}, nil, tokenstream.CodeModel, "builtin:huge"},
		{&interactiveError{tokenstream.CodeContext, errors.New("prompt: 900 tokens")}, nil, tokenstream.CodeContext, "prompt: 900 tokens"},
		{&interactiveError{tokenstream.CodeModel, errors.New(`model "m": registry: dial tcp 10.0.0.5:6379: connection refused`)}, nil, tokenstream.CodeFailed, msgWorkerFailed},
		{errors.New("open /srv/tandem/.tandem/registry/m/v1/model.safetensors: input/output error"), nil, tokenstream.CodeFailed, msgWorkerFailed},
		{context.DeadlineExceeded, context.DeadlineExceeded, tokenstream.CodeTimeout, msgWorkerFailed},
	} {
		f := faultOf(c.err, c.ctxErr)
		if f.Code != c.code || !strings.Contains(f.Message, c.text) {
			t.Errorf("faultOf(%v) = %s %q; want %s with %q", c.err, f.Code, f.Message, c.code, c.text)
		}
		if strings.Contains(f.Message, "10.0.0.5") || strings.Contains(f.Message, "/srv/") {
			t.Errorf("faultOf(%v) tells the client %q", c.err, f.Message)
		}
	}
}
