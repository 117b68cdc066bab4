package batch

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/hibiken/asynq"

	"github.com/tandem-ai/tandem/artifact"
	"github.com/tandem-ai/tandem/pipeline"
)

// Finalize seals a batch, merges its results, registers them as files
// (package files) and ends it (see FinalizeArgs). Every step can
// run again after a crash: sealing resumes a batch already finalizing, the
// merged files are rewritten whole, a file already registered is left as it
// is (its id derives from the batch), and announcing is skipped once it has
// succeeded.
func (r *Runner) Finalize(ctx context.Context, job *pipeline.Job[FinalizeArgs]) error {
	a := job.Args
	expire := a.Reason == FinalizeExpire
	if expire {
		_, exp, err := r.Store.State(ctx, a.BatchID)
		if errors.Is(err, ErrNotFound) {
			return nil // deleted by hand; nothing to expire
		}
		if err != nil {
			return err
		}
		if wait := time.Unix(exp, 0).Sub(r.now()); wait > 0 {
			return fmt.Errorf("batch %s: expiry task ran %v early; retrying", a.BatchID, wait.Round(time.Second))
		}
	}
	seal, err := r.Store.Seal(ctx, a.BatchID, expire)
	if errors.Is(err, ErrNotFound) {
		return pipeline.Permanent(err)
	}
	if err != nil {
		return err
	}
	switch {
	case seal.Terminal != "":
		// A finalisation that died after Finish left its cleanup undone;
		// this retry does it (it is idempotent), so a cancelled GPU batch
		// does not keep its waiting chunks in gpu.
		if b, err := r.Store.Get(ctx, a.BatchID); err == nil {
			r.cleanup(context.WithoutCancel(ctx), b, seal.Terminal)
		}
		return r.announce(ctx, a.BatchID)
	case !seal.Sealed:
		return nil // chunks left, no cancel, window open: the last chunk finalises
	}
	b, err := r.Store.Get(ctx, a.BatchID)
	if err != nil {
		return err
	}
	counts, missing, err := r.merge(ctx, b, seal.Final)
	if err != nil {
		return fmt.Errorf("batch %s: merge: %w", b.ID, err)
	}
	final := seal.Final
	if final == StatusCompleted && counts.Completed == 0 && counts.Failed > 0 {
		final = StatusFailed // nothing could be generated at all
	}
	if len(missing) > 0 {
		// Inputs are gone (or were never in this worker's store): their
		// rows have no line in either file, count as failed, and the
		// batch fails with the reason, unless it was cancelled, which it
		// stays.
		counts.Failed = counts.Total - counts.Completed
		if final != StatusCancelled {
			final = StatusFailed
		}
		if err := r.Store.SetErrors(ctx, b.ID, missing); err != nil {
			return err
		}
	}
	// The files before the end: whoever sees the batch ended, through any
	// producer, finds its output_file_id and error_file_id in GET /v1/files.
	if err := r.registerResultFiles(ctx, b.ID, outputKey(b.ID), errorKey(b.ID)); err != nil {
		return err
	}
	err = r.Store.Finish(ctx, b.ID, final, counts, outputKey(b.ID), errorKey(b.ID))
	if errors.Is(err, ErrConflict) {
		// A concurrent finalisation (the expiry racing the last chunk's)
		// finished first with the same files.
		return r.announce(ctx, b.ID)
	}
	if err != nil {
		return err
	}
	r.cleanup(context.WithoutCancel(ctx), b, final)
	return r.announce(ctx, b.ID)
}

// CodeChunkOutputLost is the error code, in errors.jsonl, of the rows of a
// chunk that counted but whose output file is missing at finalisation.
const CodeChunkOutputLost = "chunk_output_lost"

