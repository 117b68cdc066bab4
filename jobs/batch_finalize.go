package jobs

import (
	"context"

	"github.com/tandem-ai/tandem/pipeline"
)

// KindBatchFinalize is the stable kind string of BatchFinalizeArgs.
const KindBatchFinalize = pipeline.KindPrefixGenerate + "finalize"

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

// BatchFinalizeArgs asks a worker to merge a batch's chunk outputs into
// output.jsonl and errors.jsonl and end the batch.
type BatchFinalizeArgs struct {
	BatchID string `json:"batch_id"`
	Reason  string `json:"reason,omitempty"` // FinalizeDone or FinalizeExpire
}

// Kind implements pipeline.JobArgs.
func (BatchFinalizeArgs) Kind() string { return KindBatchFinalize }

// Validate implements pipeline.Validator.
func (a BatchFinalizeArgs) Validate() error {
	if err := ValidateBatchID(a.BatchID); err != nil {
		return err
	}
	switch a.Reason {
	case FinalizeDone, FinalizeExpire:
		return nil
	}
	return pipeline.InvalidField("reason", "%q is not \"\" or %q", a.Reason, FinalizeExpire)
}

// TaskID is "<batch>:finalize" or "<batch>:expire": one of each per batch.
func (a BatchFinalizeArgs) TaskID() string {
	if a.Reason == FinalizeExpire {
		return a.BatchID + ":expire"
	}
	return a.BatchID + ":finalize"
}

// BatchFinalizeWorker runs generate:finalize tasks through Deps.Batches.
type BatchFinalizeWorker struct{ Deps *Deps }

// Work implements pipeline.Worker.
func (w BatchFinalizeWorker) Work(ctx context.Context, job *pipeline.Job[BatchFinalizeArgs]) error {
	if w.Deps == nil || w.Deps.Batches == nil {
		return errNoBatchRunner
	}
	return w.Deps.Batches.Finalize(ctx, job)
}
