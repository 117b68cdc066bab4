package batch

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/hibiken/asynq"

	"github.com/tandem-ai/tandem/artifact"
	"github.com/tandem-ai/tandem/files"
	"github.com/tandem-ai/tandem/generation"
	"github.com/tandem-ai/tandem/jobs"
	"github.com/tandem-ai/tandem/pipeline"
)

// Service creates and inspects batches; the producer's CLI and HTTP API use
// it, and Runner builds on it in workers.
type Service struct {
	Store     *Store
	Artifacts artifact.Store
	Client    *pipeline.Client
	Bus       *pipeline.Bus // nil without NATS: no progress events or lifecycle events
	Logger    *slog.Logger
	Metrics   *Metrics // nil outside workers
	// Files holds the Files API's file objects; finalisation registers a
	// batch's result files there.
	Files *files.Store
	// CancelGrace is how long after a cancel the finalisation runs, so that
	// running chunks see the cancel and stop first (they poll every
	// Runner.PollInterval). Finalisation is correct without it; the grace
	// only keeps it from discarding chunks that were about to count.
	CancelGrace time.Duration

	now func() time.Time
	// closers run on Close, for what Open created.
	closers []func() error
}

// beforeChunkEnqueue, when set by a test, runs before each chunk task is
// enqueued; an error fails the batch's setup there.
var beforeChunkEnqueue func(chunk int) error

// minCompletionWindow is MinCompletionWindow, lowered by tests.
var minCompletionWindow = MinCompletionWindow

// DefaultCancelGrace is Service.CancelGrace's default.
const DefaultCancelGrace = 2 * time.Second

// NewService assembles a service from its parts.
func NewService(store *Store, arts artifact.Store, client *pipeline.Client, bus *pipeline.Bus, logger *slog.Logger) *Service {
	if logger == nil {
		logger = slog.Default()
	}
	return &Service{
		Store: store, Artifacts: arts, Files: files.NewStore(client.Redis(), arts), Client: client, Bus: bus,
		Logger: logger, CancelGrace: DefaultCancelGrace, now: time.Now,
	}
}

// Close releases what Open connected (not what the caller passed in).
func (s *Service) Close() error {
	var errs []error
	for i := len(s.closers) - 1; i >= 0; i-- {
		errs = append(errs, s.closers[i]())
	}
	s.closers = nil
	return errors.Join(errs...)
}

// CreateOptions describe a new batch. The JSON form is the HTTP API's.
type CreateOptions struct {
	// Model is the batch's model; empty for OpenAI Batch JSONL whose lines
	// name it (body.model).
	Model string `json:"model,omitempty"`
	// Endpoint is the url every request line names (default
	// generation.CompletionsURL); see Endpoints.
	Endpoint string `json:"endpoint,omitempty"`
	// InputFileID is the uploaded file the input was read from (the
	// OpenAI form); Create only records it.
	InputFileID string `json:"input_file_id,omitempty"`
	// Template is a text/template source; empty: the input is OpenAI Batch JSONL.
	Template string `json:"template,omitempty"`
	// Format of template rows: "jsonl" (default) or "csv".
	Format   string            `json:"format,omitempty"`
	Metadata map[string]string `json:"metadata,omitempty"`
	// CompletionWindow is a Go duration ("24h", the default).
	CompletionWindow string `json:"completion_window,omitempty"`
	// ChunkSize is rows per chunk task (default DefaultChunkSize).
	ChunkSize int `json:"chunk_size,omitempty"`
	// BatchSize caps the engine slots a chunk holds (default: ChunkSize, at most
	// jobs.MaxBatchSize).
	BatchSize int `json:"batch_size,omitempty"`
	// SkipInvalid runs the valid lines of an input that has invalid ones;
	// the invalid ones go to errors.jsonl.
	SkipInvalid bool        `json:"skip_invalid,omitempty"`
	PostProcess PostProcess `json:"postprocess,omitempty"`
	// Device is where the chunks run: "cuda" or "cuda:N" puts them on
	// pipeline.QueueGPU, for GPU workers; "cpu" or "" (the default) on the
	// chunk kind's own queue, for every worker. Any GPU worker takes a
	// "cuda:N" batch's chunks, as pipeline.QueueForDevice routes single
	// jobs; the finalisation stays on the CPU workers' queue either way.
	Device string `json:"device,omitempty"`
}

