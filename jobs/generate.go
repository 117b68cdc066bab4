package jobs

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/tandem-ai/tandem/pipeline"
)

// GenerateArgs asks a worker to complete every request line of a JSONL file
// (OpenAI Batch format) and write the responses to another file.
type GenerateArgs struct {
	Model     string `json:"model"`                // model directory or builtin:NAME
	Input     string `json:"input"`                // path of the request JSONL
	Output    string `json:"output"`               // path of the response JSONL (written atomically)
	BatchSize int    `json:"batch_size,omitempty"` // rows decoded together; default 8
}

// KindGenerate is the stable kind string of GenerateArgs.
const KindGenerate = "generate"

// MaxBatchSize bounds rows decoded together, and so the KV cache's size.
const MaxBatchSize = 256

// MaxRequestLines bounds the lines of one generate job's input file.
const MaxRequestLines = 100_000

// Kind implements pipeline.JobArgs.
func (GenerateArgs) Kind() string { return KindGenerate }

// Validate implements pipeline.Validator.
func (a GenerateArgs) Validate() error {
	switch {
	case a.Model == "":
		return errors.New("model: required")
	case a.Input == "":
		return errors.New("input: required")
	case a.Output == "":
		return errors.New("output: required")
	case a.BatchSize < 0 || a.BatchSize > MaxBatchSize:
		return fmt.Errorf("batch_size: %d is outside 0..%d", a.BatchSize, MaxBatchSize)
	}
	return nil
}

// GenerateWorker runs generate jobs.
type GenerateWorker struct{ Deps *Deps }

// Work implements pipeline.Worker.
func (w GenerateWorker) Work(ctx context.Context, job *pipeline.Job[GenerateArgs]) error {
	_, err := w.run(ctx, job.Args)
	return err
}

// GenerateSummary reports what a generate job did.
type GenerateSummary struct {
	Output    string `json:"output"`
	Lines     int    `json:"lines"`
	Completed int    `json:"completed"`
	Failed    int    `json:"failed"`
}

func (w GenerateWorker) run(ctx context.Context, a GenerateArgs) (GenerateSummary, error) {
	sum := GenerateSummary{Output: a.Output}
	lm, err := w.Deps.Models.Get(a.Model)
	if err != nil {
		return sum, pipeline.Permanent(err)
	}
	tok, err := w.Deps.Models.Tokenizer()
	if err != nil {
		return sum, err
	}
	f, err := os.Open(a.Input)
	if err != nil {
		return sum, pipeline.Permanent(fmt.Errorf("input: %w", err))
	}
	lines, err := ReadRequestLines(f, MaxRequestLines)
	f.Close()
	if err != nil {
		return sum, pipeline.Permanent(fmt.Errorf("input: %w", err))
	}
	sum.Lines = len(lines)
	out, err := GenerateLines(ctx, lm, tok, lines, a.BatchSize, nil)
	if err != nil {
		return sum, err
	}
	for _, l := range out {
		if l.Error != nil {
			sum.Failed++
		} else {
			sum.Completed++
		}
	}
	if err := WriteJSONLAtomic(a.Output, out); err != nil {
		return sum, fmt.Errorf("output: %w", err)
	}
	return sum, nil
}

func execGenerate(ctx context.Context, d *Deps, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("worker exec generate", flag.ContinueOnError)
	var a GenerateArgs
	fs.StringVar(&a.Model, "model", "builtin:tiny", "model directory (Hugging Face GPT-2 layout) or builtin:tiny|builtin:small")
	fs.StringVar(&a.Input, "in", "", "request JSONL (OpenAI Batch format, /v1/completions bodies)")
	fs.StringVar(&a.Output, "out", "", "response JSONL to write")
	fs.IntVar(&a.BatchSize, "batch", 8, "rows decoded together")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := a.Validate(); err != nil {
		return err
	}
	sum, err := GenerateWorker{Deps: d}.run(ctx, a)
	if err != nil {
		return err
	}
	return writeJSON(stdout, sum)
}
