package main

import (
	"context"
	"sync"

	"github.com/tandem-ai/tandem/model"
)

// side is one way of serving generation on a loaded model. The scenarios
// drive both sides through it, so every figure of the two columns comes
// from the same code.
type side interface {
	// name labels the side's column: "baseline" or "engine".
	name() string
	// stream generates one interactive completion of prompt, calling
	// onToken once per token as it is decoded, on the caller's goroutine.
	stream(ctx context.Context, prompt []int32, maxTokens int, onToken func()) error
	// batch generates one chunk of batch rows; group names the batch the
	// chunk belongs to (the engine's fairness group).
	batch(ctx context.Context, group string, reqs []model.Request) ([][]model.Completion, error)
	// close releases what the side holds.
	close()
}

// request is the request both sides generate for a prompt: greedy, and
// with no early end, so that every completion makes exactly maxTokens
// tokens and the sides do the same work.
func request(prompt []int32, maxTokens int) model.Request {
	return model.Request{Prompt: prompt, Params: model.SamplingParams{MaxTokens: maxTokens, IgnoreEOS: true}}
}

// baseline is the path before issue 15 (jobs.LoadedModel's lock): one mutex per loaded model,
// held around model.Generate, so one job at a time decodes on the model.
// Interactive streams decode one row (MaxRows 1) with OnToken; batch chunks
// decode with the default MaxRows.
type baseline struct {
	mu sync.Mutex
	m  *model.Model
}

func newBaseline(m *model.Model) *baseline { return &baseline{m: m} }

func (b *baseline) name() string { return "baseline" }

func (b *baseline) stream(ctx context.Context, prompt []int32, maxTokens int, onToken func()) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	_, err := model.Generate(ctx, b.m, nil, []model.Request{request(prompt, maxTokens)}, model.GenerateOptions{
		MaxRows: 1,
		OnToken: func(int, int, int32, string) { onToken() },
	})
	return err
}

func (b *baseline) batch(ctx context.Context, _ string, reqs []model.Request) ([][]model.Completion, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return model.Generate(ctx, b.m, nil, reqs, model.GenerateOptions{})
}

func (b *baseline) close() {}
