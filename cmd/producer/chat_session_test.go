package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
)

// getSessionAs reads session id as token.
func getSessionAs(t *testing.T, base, token, id string) sessionView {
	t.Helper()
	code, msg := callAs(t, base, token, "GET", "/v1/sessions/"+id, "")
	var s sessionView
	if code != http.StatusOK || json.Unmarshal([]byte(msg), &s) != nil {
		t.Fatalf("GET /v1/sessions/%s: %d %s", id, code, msg)
	}
	return s
}

// TestChatInASessionIsATurn: the official client, given the session as
// the extension field session (option.WithJSONSet, as Python's
// extra_body), gets a reply generated from its messages after the
// session's instructions (the session's length caps it), recorded in the
// session as a turn of the last user message and the reply under the
// chatcmpl- id; ratings, edits and regenerate feedback are taken on that
// id, and the regenerated reply (replaces) takes the turn's place; the
// next message adds a turn. Another user's session is 403 and an unknown
// one 404, both naming session; a session takes n = 1.
func TestChatInASessionIsATurn(t *testing.T) {
	e := newUserEnv(t)
	sess := createSession(t, e.srv, aliceToken, `{"instructions":"length: 3; tone: formal"}`)
	alice := oaiClientAt(e.srv, aliceToken)
	ctx := context.Background()
	msgs := []openai.ChatCompletionMessageParamUnion{openai.SystemMessage("Be brief."), openai.UserMessage("Hi")}
	params := openai.ChatCompletionNewParams{Model: "builtin:tiny", Messages: msgs}
	resp, err := alice.Chat.Completions.New(ctx, params, option.WithJSONSet("session", sess.ID))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(resp.ID, "chatcmpl-") || resp.Usage.CompletionTokens > 3 {
		t.Fatalf("answer %s; want a chatcmpl- id and at most the session's 3 tokens", resp.RawJSON())
	}
	reply := resp.Choices[0].Message.Content
	got := getSessionAs(t, e.srv, aliceToken, sess.ID)
	if len(got.Turns) != 1 || got.Turns[0].Prompt != "Hi" || got.Turns[0].Reply != reply || got.Turns[0].GenerationID != resp.ID {
		t.Fatalf("session turns %+v; want one turn of Hi and %q as %s", got.Turns, reply, resp.ID)
	}
	rec := waitRecord(t, e.genEnv, resp.ID)
	if rec.Session != sess.ID || rec.User != "alice" || rec.Prompt != "Tone: formal.\nSystem: Be brief.\nUser: Hi\nAssistant:" {
		t.Fatalf("record %+v", rec)
	}

	before := feedbackStreamMsgs(t, e.recs)
	for _, fb := range []string{`{"action":"rate","value":4}`, `{"action":"edit","edited_text":"Hello."}`, `{"action":"regenerate"}`} {
		if code, msg := callAs(t, e.srv, aliceToken, "POST", "/v1/generations/"+resp.ID+"/feedback", fb); code != http.StatusAccepted {
			t.Fatalf("feedback %s on %s: %d %s", fb, resp.ID, code, msg)
		}
	}
	if n := feedbackStreamMsgs(t, e.recs); n != before+3 {
		t.Fatalf("%d feedback events after three, want %d", n, before+3)
	}
	again, err := alice.Chat.Completions.New(ctx, params, option.WithJSONSet("session", sess.ID), option.WithJSONSet("replaces", resp.ID))
	if err != nil {
		t.Fatal(err)
	}
	got = getSessionAs(t, e.srv, aliceToken, sess.ID)
	if len(got.Turns) != 1 || got.Turns[0].GenerationID != again.ID || got.Turns[0].Reply != again.Choices[0].Message.Content {
		t.Fatalf("after regenerating: turns %+v; want the one turn to be %s", got.Turns, again.ID)
	}
	params.Messages = append(msgs, openai.AssistantMessage(again.Choices[0].Message.Content), openai.UserMessage("And now?"))
	next, err := alice.Chat.Completions.New(ctx, params, option.WithJSONSet("session", sess.ID))
	if err != nil {
		t.Fatal(err)
	}
	got = getSessionAs(t, e.srv, aliceToken, sess.ID)
	if len(got.Turns) != 2 || got.Turns[1].Prompt != "And now?" || got.Turns[1].GenerationID != next.ID {
		t.Fatalf("after the next message: turns %+v", got.Turns)
	}

	bob := oaiClientAt(e.srv, bobToken)
	for _, tc := range []struct {
		name    string
		client  openai.Client
		session string
		n       int64
		status  int
		param   string
	}{
		{"bob in alice's session", bob, sess.ID, 1, http.StatusForbidden, "session"},
		{"an unknown session", alice, "sess-none", 1, http.StatusNotFound, "session"},
		{"two replies in a session", alice, sess.ID, 2, http.StatusBadRequest, "n"},
	} {
		p := openai.ChatCompletionNewParams{Model: "builtin:tiny", Messages: msgs, N: openai.Int(tc.n)}
		_, err := tc.client.Chat.Completions.New(ctx, p, option.WithJSONSet("session", tc.session))
		if ae := apiErrorOf(t, tc.name, err); ae.StatusCode != tc.status || ae.Param != tc.param {
			t.Errorf("%s: %d param %q (%s); want %d naming %s", tc.name, ae.StatusCode, ae.Param, ae.Message, tc.status, tc.param)
		}
	}
	if got := getSessionAs(t, e.srv, aliceToken, sess.ID); len(got.Turns) != 2 {
		t.Fatalf("refused requests changed the session: %+v", got.Turns)
	}
}

