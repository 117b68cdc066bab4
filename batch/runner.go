package batch

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/tandem-ai/tandem/artifact"
	"github.com/tandem-ai/tandem/generation"
	"github.com/tandem-ai/tandem/pipeline"
)

// Runner runs the batch job kinds in a worker (Register).
type Runner struct {
	*Service
	Models   *generation.ModelStore
	Webhooks *WebhookConfig // nil: no webhooks
	// PollInterval is how often a running chunk checks whether its batch
	// was cancelled or expired.
	PollInterval time.Duration
}

// DefaultPollInterval is Runner.PollInterval's default.
const DefaultPollInterval = 500 * time.Millisecond

// beforeChunkCount, when set by a test, runs just before a chunk run
// counts its output.
var beforeChunkCount func(chunk int)

// errBatchStopped is the cause a chunk's decode is cancelled with when its
// batch stops (cancel or expiry), as opposed to the worker shutting down.
var errBatchStopped = errors.New("batch stopped")

// RunChunk generates one chunk (see the package comment for its steps).
func (r *Runner) RunChunk(ctx context.Context, job *pipeline.Job[ChunkArgs]) error {
	a := job.Args
	start := time.Now()
	b, err := r.Store.Get(ctx, a.BatchID)
	if errors.Is(err, ErrNotFound) {
		return pipeline.Permanent(err)
	}
	if err != nil {
		return err
	}
	if a.Chunk >= b.Chunks {
		return pipeline.Permanent(fmt.Errorf("batch %s has %d chunks; chunk %d does not exist", b.ID, b.Chunks, a.Chunk))
	}
	switch {
	case b.Status == StatusValidating:
		return fmt.Errorf("batch %s is still validating; chunk %d waits", b.ID, a.Chunk)
	case b.Status != StatusInProgress, b.Expired(r.now()):
		r.Metrics.chunk("skipped")
		return nil
	}
	if counted, err := r.Store.ChunkOutput(ctx, b.ID, a.Chunk); err != nil {
		return err
	} else if counted != "" {
		// A re-run after the count advanced but before the task was acked
		// (or after a count whose answer was lost): drop what runs that
		// did not count left, and make sure the finalisation the first
		// run owed was enqueued.
		r.Metrics.chunk("duplicate")
		r.dropStrayOutputs(ctx, b.ID, a.Chunk, counted)
		if b.ChunksDone >= b.Chunks {
			return r.enqueueFinalize(ctx, b.ID)
		}
		return nil
	}

	var rows []Row
	err = readJSONL(ctx, r.Artifacts, inputKey(b.ID, a.Chunk), func(row Row) error {
		rows = append(rows, row)
		return nil
	})
	if errors.Is(err, artifact.ErrNotFound) && !r.onStoreOf(ctx, b) {
		return r.failInputMissing(ctx, b, fmt.Sprintf("the input of chunk %d", a.Chunk))
	}
	if err != nil {
		return fmt.Errorf("batch %s chunk %d: input: %w", b.ID, a.Chunk, err)
	}
	results, err := r.generate(ctx, b, rows)
	if errors.Is(err, errBatchStopped) {
		r.Metrics.chunk("abandoned")
		return nil
	}
	if err != nil {
		return fmt.Errorf("batch %s chunk %d: %w", b.ID, a.Chunk, err)
	}
	completed, failed := 0, 0
	for _, res := range results {
		if res.Result.Error != nil {
			failed++
		} else {
			completed++
		}
	}

	// Write first, count second. The key is fresh per run, so a run that
	// loses the race to count never overwrites the output that counted.
	key := chunkOutputKey(b.ID, a.Chunk, randomHex(6))
	if err := putJSONL(ctx, r.Artifacts, key, results); err != nil {
		return fmt.Errorf("batch %s chunk %d: output: %w", b.ID, a.Chunk, err)
	}
	if beforeChunkCount != nil {
		beforeChunkCount(a.Chunk)
	}
	res, err := r.Store.ChunkDone(ctx, b.ID, a.Chunk, key, completed, failed)
	if err != nil {
		// Whether it counted is unknown (Redis may have run the script
		// and lost the answer), so the output stays: the task's retry
		// finds the chunk counted with this key, or counts its own and
		// drops this one as a stray.
		return err
	}
	switch {
	case res.Counted:
		r.Metrics.counted(completed, failed, time.Since(start).Seconds())
		publishProgress(r.Bus, Progress{BatchID: b.ID, Status: b.Status, ChunksDone: res.ChunksDone, Chunks: res.Chunks,
			RequestCounts: Counts{Total: b.RequestCounts.Total, Completed: res.Completed, Failed: res.Failed}, Time: time.Now().UTC()})
		if job.Retried > 0 {
			// An earlier attempt may have left an output whose count failed.
			r.dropStrayOutputs(ctx, b.ID, a.Chunk, key)
		}
	case res.Duplicate:
		// Another run counted (the script recognises this call's own
		// count, even when go-redis sent it twice), so this output never
		// will; any other that is not the recorded one goes too.
		r.Metrics.chunk("duplicate")
		if counted, err := r.Store.ChunkOutput(ctx, b.ID, a.Chunk); err == nil && counted != "" {
			r.dropStrayOutputs(ctx, b.ID, a.Chunk, counted)
		} else {
			_ = r.Artifacts.Delete(ctx, key)
		}
	default:
		r.Metrics.chunk("refused") // sealed meanwhile: finalisation reports these rows
		_ = r.Artifacts.Delete(ctx, key)
		return nil
	}
	if res.Last() {
		return r.enqueueFinalize(ctx, b.ID)
	}
	return nil
}

