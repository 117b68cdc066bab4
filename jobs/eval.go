package jobs

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/tandem-ai/tandem/dataroot"
	"github.com/tandem-ai/tandem/limits"
	"github.com/tandem-ai/tandem/pipeline"
)

// EvalArgs asks for the perplexity of a model over a UTF-8 text file.
type EvalArgs struct {
	Model  string `json:"model"`
	Input  string `json:"input"`            // UTF-8 text, in the data root
	Stride int    `json:"stride,omitempty"` // sliding-window stride in tokens; default half the context
}

// KindEval is the stable kind string of EvalArgs.
const KindEval = "eval"

// MaxEvalBytes bounds the text an eval job reads.
const MaxEvalBytes = limits.EvalBytes

// Kind implements pipeline.JobArgs.
func (EvalArgs) Kind() string { return KindEval }

// jobPaths implements pathArgs.
func (a EvalArgs) jobPaths() []JobPath { return []JobPath{{"model", a.Model}, {"input", a.Input}} }

// Validate implements pipeline.Validator.
func (a EvalArgs) Validate() error {
	switch {
	case a.Model == "":
		return errors.New("model: required")
	case a.Input == "":
		return errors.New("input: required")
	case a.Stride < 0:
		return errors.New("stride: must not be negative")
	}
	return errors.Join(checkModelPath("model", a.Model), dataroot.CheckPath("input", a.Input))
}

// EvalResult is what eval prints and stores as the task's result.
type EvalResult struct {
	Model      string  `json:"model"`
	Tokens     int     `json:"tokens"`
	NLL        float64 `json:"nll"`
	Perplexity float64 `json:"perplexity"`
}

// EvalWorker runs eval jobs.
type EvalWorker struct{ Deps *Deps }

// Work implements pipeline.Worker; the result is kept with the task.
func (w EvalWorker) Work(ctx context.Context, job *pipeline.Job[EvalArgs]) error {
	res, err := w.run(ctx, job.Args)
	if err != nil {
		return err
	}
	return keepResult(job.ResultWriter, res)
}

func (w EvalWorker) run(ctx context.Context, a EvalArgs) (EvalResult, error) {
	res := EvalResult{Model: a.Model}
	lm, err := w.Deps.Models.Get(a.Model)
	if err != nil {
		return res, pipeline.Permanent(err)
	}
	tok, err := w.Deps.Models.Tokenizer()
	if err != nil {
		return res, err
	}
	root, err := w.Deps.DataRoot()
	if err != nil {
		return res, err
	}
	text, err := root.ReadFile("input", a.Input, MaxEvalBytes)
	if err != nil {
		return res, pipeline.Permanent(err)
	}
	ids := tok.Encode(string(text))
	if len(ids) < 2 {
		return res, pipeline.Permanent(errors.New("input: needs at least two tokens of text"))
	}
	if err := ctx.Err(); err != nil {
		return res, err
	}
	pr, err := lm.Perplexity(ids, a.Stride)
	if err != nil {
		return res, err
	}
	res.Tokens, res.NLL, res.Perplexity = pr.Tokens, pr.NLL, pr.Perplexity
	return res, nil
}

func readBounded(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("larger than %d bytes", limit)
	}
	return b, nil
}

func execEval(ctx context.Context, d *Deps, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("worker exec eval", flag.ContinueOnError)
	var a EvalArgs
	fs.StringVar(&a.Model, "model", "builtin:tiny", "model directory or builtin:NAME")
	fs.StringVar(&a.Input, "in", "", "UTF-8 text file to score, in the data root ($TANDEM_DATA_ROOT)")
	fs.IntVar(&a.Stride, "stride", 0, "sliding-window stride in tokens (0 = half the context)")
	if _, err := pipeline.ParseArgs(fs, args); err != nil {
		return err
	}
	if err := a.Validate(); err != nil {
		return err
	}
	res, err := EvalWorker{Deps: d}.run(ctx, a)
	if err != nil {
		return err
	}
	return writeJSON(stdout, res)
}