// check fills defaults and validates o.
func (o *CreateOptions) check() (window time.Duration, err error) {
	if o.Model != "" || o.Template != "" {
		if err := generation.ValidateModelName(o.Model); err != nil {
			return 0, err
		}
	}
	if o.Endpoint == "" {
		o.Endpoint = generation.CompletionsURL
	}
	if err := checkEndpoint(o.Endpoint); err != nil {
		return 0, err
	}
	if o.Template != "" && o.Endpoint != generation.CompletionsURL {
		return 0, fmt.Errorf("endpoint: %q: template rows are %s requests", o.Endpoint, generation.CompletionsURL)
	}
	if o.CompletionWindow == "" {
		o.CompletionWindow = DefaultCompletionWindow.String()
	}
	window, err = time.ParseDuration(o.CompletionWindow)
	if err != nil {
		return 0, fmt.Errorf("completion_window: %q: want a duration such as 24h", o.CompletionWindow)
	}
	if window < minCompletionWindow || window > MaxCompletionWindow {
		return 0, fmt.Errorf("completion_window: %v is outside %v..%v", window, minCompletionWindow, MaxCompletionWindow)
	}
	if o.ChunkSize == 0 {
		o.ChunkSize = DefaultChunkSize
	}
	if o.ChunkSize < 1 || o.ChunkSize > MaxChunkSize {
		return 0, fmt.Errorf("chunk_size: %d is outside 1..%d", o.ChunkSize, MaxChunkSize)
	}
	if o.BatchSize == 0 {
		o.BatchSize = min(o.ChunkSize, jobs.MaxBatchSize)
	}
	if o.BatchSize < 1 || o.BatchSize > jobs.MaxBatchSize {
		return 0, fmt.Errorf("batch_size: %d is outside 1..%d", o.BatchSize, jobs.MaxBatchSize)
	}
	if err := ValidateMetadata(o.Metadata); err != nil {
		return 0, err
	}
	if err := o.PostProcess.Validate(); err != nil {
		return 0, err
	}
	if _, err := pipeline.QueueForDevice(o.Device, ""); err != nil {
		return 0, err // names the field: `device "tpu": want cpu, cuda or cuda:N`
	}
	return window, nil
}

// ErrInvalid is wrapped by Create's errors that are the caller's to fix
// (bad options, an unreadable or oversized input, a template that does not
// parse); *ValidationError wraps it too.
var ErrInvalid = errors.New("batch: invalid request")

type invalidError struct{ err error }

func (e *invalidError) Error() string   { return e.err.Error() }
func (e *invalidError) Unwrap() []error { return []error{e.err, ErrInvalid} }

func invalid(err error) error { return &invalidError{err: err} }

// Create validates input and, when it is valid (or SkipInvalid is set and
// some lines are), creates the batch: the record, the chunk inputs in the
// artifact store, then the chunk tasks. An input with invalid lines and no
// SkipInvalid returns a *ValidationError listing every problem by line, and
// nothing is written or enqueued. The Report describes the input either way.
func (s *Service) Create(ctx context.Context, input io.Reader, o CreateOptions) (*Batch, *Report, error) {
	window, err := o.check()
	if err != nil {
		return nil, nil, invalid(err)
	}
	plan, err := PlanInput(input, Input{Model: o.Model, Endpoint: o.Endpoint, Template: o.Template, Format: o.Format})
	if err != nil {
		return nil, nil, invalid(err)
	}
	if len(plan.Invalid) > 0 && !o.SkipInvalid {
		return nil, &plan.Report, &ValidationError{Report: plan.Report}
	}
	if len(plan.Rows) == 0 {
		return nil, &plan.Report, &ValidationError{Report: plan.Report}
	}
	if err := s.checkWorkersShareStore(ctx); err != nil {
		return nil, &plan.Report, err
	}
	store, err := s.Artifacts.ID(ctx)
	if err != nil {
		return nil, &plan.Report, err
	}
	now := s.now()
	b := &Batch{
		ID: newBatchID(), Object: "batch", Endpoint: o.Endpoint, InputFileID: o.InputFileID, Model: plan.Model, InputKind: plan.Kind,
		CompletionWindow: window.String(), Status: StatusValidating, Metadata: o.Metadata,
		RequestCounts: Counts{Total: plan.Report.Lines, Failed: len(plan.Invalid)},
		CreatedAt:     now.Unix(), ExpiresAt: now.Add(window).Unix(),
		Chunks: (len(plan.Rows) + o.ChunkSize - 1) / o.ChunkSize, ChunkSize: o.ChunkSize, BatchSize: o.BatchSize,
		Skipped: len(plan.Invalid), PostProcess: o.PostProcess, Device: o.Device, store: store,
	}
	if err := s.Store.Create(ctx, b); err != nil {
		return nil, &plan.Report, err
	}
	if err := s.start(ctx, b, plan, window); err != nil {
		// The record stays, failed, so the id the caller may have seen in
		// logs explains itself; chunks already queued skip a failed batch.
		_ = s.Store.SetErrors(context.WithoutCancel(ctx), b.ID, []Problem{{Code: "setup_failed", Message: err.Error()}})
		_ = s.Store.Transition(context.WithoutCancel(ctx), b.ID, StatusFailed, StatusValidating, StatusInProgress)
		// Chunks queued before the failure would wait for the expiry task
		// (a whole window) and, on the gpu queue, wake GPU workers only to
		// be skipped.
		s.dropWaitingChunks(context.WithoutCancel(ctx), b)
		return nil, &plan.Report, fmt.Errorf("batch %s: %w", b.ID, err)
	}
	got, err := s.Get(ctx, b.ID)
	if err != nil {
		return nil, &plan.Report, err
	}
	s.progress(got)
	return got, &plan.Report, nil
}

