package jobs

import (
	"context"
	"errors"
	"flag"
	"io"

	"github.com/tandem-ai/tandem/generation"
	"github.com/tandem-ai/tandem/pipeline"
	"github.com/tandem-ai/tandem/tokenstream"
)

// KindEmbeddings is the stable kind string of EmbeddingsArgs.
const KindEmbeddings = pipeline.KindPrefixGenerate + "embeddings"

// EmbeddingsTimeout bounds one embeddings run on a worker.
const EmbeddingsTimeout = InteractiveTimeout

// EmbeddingsArgs asks a worker to embed the inputs of one POST
// /v1/embeddings request (generation.LoadedModel.Embeddings) while the
// producer waits. The answer is the task's result, an EmbeddingsResult,
// which the producer reads from the finished task in Redis (asynq keeps
// it, and the producer deletes the task once read): the vectors of a
// request can be megabytes, more than one NATS message or bus event may
// carry, and a task result needs no new transport.
type EmbeddingsArgs struct {
	// ID is the task id, "embd-" and 24 hex digits (NewEmbeddingsID).
	ID   string                    `json:"id"`
	Body generation.EmbeddingsBody `json:"body"`
}

// Kind implements pipeline.JobArgs.
func (EmbeddingsArgs) Kind() string { return KindEmbeddings }

// KindOptions implements pipeline.KindOptioner: the interactive queue, no
// retry (the client has gone by the time a retry would run) and a bounded
// run.
func (EmbeddingsArgs) KindOptions() pipeline.KindOptions {
	return pipeline.KindOptions{Queue: pipeline.QueueInteractive, MaxRetry: pipeline.NoRetry, Timeout: EmbeddingsTimeout}
}

// Validate implements pipeline.Validator. Errors name the field as the
// HTTP body spells it.
func (a EmbeddingsArgs) Validate() error {
	if a.Body.Model == "" {
		return &generation.RequestError{Code: generation.CodeInvalidRequest, Param: "model", Message: "required (a registered name, a model directory or builtin:tiny)"}
	}
	if err := a.Body.Validate(); err != nil {
		return err
	}
	if err := pipeline.ValidateID(a.ID); err != nil {
		return pipeline.InvalidField("id", "%v", err)
	}
	return nil
}

// NewEmbeddingsID returns a fresh embeddings task id.
func NewEmbeddingsID() string { return "embd-" + NewCompletionID()[len("cmpl-"):] }

// EmbeddingsResult is what an embeddings job keeps as its task's result:
// the response body, with every vector in base64 whatever the request
// asked (a third of the bytes of decimal numbers; the producer sends them
// in the encoding asked for), or why the request failed.
type EmbeddingsResult struct {
	Body  *generation.EmbeddingsResponse `json:"body,omitempty"`
	Error *generation.RequestError       `json:"error,omitempty"`
}

// EmbeddingsWorker runs embeddings jobs.
type EmbeddingsWorker struct{ Deps *Deps }

// Work implements pipeline.Worker. A failure is kept as the result too,
// with the field the request got wrong or, for a failure of the worker's
// own, a message that names none of its hosts or paths, and fails the job.
func (w EmbeddingsWorker) Work(ctx context.Context, job *pipeline.Job[EmbeddingsArgs]) error {
	resp, err := runEmbeddings(ctx, w.Deps, job.Args)
	if err == nil {
		return keepResult(job.ResultWriter, EmbeddingsResult{Body: &resp})
	}
	fault := embeddingsFault(err, ctx.Err())
	if fault.Code == tokenstream.CodeFailed || fault.Code == tokenstream.CodeTimeout {
		w.Deps.logger().Error("embeddings: failed", "id", job.Args.ID, "err", err)
	}
	if werr := keepResult(job.ResultWriter, EmbeddingsResult{Error: fault}); werr != nil {
		w.Deps.logger().Error("embeddings: result not kept", "id", job.Args.ID, "err", werr)
	}
	return pipeline.Permanent(err)
}

// runEmbeddings embeds a's inputs on its model, vectors in base64.
func runEmbeddings(ctx context.Context, d *Deps, a EmbeddingsArgs) (generation.EmbeddingsResponse, error) {
	lm, err := d.Models.Get(a.Body.Model)
	if err != nil {
		return generation.EmbeddingsResponse{}, &interactiveError{tokenstream.CodeModel, err}
	}
	tok, err := d.Models.Tokenizer()
	if err != nil {
		return generation.EmbeddingsResponse{}, err
	}
	body := a.Body
	body.EncodingFormat = generation.EncodingBase64
	return lm.Embeddings(ctx, tok, body)
}

// embeddingsFault is what the client is told of err: the request's own
// error with its field, an unknown model (faultOf; no param, as OpenAI
// answers), or that the worker failed or ran out of time.
func embeddingsFault(err, ctxErr error) *generation.RequestError {
	var re *generation.RequestError
	if errors.As(err, &re) {
		return re
	}
	f := faultOf(err, ctxErr)
	return &generation.RequestError{Code: f.Code, Message: f.Message}
}

// execEmbeddings is `worker exec generate:embeddings`: texts embedded
// in-process, the response written to stdout as JSON.
func execEmbeddings(ctx context.Context, d *Deps, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("worker exec "+KindEmbeddings, flag.ContinueOnError)
	a := EmbeddingsArgs{ID: NewEmbeddingsID()}
	fs.StringVar(&a.Body.Model, "model", "builtin:tiny", "model: registered name, directory or builtin:tiny|builtin:small")
	fs.StringVar(&a.Body.EncodingFormat, "encoding-format", generation.EncodingFloat, "float or base64")
	texts, err := pipeline.ParseArgs(fs, args, "TEXT...")
	if err != nil {
		return err
	}
	a.Body.Input.Texts = texts
	if err := a.Validate(); err != nil {
		return err
	}
	resp, err := runEmbeddings(ctx, d, a)
	if err != nil {
		return err
	}
	resp.SetEncoding(a.Body.EncodingFormat)
	return writeJSON(stdout, resp)
}
