package generation

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/tandem-ai/tandem/loop"
	"github.com/tandem-ai/tandem/model"
)

// TestDefaultChatFormatIsTheSessionTranscript: a conversation of user and
// assistant messages, replies as generated, is written exactly as a
// session with those turns, so chat and sessions give the model the same
// text; the format's stop is the sessions' turn boundary.
func TestDefaultChatFormatIsTheSessionTranscript(t *testing.T) {
	turns := []loop.Turn{{Prompt: "Hi", Reply: " Hello."}, {Prompt: "How are you?", Reply: " Fine"}}
	var msgs []ChatMessage
	for _, tr := range turns {
		msgs = append(msgs, ChatMessage{Role: RoleUser, Content: ChatContent(tr.Prompt)}, ChatMessage{Role: RoleAssistant, Content: ChatContent(tr.Reply)})
	}
	msgs = append(msgs, ChatMessage{Role: RoleUser, Content: "Bye"})
	if got, want := DefaultChatFormat.Render(msgs), loop.Transcript("", turns, "Bye"); got != want {
		t.Fatalf("chat %q, session %q", got, want)
	}
	sys := DefaultChatFormat.Render([]ChatMessage{{Role: RoleSystem, Content: "Be brief."}, {Role: RoleUser, Content: "Hi"}})
	if sys != "System: Be brief.\nUser: Hi\nAssistant:" {
		t.Fatalf("with a system message: %q", sys)
	}
	p := model.SamplingParams{Stop: []string{"."}}
	DefaultChatFormat.AddStop(&p)
	if len(p.Stop) != 2 || p.Stop[1] != loop.TurnStop {
		t.Fatalf("stops %q", p.Stop)
	}
}

func TestReadChatFormat(t *testing.T) {
	f, err := ReadChatFormat(strings.NewReader(`{"user":"<|user|>\n","assistant":"<|assistant|>\n","separator":"<|end|>\n","stop":"<|end|>"}`))
	if err != nil {
		t.Fatal(err)
	}
	if got := f.Render([]ChatMessage{{Role: RoleSystem, Content: "s"}, {Role: RoleUser, Content: "u"}}); got != "System: s<|end|>\n<|user|>\nu<|end|>\n<|assistant|>\n" {
		t.Fatalf("rendered %q (system keeps the default prefix)", got)
	}
	for body, want := range map[string]string{
		`{"user":"U: ","assistant":"A:","bos":"x"}`:                                               `unknown field "bos"`,
		`{"user":"","assistant":"A:"}`:                                                            `user and assistant`,
		`{"user":"U","assistant":"A","stop":"` + strings.Repeat("s", model.MaxStopBytes+1) + `"}`: `stop`,
		`[]`: ChatFormatFile,
	} {
		if _, err := ReadChatFormat(strings.NewReader(body)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v; want an error naming %s", body, err, want)
		}
	}
}

// TestChatMessagesAndBody: text parts are joined, other parts and roles
// are refused naming the field, and the body's fields map onto the
// completions body.
func TestChatMessagesAndBody(t *testing.T) {
	var msgs []ChatMessage
	if err := json.Unmarshal([]byte(`[{"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]},{"role":"assistant","content":null}]`), &msgs); err != nil {
		t.Fatal(err)
	}
	if msgs[0].Content != "ab" || msgs[1].Content != "" {
		t.Fatalf("messages %+v", msgs)
	}
	if err := json.Unmarshal([]byte(`[{"role":"user","content":[{"type":"input_audio","text":"a"}]}]`), &msgs); err == nil || !strings.Contains(err.Error(), "content[0].type") {
		t.Fatalf("an audio part: %v", err)
	}
	var fe *ChatFieldError
	err := ValidateChatMessages([]ChatMessage{{Role: RoleUser, Content: "x"}, {Role: "developer", Content: "y"}}, 10)
	if !errors.As(err, &fe) || fe.Param != "messages[1].role" {
		t.Fatalf("a developer message: %v", err)
	}
	if err := ValidateChatMessages([]ChatMessage{{Role: RoleUser, Content: "too long"}}, 3); !errors.As(err, &fe) || fe.Param != "messages" {
		t.Fatalf("too long: %v", err)
	}
	two, three := 2, 3
	c, err := ChatBody{Model: "m", MaxCompletionTokens: &three, Logprobs: true, TopLogprobs: new(int)}.Completions()
	if err != nil || *c.MaxTokens != 3 || *c.Logprobs != 1 {
		t.Fatalf("completions body %+v, %v", c, err)
	}
	if _, err := (ChatBody{MaxTokens: &two, MaxCompletionTokens: &three}).Completions(); !errors.As(err, &fe) || fe.Param != "max_tokens" {
		t.Fatalf("max_tokens and max_completion_tokens differing: %v", err)
	}
	e := NewChatTokenLogprob(LogprobEntry{Text: "é", Logprob: -1, Top: []LogprobAlt{{Text: "é", Logprob: -1}, {Text: "a", Logprob: -2}}}, 1)
	if len(e.Bytes) != 2 || e.Bytes[0] != 0xc3 || len(e.TopLogprobs) != 1 {
		t.Fatalf("chat logprob %+v", e)
	}
}

