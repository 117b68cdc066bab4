package main

import (
	"context"
	"strings"
	"testing"

	"github.com/openai/openai-go/v3"
)

// TestCompletionEchoAndUsageWithTheOpenAIClient: through the official
// client, echo puts the prompt before the text (unstreamed and streamed),
// and stream_options.include_usage ends the stream with a chunk of no
// choices that carries the usage.
func TestCompletionEchoAndUsageWithTheOpenAIClient(t *testing.T) {
	e := newGenEnv(t, "")
	e.startWorker(t)
	srv, _ := chatServer(t, e)
	client := openAIClient(srv.URL)
	params := openai.CompletionNewParams{Model: "builtin:tiny", Prompt: openai.CompletionNewParamsPromptUnion{OfString: openai.String("The loop")},
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
