package main

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/openai/openai-go/v3"

	"github.com/tandem-ai/tandem/jobs"
	"github.com/tandem-ai/tandem/model"
)

// newOpenAIEnv starts a worker on a fresh environment, serves it as
// `producer serve` does and returns the official client pointed at it.
func newOpenAIEnv(t *testing.T) (*genEnv, openai.Client) {
	t.Helper()
	e := newGenEnv(t, "")
	e.startWorker(t)
	srv, _ := chatServer(t, e)
	return e, openAIClient(srv.URL)
}

// textPrompt is one text as the client's prompt.
func textPrompt(s string) openai.CompletionNewParamsPromptUnion {
	return openai.CompletionNewParamsPromptUnion{OfString: openai.String(s)}
}

// TestCompletionEchoAndUsageWithTheOpenAIClient: through the official
// client, echo puts the prompt before the text (unstreamed and streamed),
// and stream_options.include_usage ends the stream with a chunk of no
// choices that carries the usage.
func TestCompletionEchoAndUsageWithTheOpenAIClient(t *testing.T) {
	_, client := newOpenAIEnv(t)
	params := openai.CompletionNewParams{Model: "builtin:tiny", Prompt: textPrompt("The loop"),
		MaxTokens: openai.Int(6), Temperature: openai.Float(0), Echo: openai.Bool(true)}
	resp, err := client.Completions.New(context.Background(), params)
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Choices) != 1 || !strings.HasPrefix(resp.Choices[0].Text, "The loop") || len(resp.Choices[0].Text) == len("The loop") {
		t.Fatalf("echoed completion %s", resp.RawJSON())
	}
	params.StreamOptions = openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)}
	stream := client.Completions.NewStreaming(context.Background(), params)
	var text strings.Builder
	var usageOnly int
	var last openai.Completion
	for stream.Next() {
		c := stream.Current()
		last = c
		if len(c.Choices) == 0 {
			usageOnly++
			continue
		}
		text.WriteString(c.Choices[0].Text)
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	if text.String() != resp.Choices[0].Text || usageOnly != 1 || len(last.Choices) != 0 || last.Usage.CompletionTokens != resp.Usage.CompletionTokens {
		t.Fatalf("streamed %q, %d usage-only chunks, last %s; unstreamed %q", text.String(), usageOnly, last.RawJSON(), resp.Choices[0].Text)
	}
}

