package main

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/openai/openai-go/v3"

	"github.com/tandem-ai/tandem/batch"
	"github.com/tandem-ai/tandem/generation"
	"github.com/tandem-ai/tandem/jobs"
)

// openAIClient is the official client pointed at srv with chatToken, as a
// user would point it at `producer serve`: no retries, so a refusal is
// seen at once.
func openAIClient(srv string) openai.Client { return oaiClientAt(srv, chatToken) }

// chatHistory is a conversation of every role, and what the default chat
// format makes of it.
var chatHistory = []openai.ChatCompletionMessageParamUnion{
	openai.SystemMessage("Be brief."),
	openai.UserMessage("Hi"),
	openai.AssistantMessage(" Hello."),
	openai.UserMessage("And now?"),
}

const chatHistoryPrompt = "System: Be brief.\nUser: Hi\nAssistant: Hello.\nUser: And now?\nAssistant:"

// TestChatCompletionWithTheOpenAIClient asks the official client for a
// chat completion of a system, user and assistant history, n = 2, with
// logprobs and two alternatives per token: the answer is a
// chat.completion of two assistant replies whose logprobs cover every
// token in the chat shape; the worker saw the history in the default chat
// format (the sessions' transcript), and each reply is recorded under the
// chatcmpl- id, on which feedback is accepted.
func TestChatCompletionWithTheOpenAIClient(t *testing.T) {
	e := newGenEnv(t, "")
	e.startWorker(t)
	srv, recs := chatServer(t, e)
	client := openAIClient(srv.URL)
	resp, err := client.Chat.Completions.New(context.Background(), openai.ChatCompletionNewParams{
		Model: "builtin:tiny", Messages: chatHistory, MaxCompletionTokens: openai.Int(6), Seed: openai.Int(7),
		N: openai.Int(2), Logprobs: openai.Bool(true), TopLogprobs: openai.Int(2), Temperature: openai.Float(0.8), User: openai.String("u7"),
	})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(resp.ID, "chatcmpl-") || resp.Object != "chat.completion" || resp.Model != "builtin:tiny" || len(resp.Choices) != 2 {
		t.Fatalf("answer %s", resp.RawJSON())
	}
	tokens := 0
	for i, ch := range resp.Choices {
		if ch.Index != int64(i) || ch.Message.Role != "assistant" || (ch.FinishReason != "stop" && ch.FinishReason != "length") {
			t.Fatalf("choice %d: %s", i, ch.RawJSON())
		}
		var text strings.Builder
		for _, lp := range ch.Logprobs.Content {
			if len(lp.TopLogprobs) < 1 || len(lp.TopLogprobs) > 2 || len(lp.Bytes) != len(lp.Token) || lp.Logprob > 0 {
				t.Fatalf("choice %d: token %s", i, lp.RawJSON())
			}
			text.WriteString(lp.Token)
		}
		tokens += len(ch.Logprobs.Content)
		if !strings.HasPrefix(text.String(), ch.Message.Content) {
			t.Fatalf("choice %d: content %q, tokens %q", i, ch.Message.Content, text.String())
		}
		rec := waitRecord(t, e, jobs.ChoiceID(resp.ID, i))
		if rec.Prompt != chatHistoryPrompt || rec.Text != ch.Message.Content || rec.User != "u7" {
			t.Fatalf("record of choice %d: %+v", i, rec)
		}
	}
	if resp.Usage.CompletionTokens != int64(tokens) || resp.Usage.PromptTokens == 0 || resp.Usage.TotalTokens != resp.Usage.PromptTokens+resp.Usage.CompletionTokens {
		t.Fatalf("usage %s for %d tokens", resp.Usage.RawJSON(), tokens)
	}
	// Feedback on the reply, by the id the client got.
	before := feedbackStreamMsgs(t, recs)
	if code, msg := callAs(t, srv.URL, chatToken, "POST", "/v1/generations/"+resp.ID+"/feedback", `{"action":"accept","user":"u7"}`); code != http.StatusAccepted {
		t.Fatalf("feedback on %s: %d %s", resp.ID, code, msg)
	}
	if n := feedbackStreamMsgs(t, recs); n != before+1 {
		t.Fatalf("%d feedback events after one, want %d", n, before+1)
	}
}

