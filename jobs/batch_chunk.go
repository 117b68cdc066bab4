package jobs

import (
	"context"
	"errors"
	"strconv"

	"github.com/tandem-ai/tandem/limits"
	"github.com/tandem-ai/tandem/pipeline"
)

// KindBatchChunk is the stable kind string of BatchChunkArgs.
const KindBatchChunk = pipeline.KindPrefixGenerate + "chunk"

// MaxBatchChunks bounds the chunks of one batch (MaxRequestLines rows in
// chunks of one row at the smallest).
const MaxBatchChunks = limits.BatchChunks

// MaxBatchIDLen bounds a batch id; ids are NATS subject tokens and Redis keys.
const MaxBatchIDLen = limits.BatchIDLen

// BatchIDPrefix starts every batch id, as OpenAI's do.
const BatchIDPrefix = "batch_"

// ValidateBatchID reports whether id is a well-formed batch id:
// "batch_" followed by letters, digits, "_" or "-", at most MaxBatchIDLen
// bytes. Such an id is safe as a NATS subject token, a Redis key part, an
// artifact key segment and an asynq task id part.
func ValidateBatchID(id string) error {
	if len(id) <= len(BatchIDPrefix) || id[:len(BatchIDPrefix)] != BatchIDPrefix {
		return pipeline.InvalidField("batch_id", "%q does not start with %q followed by an id", id, BatchIDPrefix)
	}
	if len(id) > MaxBatchIDLen {
		return pipeline.InvalidField("batch_id", "%d bytes, limit %d", len(id), MaxBatchIDLen)
	}
	if err := pipeline.ValidateID(id); err != nil {
		return pipeline.InvalidField("batch_id", "%v", err)
	}
	return nil
}

// BatchChunkArgs asks a worker to generate one chunk of a batch. The rows
// are in the artifact store, not in the payload: a task carries references.
type BatchChunkArgs struct {
	BatchID string `json:"batch_id"`
	Chunk   int    `json:"chunk"`
}

// Kind implements pipeline.JobArgs.
func (BatchChunkArgs) Kind() string { return KindBatchChunk }

// Validate implements pipeline.Validator.
func (a BatchChunkArgs) Validate() error {
	if err := ValidateBatchID(a.BatchID); err != nil {
		return err
	}
	if a.Chunk < 0 || a.Chunk >= MaxBatchChunks {
		return pipeline.InvalidField("chunk", "%d is outside 0..%d", a.Chunk, MaxBatchChunks-1)
	}
	return nil
}

// TaskID is "<batch>:<chunk>": enqueuing a chunk twice is a conflict, not a
// second run.
func (a BatchChunkArgs) TaskID() string { return a.BatchID + ":" + strconv.Itoa(a.Chunk) }

// BatchRunner runs the batch job kinds. The batch package implements it;
// the worker installs it in Deps (batch.Attach), which keeps jobs free of
// Redis and artifact-store wiring.
type BatchRunner interface {
	RunChunk(ctx context.Context, job *pipeline.Job[BatchChunkArgs]) error
	Finalize(ctx context.Context, job *pipeline.Job[BatchFinalizeArgs]) error
}

// errNoBatchRunner is transient on purpose: a worker deployed without batch
// wiring hands the task back, and a correctly wired worker takes it.
var errNoBatchRunner = errors.New("this worker has no batch runner (Deps.Batches is nil; the worker must call batch.Attach)")

// BatchChunkWorker runs generate:chunk tasks through Deps.Batches.
type BatchChunkWorker struct{ Deps *Deps }

// Work implements pipeline.Worker.
func (w BatchChunkWorker) Work(ctx context.Context, job *pipeline.Job[BatchChunkArgs]) error {
	if w.Deps == nil || w.Deps.Batches == nil {
		return errNoBatchRunner
	}
	return w.Deps.Batches.RunChunk(ctx, job)
}

// batchQueueOnly is why the batch kinds have no `worker exec` of their own.
const batchQueueOnly = "as part of a batch; submit one with `producer batch create FILE --model M`, " +
	"or run a file in-process with `worker exec generate`"