// start writes the chunk inputs and enqueues the work.
func (s *Service) start(ctx context.Context, b *Batch, plan *Plan, window time.Duration) error {
	for c := 0; c < b.Chunks; c++ {
		rows := plan.Rows[c*b.ChunkSize : min((c+1)*b.ChunkSize, len(plan.Rows))]
		if err := putJSONL(ctx, s.Artifacts, inputKey(b.ID, c), rows); err != nil {
			return fmt.Errorf("chunk %d input: %w", c, err)
		}
	}
	if len(plan.Invalid) > 0 {
		res := make([]lineResult, len(plan.Invalid))
		for i, p := range plan.Invalid {
			res[i] = errorResult(b.ID, p.Line, p.CustomID, p.Code, p.Message)
		}
		if err := putJSONL(ctx, s.Artifacts, invalidKey(b.ID), res); err != nil {
			return fmt.Errorf("invalid lines: %w", err)
		}
	}
	if err := s.Store.Transition(ctx, b.ID, StatusInProgress, StatusValidating); err != nil {
		return err
	}
	// The window's end first: a batch whose chunks are queued always has
	// its expiry queued too.
	exp := FinalizeArgs{BatchID: b.ID, Reason: FinalizeExpire}
	if err := s.enqueue(ctx, exp, exp.TaskID(), asynq.ProcessAt(time.Unix(b.ExpiresAt, 0))); err != nil {
		return fmt.Errorf("expiry task: %w", err)
	}
	queue := b.chunkQueue()
	for c := 0; c < b.Chunks; c++ {
		if beforeChunkEnqueue != nil {
			if err := beforeChunkEnqueue(c); err != nil {
				return fmt.Errorf("chunk %d: %w", c, err)
			}
		}
		a := ChunkArgs{BatchID: b.ID, Chunk: c}
		// Retention keeps a finished chunk's task id taken for the window,
		// so a re-submitted chunk is refused as a conflict.
		if err := s.enqueue(ctx, a, a.TaskID(), asynq.Queue(queue), asynq.Retention(window)); err != nil {
			return fmt.Errorf("chunk %d: %w", c, err)
		}
	}
	return nil
}

// enqueue enqueues args under taskID; a task already there is success.
func (s *Service) enqueue(ctx context.Context, args pipeline.JobArgs, taskID string, opts ...asynq.Option) error {
	opts = append([]asynq.Option{asynq.TaskID(taskID)}, opts...)
	var err error
	switch a := args.(type) {
	case ChunkArgs:
		err = enqueueTyped(ctx, s.Client, a, opts)
	case FinalizeArgs:
		err = enqueueTyped(ctx, s.Client, a, opts)
	case WebhookArgs:
		err = enqueueTyped(ctx, s.Client, a, opts)
	default:
		return fmt.Errorf("enqueue: unexpected %T", args)
	}
	if errors.Is(err, asynq.ErrTaskIDConflict) || errors.Is(err, asynq.ErrDuplicateTask) {
		return nil
	}
	return err
}

// enqueueTyped is pipeline.Enqueue for one concrete args type (Enqueue is
// generic, so the interface value above is switched back to its type).
func enqueueTyped[T pipeline.JobArgs](ctx context.Context, c *pipeline.Client, args T, opts []asynq.Option) error {
	_, err := pipeline.Enqueue(ctx, c, args, opts...)
	return err
}

// Get reads a batch, with the locations of its result files.
func (s *Service) Get(ctx context.Context, id string) (*Batch, error) {
	b, err := s.Store.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	s.locate(b)
	return b, nil
}

func (s *Service) locate(b *Batch) {
	if b.OutputKey != "" {
		b.OutputFile = s.Artifacts.Location(b.OutputKey)
	}
	if b.ErrorKey != "" {
		b.ErrorFile = s.Artifacts.Location(b.ErrorKey)
	}
}

// List pages through batches, newest first.
func (s *Service) List(ctx context.Context, after string, limit int) ([]*Batch, bool, error) {
	bs, more, err := s.Store.List(ctx, after, limit)
	for _, b := range bs {
		s.locate(b)
	}
	return bs, more, err
}

