package batch

import (
	"strconv"
	"time"

	"github.com/tandem-ai/tandem/jobs"
	"github.com/tandem-ai/tandem/limits"
	"github.com/tandem-ai/tandem/pipeline"
)

// MaxChunks bounds the chunks of one batch (MaxRequestLines rows in
// chunks of one row at the smallest).
const MaxChunks = limits.BatchChunks

// MaxIDLen bounds a batch id; ids are NATS subject tokens and Redis keys.
const MaxIDLen = limits.BatchIDLen

// IDPrefix starts every batch id, as OpenAI's do.
const IDPrefix = "batch_"

// ValidateID reports whether id is a well-formed batch id:
// "batch_" followed by letters, digits, "_" or "-", at most MaxIDLen
// bytes. Such an id is safe as a NATS subject token, a Redis key part, an
// artifact key segment and an asynq task id part.
func ValidateID(id string) error {
	if len(id) <= len(IDPrefix) || id[:len(IDPrefix)] != IDPrefix {
		return pipeline.InvalidField("batch_id", "%q does not start with %q followed by an id", id, IDPrefix)
	}
	if len(id) > MaxIDLen {
		return pipeline.InvalidField("batch_id", "%d bytes, limit %d", len(id), MaxIDLen)
	}
	if err := pipeline.ValidateID(id); err != nil {
		return pipeline.InvalidField("batch_id", "%v", err)
	}
	return nil
}

// ChunkArgs asks a worker to generate one chunk of a batch. The rows
// are in the artifact store, not in the payload: a task carries references.
type ChunkArgs struct {
	BatchID string `json:"batch_id"`
	Chunk   int    `json:"chunk"`
}

// Kind implements pipeline.JobArgs.
func (ChunkArgs) Kind() string { return jobs.KindBatchChunk }

// Validate implements pipeline.Validator.
func (a ChunkArgs) Validate() error {
	if err := ValidateID(a.BatchID); err != nil {
		return err
	}
	if a.Chunk < 0 || a.Chunk >= MaxChunks {
		return pipeline.InvalidField("chunk", "%d is outside 0..%d", a.Chunk, MaxChunks-1)
	}
	return nil
}

// TaskID is "<batch>:<chunk>": enqueuing a chunk twice is a conflict, not a
// second run.
func (a ChunkArgs) TaskID() string { return a.BatchID + ":" + strconv.Itoa(a.Chunk) }

// Finalize reasons.
const (
	// FinalizeDone merges a batch whose chunks have all finished, or that is
	// being cancelled. Its task id is "<batch>:finalize".
	FinalizeDone = ""
	// FinalizeExpire ends a batch at the close of its completion window,
	// reporting unfinished rows as expired. Its task id is "<batch>:expire"
	// and it is enqueued, scheduled, when the batch is created.
	FinalizeExpire = "expire"
)

// FinalizeArgs asks a worker to merge a batch's chunk outputs into
// output.jsonl and errors.jsonl and end the batch.
type FinalizeArgs struct {
	BatchID string `json:"batch_id"`
	Reason  string `json:"reason,omitempty"` // FinalizeDone or FinalizeExpire
}

// Kind implements pipeline.JobArgs.
func (FinalizeArgs) Kind() string { return jobs.KindBatchFinalize }

// Validate implements pipeline.Validator.
func (a FinalizeArgs) Validate() error {
	if err := ValidateID(a.BatchID); err != nil {
		return err
	}
	switch a.Reason {
	case FinalizeDone, FinalizeExpire:
		return nil
	}
	return pipeline.InvalidField("reason", "%q is not \"\" or %q", a.Reason, FinalizeExpire)
}

// TaskID is "<batch>:finalize" or "<batch>:expire": one of each per batch.
func (a FinalizeArgs) TaskID() string {
	if a.Reason == FinalizeExpire {
		return a.BatchID + ":expire"
	}
	return a.BatchID + ":finalize"
}

// Kinds is a registry of every kind, jobs' and batch's, for enqueuing and
// checking payloads only: its workers never run, so they need no parts.
func Kinds() *pipeline.Registry {
	r := pipeline.NewRegistry()
	jobs.RegisterAll(r, &jobs.Deps{})
	Register(r, nil)
	return r
}

// Register registers the batch kinds on r, run by run: generate:chunk,
// generate:finalize and webhook. A nil run registers them for enqueuing
// (their options and payload checks) only.
func Register(r *pipeline.Registry, run *Runner) {
	pipeline.Register(r, pipeline.WorkFunc[ChunkArgs](run.RunChunk), pipeline.KindOptions{Queue: "default", MaxRetry: 10, Timeout: time.Hour})
	pipeline.Register(r, pipeline.WorkFunc[FinalizeArgs](run.Finalize), pipeline.KindOptions{Queue: "default", MaxRetry: 20, Timeout: 30 * time.Minute})
	pipeline.Register(r, pipeline.WorkFunc[WebhookArgs](run.deliver), pipeline.KindOptions{Queue: "default", MaxRetry: 12, Timeout: time.Minute})
}
