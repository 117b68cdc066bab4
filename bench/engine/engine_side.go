package main

import (
	"context"

	"github.com/tandem-ai/tandem/generation"
	"github.com/tandem-ai/tandem/model"
)

// engineSide serves through issue 15's continuous-batching engine: one
// step loop per model that streams and batch chunks join and leave.
type engineSide struct {
	e *generation.Engine
}

func newEngineSide(m *model.Model, cfg engineFlags) (side, error) {
	return &engineSide{e: generation.NewEngine(m, nil, generation.EngineConfig{
		Slots:         cfg.slots,
		PrefillTokens: cfg.prefillTokens,
		Name:          "bench",
	})}, nil
}

func (s *engineSide) name() string { return "engine" }

func (s *engineSide) stream(ctx context.Context, prompt []int32, maxTokens int, onToken func()) error {
	_, err := s.e.Generate(ctx, []model.Request{request(prompt, maxTokens)}, generation.Options{
		Class:   generation.Interactive,
		OnToken: func(int, int, int32, string) { onToken() },
	})
	return err
}

func (s *engineSide) batch(ctx context.Context, group string, reqs []model.Request) ([][]model.Completion, error) {
	return s.e.Generate(ctx, reqs, generation.Options{Class: generation.Batch, Group: group})
}

func (s *engineSide) close() { s.e.Close() }
