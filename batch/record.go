package batch

import (
	"fmt"
	"time"

	"github.com/tandem-ai/tandem/limits"
	"github.com/tandem-ai/tandem/pipeline"
)

// Status is where a batch stands. The names and meanings follow the OpenAI
// Batch API.
type Status string

// Statuses.
const (
	// StatusValidating: the record exists and its chunk inputs are being
	// written; nothing is enqueued yet.
	StatusValidating Status = "validating"
	// StatusInProgress: chunks are queued or running.
	StatusInProgress Status = "in_progress"
	// StatusFinalizing: the batch is sealed (no further chunk counts) and
	// its results are being merged.
	StatusFinalizing Status = "finalizing"
	// StatusCompleted: finalised; output.jsonl and errors.jsonl are ready.
	StatusCompleted Status = "completed"
	// StatusFailed: the batch could not run (setting it up failed, or no
	// row could be generated at all, e.g. the model does not load).
	StatusFailed Status = "failed"
	// StatusExpired: the completion window closed first; unfinished rows are
	// in errors.jsonl with code batch_expired.
	StatusExpired Status = "expired"
	// StatusCancelling: cancel was asked; no new chunk starts, running ones
	// stop at their next decode step.
	StatusCancelling Status = "cancelling"
	// StatusCancelled: finalised after a cancel; rows that did not run are
	// in errors.jsonl with code batch_cancelled.
	StatusCancelled Status = "cancelled"
)

// Terminal reports whether s is a final status.
func (s Status) Terminal() bool {
	switch s {
	case StatusCompleted, StatusFailed, StatusExpired, StatusCancelled:
		return true
	}
	return false
}

// Valid reports whether s is a known status.
func (s Status) Valid() bool {
	switch s {
	case StatusValidating, StatusInProgress, StatusFinalizing, StatusCompleted, StatusFailed,
		StatusExpired, StatusCancelling, StatusCancelled:
		return true
	}
	return false
}

// Counts are a batch's request counts. While the batch runs, Completed and
// Failed count the rows of chunks that have finished (and lines skipped as
// invalid); after finalisation Completed is the number of lines in
// output.jsonl and Failed the number in errors.jsonl, which together are
// Total.
type Counts struct {
	Total     int `json:"total"`
	Completed int `json:"completed"`
	Failed    int `json:"failed"`
}

// Done is how many rows have an outcome.
func (c Counts) Done() int { return c.Completed + c.Failed }

// Input kinds.
const (
	InputOpenAI   = "openai"   // OpenAI Batch JSONL
	InputTemplate = "template" // template rows
)

// Batch is a batch record. Times are unix seconds; zero means "not yet".
type Batch struct {
	ID               string            `json:"id"`
	Object           string            `json:"object"`
	Endpoint         string            `json:"endpoint"`
	InputFileID      string            `json:"input_file_id,omitempty"`
	Model            string            `json:"model"`
	InputKind        string            `json:"input_kind"`
	CompletionWindow string            `json:"completion_window"`
	Status           Status            `json:"status"`
	RequestCounts    Counts            `json:"request_counts"`
	Metadata         map[string]string `json:"metadata,omitempty"`
	Errors           []Problem         `json:"errors,omitempty"`

	CreatedAt    int64 `json:"created_at"`
	InProgressAt int64 `json:"in_progress_at,omitempty"`
	ExpiresAt    int64 `json:"expires_at"`
	FinalizingAt int64 `json:"finalizing_at,omitempty"`
	CompletedAt  int64 `json:"completed_at,omitempty"`
	FailedAt     int64 `json:"failed_at,omitempty"`
	ExpiredAt    int64 `json:"expired_at,omitempty"`
	CancellingAt int64 `json:"cancelling_at,omitempty"`
	CancelledAt  int64 `json:"cancelled_at,omitempty"`

	// Chunks is how many chunk tasks the batch has; ChunksDone how many
	// have counted.
	Chunks     int `json:"chunks"`
	ChunksDone int `json:"chunks_done"`
	ChunkSize  int `json:"chunk_size"`
	// BatchSize caps the engine slots one chunk's rows hold at once.
	BatchSize int `json:"batch_size"`
	// Skipped is how many invalid lines --skip-invalid left out; they are
	// in errors.jsonl.
	Skipped     int         `json:"skipped_invalid,omitempty"`
	PostProcess PostProcess `json:"postprocess"`
	// Device is CreateOptions.Device: where the chunks run ("" is the CPU).
	Device string `json:"device,omitempty"`

	// OutputKey and ErrorKey are the artifact keys of the merged files, set
	// when the batch is finalised; OutputFile and ErrorFile are where they
	// are (a path or a URL), filled in by Service for display.
	OutputKey  string `json:"output_key,omitempty"`
	ErrorKey   string `json:"error_key,omitempty"`
	OutputFile string `json:"output_file,omitempty"`
	ErrorFile  string `json:"error_file,omitempty"`
	// OutputFileID and ErrorFileID name the merged files in the Files API
	// (files.ResultID of the batch), set with the keys. Finalisation
	// registers the files before the batch ends (resultFiles records it),
	// so the ids name files as soon as a reader sees them.
	OutputFileID string `json:"output_file_id,omitempty"`
	ErrorFileID  string `json:"error_file_id,omitempty"`

	resultFiles bool // the result files are registered (field result_files)
	// store is the artifact store the producer wrote the inputs to (its
	// ID; field store, "" in records from before it was kept): a worker
	// on another store fails the batch at once when an input is missing,
	// a worker on the same one retries.
	store string
}

// chunkQueue is the queue b's chunk tasks are on: pipeline.QueueGPU for a
// CUDA device, else QueueDefault (the chunk kind's own). Create checked the
// device; a record written before devices existed has none, and its chunks
// are on QueueDefault.
func (b *Batch) chunkQueue() string {
	if q, err := pipeline.QueueForDevice(b.Device, ""); err == nil && q != "" {
		return q
	}
	return pipeline.QueueDefault
}

// Expired reports whether the batch's window has closed at now.
func (b *Batch) Expired(now time.Time) bool { return b.ExpiresAt > 0 && now.Unix() >= b.ExpiresAt }

// Limits on what a batch may ask for.
const (
	// MaxMetadataPairs and the key/value sizes follow the OpenAI Batch API.
	MaxMetadataPairs    = limits.BatchMetadataPairs
	MaxMetadataKeyLen   = limits.BatchMetadataKeyLen
	MaxMetadataValueLen = limits.BatchMetadataValueLen
	// DefaultChunkSize is the rows per chunk task.
	DefaultChunkSize = 32
	MaxChunkSize     = limits.BatchChunkSize
	// DefaultCompletionWindow is how long a batch may take.
	DefaultCompletionWindow = 24 * time.Hour
	MinCompletionWindow     = limits.MinBatchCompletionWindow
	MaxCompletionWindow     = limits.BatchCompletionWindow
)

// ValidateMetadata checks the metadata limits.
func ValidateMetadata(m map[string]string) error {
	if len(m) > MaxMetadataPairs {
		return fmt.Errorf("metadata: %d pairs, at most %d", len(m), MaxMetadataPairs)
	}
	for k, v := range m {
		if k == "" || len(k) > MaxMetadataKeyLen {
			return fmt.Errorf("metadata: key %.70q must be 1..%d bytes", k, MaxMetadataKeyLen)
		}
		if len(v) > MaxMetadataValueLen {
			return fmt.Errorf("metadata[%q]: value is %d bytes, at most %d", k, len(v), MaxMetadataValueLen)
		}
	}
	return nil
}