// TestResponseKeepsItsChatBody: a batch response of a chat line writes
// and reads back a chat.completion body; a completion's stays as it was.
func TestResponseKeepsItsChatBody(t *testing.T) {
	for _, r := range []Response{
		{StatusCode: 200, Chat: &ChatCompletion{ID: "chatcmpl-1", Object: "chat.completion", Choices: []ChatChoice{{Message: ChatMessage{Role: RoleAssistant, Content: "hi"}}}}},
		{StatusCode: 200, Body: CompletionResponse{ID: "cmpl-1", Object: "text_completion", Choices: []Choice{{Text: "hi"}}}},
	} {
		b, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		var back Response
		if err := json.Unmarshal(b, &back); err != nil {
			t.Fatal(err)
		}
		again, _ := json.Marshal(back)
		if string(again) != string(b) || (r.Chat != nil) != (back.Chat != nil) {
			t.Fatalf("%s read back as %s", b, again)
		}
	}
}

// TestTrimChatLeavesOutTheOldestTurns trims a long conversation to a
// budget of real tokens: system messages (at the start and in the middle)
// stay, the last user message and the assistant message after it stay,
// the oldest other messages go first, and no fewer would do; a
// conversation that fits is left alone, and one whose last user message
// is over budget by itself comes back as that message with the system
// messages, over budget, for the caller to refuse.
func TestTrimChatLeavesOutTheOldestTurns(t *testing.T) {
	tok, err := model.NewTokenizer()
	if err != nil {
		t.Fatal(err)
	}
	tokens := func(m []ChatMessage) int { return len(tok.Encode(DefaultChatFormat.Render(m))) }
	msgs := []ChatMessage{{Role: RoleSystem, Content: "Be brief."}}
	for i := range 12 {
		msgs = append(msgs, ChatMessage{Role: RoleUser, Content: ChatContent(fmt.Sprintf("question %d about the weather in the hills", i))},
			ChatMessage{Role: RoleAssistant, Content: ChatContent(fmt.Sprintf(" answer %d, it is fine", i))})
		if i == 5 {
			msgs = append(msgs, ChatMessage{Role: RoleSystem, Content: "Now be formal."})
		}
	}
	msgs = append(msgs, ChatMessage{Role: RoleUser, Content: "And tomorrow?"}, ChatMessage{Role: RoleAssistant, Content: " Tomorrow"})

	if kept, dropped := TrimChat(msgs, tokens(msgs), tokens); dropped != 0 || len(kept) != len(msgs) {
		t.Fatalf("a conversation that fits: %d kept, %d dropped", len(kept), dropped)
	}
	const budget = 80
	kept, dropped := TrimChat(msgs, budget, tokens)
	if n := tokens(kept); n > budget || dropped == 0 || len(kept)+dropped != len(msgs) {
		t.Fatalf("%d tokens in %d kept messages, %d dropped; want at most %d", n, len(kept), dropped, budget)
	}
	// What is left is the system messages and the newest other messages,
	// in order; leaving out one fewer would not fit.
	less := func(d int) []ChatMessage {
		var out []ChatMessage
		for _, m := range msgs {
			if m.Role != RoleSystem && d > 0 {
				d--
				continue
			}
			out = append(out, m)
		}
		return out
	}
	if fmt.Sprint(kept[len(kept)-2:]) != fmt.Sprint(msgs[len(msgs)-2:]) {
		t.Fatalf("kept %v; want it to end with the last user message and the reply after it", kept)
	}
	if fmt.Sprint(kept) != fmt.Sprint(less(dropped)) {
		t.Fatalf("kept %v\nwant %v", kept, less(dropped))
	}
	if n := tokens(less(dropped - 1)); n <= budget {
		t.Fatalf("leaving out %d messages would have fit (%d tokens), %d were", dropped-1, n, dropped)
	}

	long := ChatMessage{Role: RoleUser, Content: ChatContent(strings.Repeat("word ", 100))}
	over := append(msgs[:len(msgs):len(msgs)], long)
	kept, _ = TrimChat(over, budget, tokens)
	wantSys := []ChatMessage{msgs[0], {Role: RoleSystem, Content: "Now be formal."}, long}
	if fmt.Sprint(kept) != fmt.Sprint(wantSys) || tokens(kept) <= budget {
		t.Fatalf("a last message over budget: kept %v", kept)
	}
}