// streamChoices reads a streamed completion to its end: each choice's
// text by index, each choice's finish reason, and the usage of the
// usage-only last chunk.
func streamChoices(t *testing.T, client openai.Client, params openai.CompletionNewParams) (texts, finishes map[int64]string, usage openai.CompletionUsage) {
	t.Helper()
	params.StreamOptions = openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)}
	stream := client.Completions.NewStreaming(context.Background(), params)
	texts, finishes = map[int64]string{}, map[int64]string{}
	for stream.Next() {
		c := stream.Current()
		if len(c.Choices) == 0 {
			usage = c.Usage
		}
		for _, ch := range c.Choices {
			texts[ch.Index] += ch.Text
			if ch.FinishReason != "" {
				finishes[ch.Index] = string(ch.FinishReason)
			}
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	return texts, finishes, usage
}

// TestCompletionPromptListWithTheOpenAIClient sends two prompts with n = 2
// through the official client: four choices, choice 2i+k being choice k of
// prompt i, streamed as unstreamed, each recorded under its own id
// (jobs.ChoiceID with that index) with its own prompt; the usage counts
// both prompts. Where the CPU's kernels make outputs independent of
// company, each prompt asked alone gives its two choices the same texts.
func TestCompletionPromptListWithTheOpenAIClient(t *testing.T) {
	e, client := newOpenAIEnv(t)
	prompts := []string{"The loop", "A person reads the reply"}
	params := openai.CompletionNewParams{Model: "builtin:tiny", Prompt: openai.CompletionNewParamsPromptUnion{OfArrayOfStrings: prompts},
		N: openai.Int(2), MaxTokens: openai.Int(6), Temperature: openai.Float(0.9), Seed: openai.Int(7), User: openai.String("u1")}
	resp, err := client.Completions.New(context.Background(), params)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := model.NewTokenizer()
	if err != nil {
		t.Fatal(err)
	}
	promptTokens := int64(len(tok.Encode(prompts[0])) + len(tok.Encode(prompts[1])))
	if len(resp.Choices) != 4 || resp.Usage.PromptTokens != promptTokens || resp.Usage.TotalTokens != promptTokens+resp.Usage.CompletionTokens {
		t.Fatalf("two prompts, n = 2: %s; want 4 choices and %d prompt tokens", resp.RawJSON(), promptTokens)
	}
	texts, finishes, usage := streamChoices(t, client, params)
	for i, ch := range resp.Choices {
		if ch.Index != int64(i) || texts[ch.Index] != ch.Text || finishes[ch.Index] != string(ch.FinishReason) {
			t.Fatalf("choice %d: %s; streamed %q ending %q", i, ch.RawJSON(), texts[int64(i)], finishes[int64(i)])
		}
		rec := waitRecord(t, e, jobs.ChoiceID(resp.ID, i))
		if rec.Prompt != prompts[i/2] || rec.Text != ch.Text || rec.User != "u1" {
			t.Fatalf("record of choice %d: %+v; want prompt %q and text %q", i, rec, prompts[i/2], ch.Text)
		}
	}
	if len(texts) != 4 || usage.CompletionTokens != resp.Usage.CompletionTokens || usage.PromptTokens != promptTokens {
		t.Fatalf("streamed %d choices, usage %+v; unstreamed usage %+v", len(texts), usage, resp.Usage)
	}
	if !model.DecodeBatchInvariant() {
		t.Log("this CPU lacks the batch-invariant kernels: prompts alone are not compared")
		return
	}
	for i, p := range prompts {
		params.Prompt = textPrompt(p)
		alone, err := client.Completions.New(context.Background(), params)
		if err != nil {
			t.Fatal(err)
		}
		for k, ch := range alone.Choices {
			if want := resp.Choices[2*i+k].Text; ch.Text != want {
				t.Fatalf("prompt %d alone, choice %d: %q; in the list (choice %d) %q", i, k, ch.Text, 2*i+k, want)
			}
		}
	}
}

// TestCompletionTokenPromptsWithTheOpenAIClient: GPT-2 token ids, one list
// or a list of lists, generate what their texts generate; echo puts the
// decoded prompt before the text; an id outside the vocabulary is refused
// naming it.
func TestCompletionTokenPromptsWithTheOpenAIClient(t *testing.T) {
	e, client := newOpenAIEnv(t)
	tok, err := model.NewTokenizer()
	if err != nil {
		t.Fatal(err)
	}
	prompts := []string{"The loop", "A person"}
	ids := make([][]int64, len(prompts))
	for i, p := range prompts {
		for _, id := range tok.Encode(p) {
			ids[i] = append(ids[i], int64(id))
		}
	}
	params := openai.CompletionNewParams{Model: "builtin:tiny", Prompt: openai.CompletionNewParamsPromptUnion{OfArrayOfStrings: prompts},
		MaxTokens: openai.Int(5), Temperature: openai.Float(0.9), Seed: openai.Int(3)}
	byText, err := client.Completions.New(context.Background(), params)
	if err != nil {
		t.Fatal(err)
	}
	params.Prompt = openai.CompletionNewParamsPromptUnion{OfArrayOfTokenArrays: ids}
	byIDs, err := client.Completions.New(context.Background(), params)
	if err != nil {
		t.Fatal(err)
	}
	if len(byIDs.Choices) != 2 || byIDs.Choices[0].Text != byText.Choices[0].Text || byIDs.Choices[1].Text != byText.Choices[1].Text || byIDs.Usage.PromptTokens != byText.Usage.PromptTokens {
		t.Fatalf("token ids: %s; the same prompts as text: %s", byIDs.RawJSON(), byText.RawJSON())
	}
	if rec := waitRecord(t, e, jobs.ChoiceID(byIDs.ID, 1)); rec.Prompt != prompts[1] {
		t.Fatalf("record of a token-id prompt: prompt %q, want %q", rec.Prompt, prompts[1])
	}
	params.Prompt, params.Echo = openai.CompletionNewParamsPromptUnion{OfArrayOfTokens: ids[1]}, openai.Bool(true)
	echoed, err := client.Completions.New(context.Background(), params)
	if err != nil {
		t.Fatal(err)
	}
	if len(echoed.Choices) != 1 || echoed.Choices[0].Text != prompts[1]+byIDs.Choices[1].Text {
		t.Fatalf("one list of ids, echoed: %s; want %q", echoed.RawJSON(), prompts[1]+byIDs.Choices[1].Text)
	}
	params.Prompt, params.Echo = openai.CompletionNewParamsPromptUnion{OfArrayOfTokenArrays: [][]int64{{1}, {2, model.EOTToken + 1}}}, openai.Bool(false)
	_, err = client.Completions.New(context.Background(), params)
	if ae := apiErrorOf(t, "an id outside the vocabulary", err); ae.StatusCode != http.StatusBadRequest || ae.Param != "prompt[1][1]" || !strings.Contains(ae.Message, "vocabulary") {
		t.Fatalf("an id outside the vocabulary: %d %s", ae.StatusCode, ae.RawJSON())
	}
}

// TestCompletionSuffixIsRefused: GPT-2 style models cannot insert, so a
// suffix is refused as a bad request naming it; the empty suffix and null,
// which clients send for none, are accepted.
func TestCompletionSuffixIsRefused(t *testing.T) {
	e, client := newOpenAIEnv(t)
	params := openai.CompletionNewParams{Model: "builtin:tiny", Prompt: textPrompt("The loop"),
		MaxTokens: openai.Int(2), Suffix: openai.String(" and so it ends.")}
	_, err := client.Completions.New(context.Background(), params)
	ae := apiErrorOf(t, "a suffix", err)
	if ae.StatusCode != http.StatusBadRequest || ae.Type != "invalid_request_error" || ae.Param != "suffix" || !strings.Contains(ae.Message, "cannot insert") {
		t.Fatalf("a suffix: %d %s", ae.StatusCode, ae.RawJSON())
	}
	params.Suffix = openai.String("")
	if _, err := client.Completions.New(context.Background(), params); err != nil {
		t.Fatalf("an empty suffix: %v", err)
	}
	if code, msg := e.postJSON(t, "/v1/completions", `{"model":"builtin:tiny","prompt":"x","max_tokens":2,"suffix":null}`, nil); code != http.StatusOK {
		t.Fatalf("suffix null: %d %s", code, msg)
	}
}

// TestStreamedErrorBeforeTheFirstTokenIsAnHTTPError: what the worker
// refuses before the first token (a prompt the model's context cannot
// hold) reaches a streaming client as it reaches any other, as an HTTP
// status with the error body, so the official client raises an API error
// with that status and the field at fault; for chat too, which shares the
// path.
func TestStreamedErrorBeforeTheFirstTokenIsAnHTTPError(t *testing.T) {
	_, client := newOpenAIEnv(t)
	long := strings.Repeat("word ", 300) // builtin:tiny holds 256 tokens
	for prompt, param := range map[string]openai.CompletionNewParamsPromptUnion{
		"prompt":    textPrompt(long),
		"prompt[1]": {OfArrayOfStrings: []string{"fits", long}},
	} {
		stream := client.Completions.NewStreaming(context.Background(), openai.CompletionNewParams{Model: "builtin:tiny", Prompt: param, MaxTokens: openai.Int(4)})
		for stream.Next() {
			t.Fatalf("%s too long: a chunk %s", prompt, stream.Current().RawJSON())
		}
		ae := apiErrorOf(t, prompt+" too long, streamed", stream.Err())
		if ae.StatusCode != http.StatusBadRequest || ae.Code != "context_length_exceeded" || ae.Param != prompt || !strings.Contains(ae.Message, "context holds 256") {
			t.Fatalf("%s too long, streamed: %d %s", prompt, ae.StatusCode, ae.RawJSON())
		}
	}
	chat := client.Chat.Completions.NewStreaming(context.Background(), openai.ChatCompletionNewParams{Model: "builtin:tiny",
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage(long)}, MaxTokens: openai.Int(4)})
	for chat.Next() {
		t.Fatalf("chat too long: a chunk %s", chat.Current().RawJSON())
	}
	if ae := apiErrorOf(t, "chat too long, streamed", chat.Err()); ae.StatusCode != http.StatusBadRequest || ae.Code != "context_length_exceeded" || ae.Param != "messages" {
		t.Fatalf("chat too long, streamed: %d %s", ae.StatusCode, ae.RawJSON())
	}
}