// merge writes output.jsonl and errors.jsonl: every input line once, in
// input order, from the counted chunk outputs, the rows of chunks that did
// not count (reported as cancelled or expired) or whose output is missing
// (chunk_output_lost), and the invalid lines --skip-invalid left out. Inputs
// missing from the store leave their lines out; missing says which.
func (r *Runner) merge(ctx context.Context, b *Batch, final Status) (_ Counts, missing []Problem, _ error) {
	outputs, err := r.Store.ChunkOutputs(ctx, b.ID)
	if err != nil {
		return Counts{}, nil, err
	}
	var invalid []lineResult
	if b.Skipped > 0 {
		err := readJSONL(ctx, r.Artifacts, invalidKey(b.ID), func(l lineResult) error {
			invalid = append(invalid, l)
			return nil
		})
		if errors.Is(err, artifact.ErrNotFound) {
			missing = append(missing, r.inputMissing(ctx, "the list of the batch's invalid lines"))
		} else if err != nil {
			return Counts{}, nil, fmt.Errorf("invalid lines: %w", err)
		}
	}
	code, msg := "batch_cancelled", "the batch was cancelled before this request ran"
	switch final {
	case StatusExpired:
		code, msg = "batch_expired", "the batch's completion window closed before this request ran"
	case StatusCompleted:
		code, msg = "batch_incomplete", "this request's chunk did not finish"
	case StatusFailed:
		code, msg = "batch_failed", "the batch failed before this request ran (its errors say why)"
	}

	w, err := newResultWriter()
	if err != nil {
		return Counts{}, nil, err
	}
	defer w.remove()
	emit := func(l lineResult) error {
		for len(invalid) > 0 && invalid[0].Line < l.Line {
			if err := w.write(invalid[0]); err != nil {
				return err
			}
			invalid = invalid[1:]
		}
		return w.write(l)
	}
	lost := 0 // chunks whose rows cannot be listed
	for c := 0; c < b.Chunks; c++ {
		rowCode, rowMsg := code, msg
		if key, ok := outputs[c]; ok {
			err := readJSONL(ctx, r.Artifacts, key, emit)
			if err == nil {
				continue
			}
			if !errors.Is(err, artifact.ErrNotFound) {
				return Counts{}, nil, fmt.Errorf("chunk %d output: %w", c, err)
			}
			// Counted, but its output is gone (deleted by hand, or lost
			// with a store): waiting would never end, and the batch is
			// sealed, so its rows fail with the reason and the batch ends.
			r.Logger.Warn("batch: a counted chunk's output is missing; its rows fail as chunk_output_lost",
				"batch", b.ID, "chunk", c, "key", key)
			rowCode = CodeChunkOutputLost
			rowMsg = fmt.Sprintf("the output of chunk %d was lost after the chunk finished; this request has no result, submit it again", c)
		}
		err := readJSONL(ctx, r.Artifacts, inputKey(b.ID, c), func(row Row) error {
			return emit(errorResult(b.ID, row.Line, row.Request.CustomID, rowCode, rowMsg))
		})
		if errors.Is(err, artifact.ErrNotFound) {
			lost++
		} else if err != nil {
			return Counts{}, nil, fmt.Errorf("chunk %d input: %w", c, err)
		}
	}
	if lost > 0 {
		missing = append(missing, r.inputMissing(ctx, fmt.Sprintf("the input of %d of the batch's %d chunks", lost, b.Chunks)))
	}
	for _, l := range invalid {
		if err := w.write(l); err != nil {
			return Counts{}, nil, err
		}
	}
	if err := w.put(ctx, r.Artifacts, outputKey(b.ID), errorKey(b.ID)); err != nil {
		return Counts{}, nil, err
	}
	return Counts{Total: b.RequestCounts.Total, Completed: w.ok, Failed: w.bad}, missing, nil
}

// resultWriter splits results into two local temporary files, then puts
// them in the store: output.jsonl and errors.jsonl are written in one pass
// over the chunks, and a Put needs a whole file to be atomic.
type resultWriter struct {
	files   [2]*os.File
	bufs    [2]*bufio.Writer
	encs    [2]*json.Encoder
	ok, bad int
}

func newResultWriter() (*resultWriter, error) {
	w := &resultWriter{}
	for i := range w.files {
		f, err := os.CreateTemp("", "tandem-finalize-*.jsonl")
		if err != nil {
			w.remove()
			return nil, err
		}
		w.files[i] = f
		w.bufs[i] = bufio.NewWriterSize(f, 256<<10)
		w.encs[i] = json.NewEncoder(w.bufs[i])
		w.encs[i].SetEscapeHTML(false)
	}
	return w, nil
}

func (w *resultWriter) write(l lineResult) error {
	i := 0
	if l.Result.Error != nil || l.Result.Response == nil {
		i = 1
		w.bad++
	} else {
		w.ok++
	}
	return w.encs[i].Encode(l.Result)
}

func (w *resultWriter) put(ctx context.Context, store artifact.Store, keys ...string) error {
	for i, key := range keys {
		if err := w.bufs[i].Flush(); err != nil {
			return err
		}
		if _, err := w.files[i].Seek(0, 0); err != nil {
			return err
		}
		if err := store.Put(ctx, key, w.files[i]); err != nil {
			return err
		}
	}
	return nil
}