// Cancel asks a batch to stop: no chunk starts any more, running chunks
// stop at their next decode step, and after CancelGrace the batch is
// finalised with what has finished; status ends cancelled. Cancelling a
// batch that is already cancelling or cancelled returns it as it is.
func (s *Service) Cancel(ctx context.Context, id string) (*Batch, error) {
	err := s.Store.Transition(ctx, id, StatusCancelling, StatusInProgress, StatusValidating)
	if errors.Is(err, ErrConflict) {
		b, gerr := s.Get(ctx, id)
		if gerr == nil && (b.Status == StatusCancelling || b.Status == StatusCancelled) {
			return b, nil
		}
		return nil, err
	}
	if err != nil {
		return nil, err
	}
	fin := FinalizeArgs{BatchID: id}
	if err := s.enqueue(ctx, fin, fin.TaskID(), asynq.ProcessIn(s.CancelGrace)); err != nil {
		return nil, fmt.Errorf("batch %s: cancel: finalisation: %w (the batch is cancelling; its expiry will finalise it)", id, err)
	}
	b, err := s.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	s.progress(b)
	return b, nil
}

// Result files.
const (
	FileOutput = "output"
	FileErrors = "errors"
)

// OpenResult opens a finished batch's output.jsonl (FileOutput) or
// errors.jsonl (FileErrors).
func (s *Service) OpenResult(ctx context.Context, id, which string) (io.ReadCloser, *Batch, error) {
	b, err := s.Get(ctx, id)
	if err != nil {
		return nil, nil, err
	}
	key := b.OutputKey
	switch which {
	case FileOutput:
	case FileErrors:
		key = b.ErrorKey
	default:
		return nil, nil, fmt.Errorf("file %q: want %s or %s", which, FileOutput, FileErrors)
	}
	if key == "" {
		return nil, b, fmt.Errorf("batch %s is %s: %w: results exist once it is completed, failed, expired or cancelled", id, b.Status, ErrConflict)
	}
	rc, err := s.Artifacts.Get(ctx, key)
	if err != nil {
		return nil, b, err
	}
	return rc, b, nil
}

// registerResultFiles makes the merged files under outKey and errKey the
// batch's result files in the Files API (ids files.ResultID), then records
// that on the batch. Run again, it registers nothing twice and the ids stay.
func (s *Service) registerResultFiles(ctx context.Context, id, outKey, errKey string) error {
	for _, f := range [...]struct{ which, key string }{{FileOutput, outKey}, {FileErrors, errKey}} {
		if err := s.Files.RegisterResult(ctx, id, f.which, f.key); err != nil {
			return fmt.Errorf("batch %s: %s file: %w", id, f.which, err)
		}
	}
	return s.Store.markResultFiles(ctx, id)
}

// EnsureResultFiles registers the result files of a batch finalised by a
// worker older than the registration in Runner.Finalize (its record has
// result keys and no mark). It is kept only for such batches; for every
// other batch it does nothing and costs nothing.
func (s *Service) EnsureResultFiles(ctx context.Context, b *Batch) error {
	if b.OutputKey == "" || b.resultFiles {
		return nil
	}
	if err := s.registerResultFiles(ctx, b.ID, b.OutputKey, b.ErrorKey); err != nil {
		return err
	}
	b.resultFiles = true
	return nil
}

// Watch calls fn with the batch now, then on every change, until the batch
// ends (fn sees the final state), fn returns false, or ctx ends. Progress
// events on NATS wake it at once; without NATS, or between events, it polls
// every interval.
func (s *Service) Watch(ctx context.Context, id string, interval time.Duration, fn func(*Batch) bool) error {
	if interval <= 0 {
		interval = time.Second
	}
	wake := make(chan struct{}, 1)
	if s.Bus != nil {
		stop, err := s.Bus.SubscribeCore(pipeline.BatchProgressSubject(id), func(string, []byte) {
			select {
			case wake <- struct{}{}:
			default:
			}
		})
		if err == nil {
			defer stop()
		}
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	var last *Batch
	for {
		b, err := s.Get(ctx, id)
		if err != nil {
			return err
		}
		if last == nil || changed(last, b) {
			if !fn(b) {
				return nil
			}
		}
		if b.Status.Terminal() {
			return nil
		}
		last = b
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-wake:
		case <-t.C:
		}
	}
}

func changed(a, b *Batch) bool {
	return a.Status != b.Status || a.RequestCounts != b.RequestCounts || a.ChunksDone != b.ChunksDone
}

func (s *Service) progress(b *Batch) {
	publishProgress(s.Bus, Progress{BatchID: b.ID, Status: b.Status, RequestCounts: b.RequestCounts, ChunksDone: b.ChunksDone, Chunks: b.Chunks, Time: s.now().UTC()})
}

func newBatchID() string {
	var b [12]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read does not fail on supported platforms
	return IDPrefix + hex.EncodeToString(b[:])
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