// longChat is a conversation far longer than builtin:tiny's 256-token
// context: a system message, many turns, and a last question.
func longChat() []openai.ChatCompletionMessageParamUnion {
	msgs := []openai.ChatCompletionMessageParamUnion{openai.SystemMessage("Be brief.")}
	for i := range 30 {
		msgs = append(msgs, openai.UserMessage(fmt.Sprintf("question %02d about the weather in the hills today", i)), openai.AssistantMessage(" It is fine."))
	}
	return append(msgs, openai.UserMessage("And tomorrow?"))
}

// TestChatTrimsALongHistory: a conversation longer than the model's
// context is answered from its newest messages, streamed or not: the
// prompt keeps the system message and the last question, leaves out the
// oldest turns, and with max_tokens fits the context, as the usage says.
func TestChatTrimsALongHistory(t *testing.T) {
	e := newGenEnv(t, "")
	e.startWorker(t)
	srv, _ := chatServer(t, e)
	client := openAIClient(srv.URL)
	const maxTokens, context256 = 8, 256
	params := openai.ChatCompletionNewParams{Model: "builtin:tiny", Messages: longChat(), MaxTokens: openai.Int(maxTokens), Temperature: openai.Float(0)}
	resp, err := client.Chat.Completions.New(context.Background(), params)
	if err != nil {
		t.Fatal(err)
	}
	if p := resp.Usage.PromptTokens; p == 0 || p > context256-maxTokens {
		t.Fatalf("usage %s; want at most %d prompt tokens", resp.Usage.RawJSON(), context256-maxTokens)
	}
	rec := waitRecord(t, e, resp.ID)
	if !strings.HasPrefix(rec.Prompt, "System: Be brief.\nUser: question") || !strings.HasSuffix(rec.Prompt, "User: And tomorrow?\nAssistant:") ||
		strings.Contains(rec.Prompt, "question 00") || !strings.Contains(rec.Prompt, "question 29") {
		t.Fatalf("prompt %q; want the system message, the newest turns and the last question", rec.Prompt)
	}

	params.StreamOptions = openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)}
	stream := client.Chat.Completions.NewStreaming(context.Background(), params)
	var acc openai.ChatCompletionAccumulator
	for stream.Next() {
		acc.AddChunk(stream.Current())
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	if acc.Usage.PromptTokens != resp.Usage.PromptTokens || acc.Choices[0].Message.Content != resp.Choices[0].Message.Content {
		t.Fatalf("streamed %s; unstreamed %s", acc.RawJSON(), resp.RawJSON())
	}
}

// TestChatRefusesAMessageLongerThanTheContext: a last message that cannot
// fit the context even with every other message left out is 400
// invalid_request_error naming messages, saying its tokens and the
// context.
func TestChatRefusesAMessageLongerThanTheContext(t *testing.T) {
	e := newGenEnv(t, "")
	e.startWorker(t)
	srv, _ := chatServer(t, e)
	client := openAIClient(srv.URL)
	_, err := client.Chat.Completions.New(context.Background(), openai.ChatCompletionNewParams{Model: "builtin:tiny",
		Messages: []openai.ChatCompletionMessageParamUnion{openai.SystemMessage("Be brief."), openai.UserMessage("Hi"), openai.AssistantMessage(" Hello."),
			openai.UserMessage(strings.Repeat("word ", 300))}})
	ae := apiErrorOf(t, "a message of 300 words", err)
	if ae.StatusCode != http.StatusBadRequest || ae.Type != "invalid_request_error" || ae.Param != "messages" || ae.Code != "context_length_exceeded" ||
		!strings.Contains(ae.Message, "the model's context holds 256") {
		t.Fatalf("%d %s", ae.StatusCode, ae.RawJSON())
	}
}