func (w *resultWriter) remove() {
	for _, f := range w.files {
		if f != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}
}

// cleanup removes what the merged files replace, the chunk tasks still
// waiting to run, and the expiry task a batch that finished in time no
// longer needs. Best effort: leftovers are garbage, not errors.
func (r *Runner) cleanup(ctx context.Context, b *Batch, final Status) {
	keys, err := r.Artifacts.List(ctx, batchPrefix(b.ID))
	if err == nil {
		var drop []string
		for _, k := range keys {
			if k != outputKey(b.ID) && k != errorKey(b.ID) {
				drop = append(drop, k)
			}
		}
		deleteQuietly(ctx, r.Artifacts, drop)
	}
	r.dropWaitingChunks(ctx, b)
	if final != StatusExpired {
		// Finalisation tasks are on QueueDefault whatever the batch's
		// device: merging is CPU work.
		exp := FinalizeArgs{BatchID: b.ID, Reason: FinalizeExpire}
		insp := r.Client.Inspector()
		if err := insp.DeleteTask(pipeline.QueueDefault, exp.TaskID()); err != nil && !errors.Is(err, asynq.ErrTaskNotFound) && !errors.Is(err, asynq.ErrQueueNotFound) {
			r.Logger.Debug("batch: expiry task not removed", "batch", b.ID, "err", err)
		}
	}
}

// dropWaitingChunks deletes, from the batch's chunk queue, the tasks of
// chunks that never counted and are still waiting (pending, or in retry).
// Taken later they would only be skipped, but on the gpu queue each one
// keeps GPU workers busy or scaled up for nothing, and a cancelled or
// expired GPU batch may have no GPU worker left to skip them. A running
// chunk is left to stop by itself; an archived one stays for its error.
// Costs a few Redis round trips per uncounted chunk, after the batch has
// already ended.
func (s *Service) dropWaitingChunks(ctx context.Context, b *Batch) {
	counted, err := s.Store.ChunkOutputs(ctx, b.ID)
	if err != nil || len(counted) >= b.Chunks {
		return
	}
	insp, queue := s.Client.Inspector(), b.chunkQueue()
	for c := 0; c < b.Chunks; c++ {
		if _, ok := counted[c]; ok {
			continue
		}
		id := ChunkArgs{BatchID: b.ID, Chunk: c}.TaskID()
		info, err := insp.GetTaskInfo(queue, id)
		if errors.Is(err, asynq.ErrQueueNotFound) {
			return
		}
		if err != nil || (info.State != asynq.TaskStatePending && info.State != asynq.TaskStateRetry) {
			continue
		}
		if err := insp.DeleteTask(queue, id); err != nil && !errors.Is(err, asynq.ErrTaskNotFound) {
			s.Logger.Debug("batch: waiting chunk not removed", "batch", b.ID, "chunk", c, "err", err)
		}
	}
}

// announce publishes the lifecycle event and enqueues the webhooks of a
// finished batch, once: a failure returns an error, the finalize task is
// retried, and the retry announces again (JetStream and the webhook task
// ids drop what already went out).
func (r *Runner) announce(ctx context.Context, id string) error {
	if done, err := r.Store.Announced(ctx, id); err != nil || done {
		return err
	}
	b, err := r.Get(ctx, id)
	if err != nil {
		return err
	}
	if !b.Status.Terminal() {
		return nil
	}
	ev, err := batchEvent(b)
	if err != nil {
		return err
	}
	if r.Bus != nil {
		if err := publishEvent(ctx, r.Bus, ev); err != nil {
			return fmt.Errorf("batch %s: lifecycle event: %w", id, err)
		}
	}
	if r.Webhooks != nil {
		body, err := json.Marshal(ev)
		if err != nil {
			return err
		}
		for _, u := range r.Webhooks.URLs {
			wa := WebhookArgs{URL: u, EventID: ev.ID, EventType: ev.Type, Body: body}
			if err := r.enqueue(ctx, wa, WebhookTaskID(ev.ID, u), asynq.Retention(24*time.Hour)); err != nil {
				return fmt.Errorf("batch %s: webhook %s: %w", id, u, err)
			}
		}
	}
	if first, err := r.Store.MarkAnnounced(ctx, id); err != nil {
		return err
	} else if first {
		r.Metrics.finish(b.Status)
	}
	r.progress(b)
	return nil
}
