package jobs

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/tandem-ai/tandem/dataroot"
	"github.com/tandem-ai/tandem/generation"
	"github.com/tandem-ai/tandem/limits"
	"github.com/tandem-ai/tandem/pipeline"
)

// GenerateArgs asks a worker to complete every request line of a JSONL file
// (OpenAI Batch format) and write the responses to another file.
type GenerateArgs struct {
	Model     string `json:"model"`                // model directory or builtin:NAME
	Input     string `json:"input"`                // request JSONL, in the data root
	Output    string `json:"output"`               // response JSONL, in the data root (written atomically)
	BatchSize int    `json:"batch_size,omitempty"` // slots of the model's engine its rows hold at most; 0: no cap beyond the engine's
}

// KindGenerate is the stable kind string of GenerateArgs.
const KindGenerate = "generate"

// MaxBatchSize bounds batch_size (the engine's slots are fewer anyway).
const MaxBatchSize = limits.DecodeRows

// MaxRequestLines bounds the lines of one generate job's input file.
const MaxRequestLines = limits.RequestLines

// Kind implements pipeline.JobArgs.
func (GenerateArgs) Kind() string { return KindGenerate }

// jobPaths implements pathArgs.
func (a GenerateArgs) jobPaths() []JobPath {
	return []JobPath{{"model", a.Model}, {"input", a.Input}, {"output", a.Output}}
}

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
	return errors.Join(checkModelPath("model", a.Model), dataroot.CheckPath("input", a.Input), dataroot.CheckPath("output", a.Output))
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
	Output    string `json:"output"` // absolute path on the worker's file system
	Lines     int    `json:"lines"`
	Completed int    `json:"completed"`
	Failed    int    `json:"failed"`
}

func (w GenerateWorker) run(ctx context.Context, a GenerateArgs) (GenerateSummary, error) {
	sum := GenerateSummary{Output: a.Output}
	root, err := w.Deps.DataRoot()
	if err != nil {
		return sum, err
	}
	out, err := root.Name("output", a.Output)
	if err != nil {
		return sum, err
	}
	sum.Output = root.Path(out)
	lm, err := w.Deps.Models.Get(a.Model)
	if err != nil {
		return sum, pipeline.Permanent(err)
	}
	tok, err := w.Deps.Models.Tokenizer()
	if err != nil {
		return sum, err
	}
	f, err := root.Open("input", a.Input)
	if err != nil {
		return sum, pipeline.Permanent(err)
	}
	lines, err := generation.ReadRequestLines(f, MaxRequestLines)
	f.Close()
	if err != nil {
		return sum, pipeline.Permanent(fmt.Errorf("input: %w", err))
	}
	sum.Lines = len(lines)
	results, err := generation.GenerateLines(ctx, lm, tok, lines, a.BatchSize, "generate:"+a.Output, nil)
	if err != nil {
		return sum, err
	}
	for _, l := range results {
		if l.Error != nil {
			sum.Failed++
		} else {
			sum.Completed++
		}
	}
	if err := generation.WriteJSONLAtomic(root, "output", a.Output, results); err != nil {
		return sum, err
	}
	return sum, nil
}

func execGenerate(ctx context.Context, d *Deps, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("worker exec generate", flag.ContinueOnError)
	var a GenerateArgs
	fs.StringVar(&a.Model, "model", "builtin:tiny", "model directory (Hugging Face GPT-2 layout) or builtin:tiny|builtin:small")
	fs.StringVar(&a.Input, "in", "", "request JSONL (OpenAI Batch format, /v1/completions bodies), in the data root ($TANDEM_DATA_ROOT)")
	fs.StringVar(&a.Output, "out", "", "response JSONL to write, in the data root")
	fs.IntVar(&a.BatchSize, "batch", 8, "rows decoded together")
	if _, err := pipeline.ParseArgs(fs, args); err != nil {
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
