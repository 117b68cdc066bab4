package pipeline_test

import (
	"context"
	"fmt"

	"github.com/tandem-ai/tandem/pipeline"
)

// SummarizeArgs is a job kind as jobs/ declares one: typed args, a stable
// kind string, validation that names the field.
type SummarizeArgs struct {
	DocID     string `json:"doc_id"`
	MaxTokens int    `json:"max_tokens"`
}

func (SummarizeArgs) Kind() string { return "generate:summarize" }

func (a SummarizeArgs) Validate() error {
	if a.DocID == "" {
		return pipeline.InvalidField("doc_id", "required")
	}
	if a.MaxTokens < 1 || a.MaxTokens > 1024 {
		return pipeline.InvalidField("max_tokens", "must be in 1..1024, got %d", a.MaxTokens)
	}
	return nil
}

// A worker registered once serves both asynq (through Server) and in-process
// runs (Registry.Exec), which need no Redis.
func ExampleRegistry_Exec() {
	reg := pipeline.NewRegistry()
	pipeline.Register(reg, pipeline.WorkFunc[SummarizeArgs](func(ctx context.Context, job *pipeline.Job[SummarizeArgs]) error {
		fmt.Printf("summarizing %s in %d tokens on queue %s\n", job.Args.DocID, job.Args.MaxTokens, job.Queue)
		return nil
	}), pipeline.KindOptions{Queue: pipeline.QueueInteractive})

	ctx := context.Background()
	_ = reg.Exec(ctx, "generate:summarize", []byte(`{"doc_id":"d42","max_tokens":128}`))

	err := reg.Exec(ctx, "generate:summarize", []byte(`{"doc_id":"d42","max_tokens":0}`))
	fmt.Println(err, "| permanent:", pipeline.IsPermanent(err))

	err = reg.Exec(ctx, "generate:summarize", []byte(`{"doc":"d42"}`))
	fmt.Println(err)
	// Output:
	// summarizing d42 in 128 tokens on queue interactive
	// invalid generate:summarize args: max_tokens: must be in 1..1024, got 0 | permanent: true
	// decode generate:summarize args: json: unknown field "doc"
}