// TestChatStreamsWithTheOpenAIClient streams the same kind of request: the
// client's accumulator rebuilds two assistant replies from chunks that
// open with the role, and the usage-only last chunk that include_usage
// asks for carries the usage; greedy, the replies are the unstreamed ones.
func TestChatStreamsWithTheOpenAIClient(t *testing.T) {
	e := newGenEnv(t, "")
	e.startWorker(t)
	srv, _ := chatServer(t, e)
	client := openAIClient(srv.URL)
	params := openai.ChatCompletionNewParams{Model: "builtin:tiny", Messages: chatHistory, MaxTokens: openai.Int(6), N: openai.Int(2), Temperature: openai.Float(0)}
	want, err := client.Chat.Completions.New(context.Background(), params)
	if err != nil {
		t.Fatal(err)
	}
	params.StreamOptions = openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)}
	stream := client.Chat.Completions.NewStreaming(context.Background(), params)
	var acc openai.ChatCompletionAccumulator
	chunks, roles, usageChunks := 0, 0, 0
	for stream.Next() {
		c := stream.Current()
		acc.AddChunk(c)
		chunks++
		if c.Object != "chat.completion.chunk" || !strings.HasPrefix(c.ID, "chatcmpl-") {
			t.Fatalf("chunk %s", c.RawJSON())
		}
		if len(c.Choices) == 0 {
			usageChunks++
			continue
		}
		if c.Choices[0].Delta.Role == "assistant" {
			roles++
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	if roles != 2 || usageChunks != 1 || len(acc.Choices) != 2 || acc.Usage.CompletionTokens != want.Usage.CompletionTokens {
		t.Fatalf("%d chunks: %d opened a reply, %d carried the usage only; accumulated %s", chunks, roles, usageChunks, acc.RawJSON())
	}
	for i, ch := range acc.Choices {
		if ch.Message.Content != want.Choices[i].Message.Content || ch.FinishReason != want.Choices[i].FinishReason {
			t.Fatalf("streamed choice %d: %q (%s); unstreamed %q (%s)", i, ch.Message.Content, ch.FinishReason, want.Choices[i].Message.Content, want.Choices[i].FinishReason)
		}
	}
}

// TestChatRefusesWhatItCannotDo: an unknown role, a part that is not text
// and an unknown field are refused with 400 naming the field, before any
// worker is asked.
func TestChatRefusesWhatItCannotDo(t *testing.T) {
	e := newGenEnv(t, "")
	srv, _ := chatServer(t, e)
	client := openAIClient(srv.URL)
	_, err := client.Chat.Completions.New(context.Background(), openai.ChatCompletionNewParams{Model: "builtin:tiny",
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi"), openai.ToolMessage("42", "call-1")}})
	var apiErr *openai.Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusBadRequest || apiErr.Param != "messages[1].role" {
		t.Fatalf("a tool message: %v, want 400 with param messages[1].role", err)
	}
	for body, want := range map[string]string{
		`{"model":"builtin:tiny","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"x"}}]}]}`: `content[0]`,
		`{"model":"builtin:tiny","messages":[{"role":"user","content":"hi"}],"tools":[]}`:                                `tools`,
		`{"model":"builtin:tiny","messages":[]}`:                                                                         `messages`,
		`{"model":"builtin:tiny","messages":[{"role":"user","content":"hi"}],"top_logprobs":2}`:                          `top_logprobs`,
		`{"model":"builtin:tiny","messages":[{"role":"user","content":"hi"}],"max_tokens":2,"max_completion_tokens":3}`:  `max_tokens`,
		`{"model":"builtin:tiny","messages":[{"role":"user","content":"hi"}],"stream_options":{"include_usage":1}}`:      `stream_options`,
	} {
		code, msg := callAs(t, srv.URL, chatToken, "POST", "/v1/chat/completions", body)
		if code != http.StatusBadRequest || !strings.Contains(msg, want) {
			t.Errorf("%s: %d %s; want 400 naming %s", body, code, msg, want)
		}
	}
}

// TestChatFollowsTheModelsChatFormat gives a model that always writes "X"
// (GPT-2 token 55) a chat_format.json whose turn boundary is "X": the
// reply stops at once, and the record shows the prompt in the model's
// format; text parts are joined into one message.
func TestChatFollowsTheModelsChatFormat(t *testing.T) {
	e := newGenEnv(t, "")
	e.startWorker(t)
	dir := repeatingTokenModel(t, 55)
	body := `{"model":"` + dir + `","messages":[{"role":"user","content":[{"type":"text","text":"h"},{"type":"text","text":"i"}]}],"max_tokens":4,"temperature":0}`
	var plain generation.ChatCompletion
	if code, msg := e.postJSON(t, "/v1/chat/completions", body, &plain); code != http.StatusOK || plain.Choices[0].Message.Content != "XXXX" || plain.Choices[0].FinishReason != "length" {
		t.Fatalf("default format: %d %s", code, msg)
	}
	if rec := waitRecord(t, e, plain.ID); rec.Prompt != "User: hi\nAssistant:" {
		t.Fatalf("default format: prompt %q", rec.Prompt)
	}
	// A new directory with the same weights and a format of its own (the
	// store keeps a loaded model's format).
	dir2 := filepath.Join(t.TempDir(), "formatted")
	if err := os.CopyFS(dir2, os.DirFS(dir)); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir2, generation.ChatFormatFile), []byte(`{"user":"Q: ","assistant":"A:","stop":"X"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	var got generation.ChatCompletion
	if code, msg := e.postJSON(t, "/v1/chat/completions", strings.Replace(body, dir, dir2, 1), &got); code != http.StatusOK || got.Choices[0].Message.Content != "" || got.Choices[0].FinishReason != "stop" {
		t.Fatalf("the model's format: %d %s", code, msg)
	}
	if rec := waitRecord(t, e, got.ID); rec.Prompt != "Q: hi\nA:" {
		t.Fatalf("the model's format: prompt %q", rec.Prompt)
	}
}

// TestBatchTakesChatLines runs a batch of chat lines: a line's body is a
// chat.completion of an assistant reply, and a chat line with an unknown
// role is refused with its line and field.
func TestBatchTakesChatLines(t *testing.T) {
	e := newBatchEnv(t)
	e.startWorker(t)
	in := e.write(t, "mixed.jsonl", `{"custom_id":"c1","method":"POST","url":"/v1/chat/completions","body":{"model":"builtin:tiny","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Hi"}],"max_completion_tokens":5,"seed":1,"logprobs":true,"top_logprobs":1}}
{"custom_id":"c2","method":"POST","url":"/v1/chat/completions","body":{"model":"builtin:tiny","messages":[{"role":"user","content":"Hello"}],"max_tokens":5,"seed":1}}
`)
	out, stderr, err := runProducer(t, "batch", "create", in, "--model", "builtin:tiny", "--endpoint", "/v1/chat/completions", "--wait", "--json")
	if err != nil {
		t.Fatalf("create: %v\n%s", err, stderr)
	}
	var b batch.Batch
	if err := json.Unmarshal([]byte(out), &b); err != nil || b.Status != batch.StatusCompleted || b.RequestCounts.Completed != 2 {
		t.Fatalf("batch %s (%v)", out, err)
	}
	data, err := os.ReadFile(b.OutputFile)
	if err != nil {
		t.Fatal(err)
	}
	bodies := map[string]map[string]any{}
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		var l struct {
			CustomID string `json:"custom_id"`
			Response struct {
				Body map[string]any `json:"body"`
			} `json:"response"`
		}
		if err := json.Unmarshal([]byte(line), &l); err != nil {
			t.Fatal(err)
		}
		bodies[l.CustomID] = l.Response.Body
	}
	var chat generation.ChatCompletion
	raw, _ := json.Marshal(bodies["c1"])
	if err := json.Unmarshal(raw, &chat); err != nil || chat.Object != "chat.completion" || !strings.HasPrefix(chat.ID, "chatcmpl-") ||
		len(chat.Choices) != 1 || chat.Choices[0].Message.Role != "assistant" || chat.Choices[0].Logprobs == nil ||
		len(chat.Choices[0].Logprobs.Content) != chat.Usage.CompletionTokens || chat.Usage.PromptTokens == 0 {
		t.Fatalf("chat line's body %s", raw)
	}
	if bodies["c2"]["object"] != "chat.completion" {
		t.Fatalf("second chat line's body %v", bodies["c2"])
	}

	bad := e.write(t, "bad.jsonl", `{"custom_id":"c1","url":"/v1/chat/completions","body":{"model":"builtin:tiny","messages":[{"role":"tool","content":"x"}]}}`+"\n")
	if _, stderr, err := runProducer(t, "batch", "create", bad, "--model", "builtin:tiny", "--endpoint", "/v1/chat/completions"); err == nil || !strings.Contains(err.Error()+stderr, "body.messages[0].role") {
		t.Fatalf("a chat line with a tool message: %v %s; want it refused naming body.messages[0].role", err, stderr)
	}
}