// generate runs the rows through the model while a watcher polls the batch
// and cancels the decode when the batch is cancelled or expires; that case
// returns errBatchStopped.
func (r *Runner) generate(ctx context.Context, b *Batch, rows []Row) ([]lineResult, error) {
	lines := make([]generation.InputLine, len(rows))
	for i, row := range rows {
		lines[i] = generation.InputLine{LineNo: row.Line, Request: row.Request}
	}
	out := make([]lineResult, len(rows))
	lm, err := r.Models.Get(b.Model)
	if err != nil {
		// The model will not load here; every row fails with the reason,
		// and the batch still finishes (as failed if no row succeeds).
		for i, row := range rows {
			out[i] = errorResult(b.ID, row.Line, row.Request.CustomID, "model_unavailable", err.Error())
		}
		return out, nil
	}
	tok, err := r.Models.Tokenizer()
	if err != nil {
		return nil, fmt.Errorf("tokenizer: %w", err)
	}
	genCtx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	go r.watch(genCtx, cancel, b.ID)
	resp, err := generation.GenerateLines(genCtx, lm, tok, lines, b.BatchSize, b.ID, nil)
	if err != nil {
		if ctx.Err() == nil && errors.Is(context.Cause(genCtx), errBatchStopped) {
			return nil, errBatchStopped
		}
		return nil, err
	}
	pp := b.PostProcess
	for i, rl := range resp {
		if rl.Response != nil && !pp.IsZero() {
			for c := range rl.Response.Body.Choices {
				ch := &rl.Response.Body.Choices[c]
				ch.Text = pp.Apply(rows[i].Request.Body.Prompt, ch.Text)
			}
		}
		out[i] = lineResult{Line: rows[i].Line, Result: rl}
	}
	return out, nil
}

// watch cancels the decode when the batch leaves in_progress or its window
// closes. Redis errors are ignored: the decode goes on, and a batch that
// really stopped is still protected by the count script's refusal.
func (r *Runner) watch(ctx context.Context, cancel context.CancelCauseFunc, id string) {
	every := r.PollInterval
	if every <= 0 {
		every = DefaultPollInterval
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		st, exp, err := r.Store.State(ctx, id)
		if err != nil {
			if errors.Is(err, ErrNotFound) {
				cancel(errBatchStopped)
				return
			}
			continue
		}
		if st != StatusInProgress || (exp > 0 && r.now().Unix() >= exp) {
			cancel(errBatchStopped)
			return
		}
	}
}

func (r *Runner) enqueueFinalize(ctx context.Context, id string) error {
	fin := FinalizeArgs{BatchID: id}
	if err := r.enqueue(ctx, fin, fin.TaskID()); err != nil {
		return fmt.Errorf("batch %s: enqueue finalisation: %w", id, err)
	}
	return nil
}

// dropStrayOutputs deletes every output of chunk but keep, the one Redis
// records: once a chunk has counted, no other run's output can count (the
// count script takes only the recorded key again), so the others are
// garbage. Best effort, and only on the rare paths (a duplicate run, a
// retried task), since it lists the batch's chunk outputs.
func (r *Runner) dropStrayOutputs(ctx context.Context, id string, chunk int, keep string) {
	prefix := chunkRunsPrefix(id, chunk)
	keys, err := r.Artifacts.List(ctx, chunksPrefix(id))
	if err != nil {
		return
	}
	var drop []string
	for _, k := range keys {
		if k != keep && strings.HasPrefix(k, prefix) {
			drop = append(drop, k)
		}
	}
	deleteQuietly(ctx, r.Artifacts, drop)
}

// deleteQuietly removes artifacts that are no longer needed; failures only
// leave garbage behind.
func deleteQuietly(ctx context.Context, s artifact.Store, keys []string) {
	for _, k := range keys {
		_ = s.Delete(ctx, k)
	}
}
