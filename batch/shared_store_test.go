package batch

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/tandem-ai/tandem/pipeline"
)

// A producer and a worker with different data directories, so different
// local artifact stores. Batches created before the worker runs are
// accepted (no worker says otherwise yet); the worker then fails one at
// once, naming the cause and the fix, without retrying its chunks, and a
// cancelled one ends cancelled though its finalisation cannot read a
// chunk. Once the worker runs, the producer refuses new batches, and
// accepts them again when a worker on its own store runs too.
func TestWorkerOnAnotherArtifactStore(t *testing.T) {
	e := newTestEnv(t, envOptions{}) // the producer's store: e.cfg.DataDir/artifacts
	ctx := context.Background()
	input, _ := openAIInput(4, 2)
	create := func() (*Batch, error) {
		b, _, err := e.svc.Create(ctx, strings.NewReader(input), CreateOptions{Model: "builtin:tiny", ChunkSize: 2})
		return b, err
	}
	failing, err := create()
	if err != nil {
		t.Fatal(err)
	}
	cancelled, err := create()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.Cancel(ctx, cancelled.ID); err != nil {
		t.Fatal(err)
	}

	producerDir := e.cfg.DataDir
	e.cfg.DataDir = t.TempDir() // the worker's
	e.startWorker(t, envOptions{})

	end := e.waitTerminal(t, failing.ID, time.Minute)
	if end.Status != StatusFailed {
		t.Fatalf("batch with its input in another store ended %s; want failed", end.Status)
	}
	var msg string
	waitUntil(t, "the failure's reason", func() bool {
		b, err := e.svc.Get(ctx, failing.ID)
		if err == nil && len(b.Errors) == 1 && b.Errors[0].Code == CodeInputMissing {
			msg = b.Errors[0].Message
		}
		return msg != ""
	})
	for _, want := range []string{"the input of", "not in this worker's artifact store (local)", "TANDEM_ARTIFACT_STORE=nats", "the same TANDEM_DATA_DIR"} {
		if !strings.Contains(msg, want) {
			t.Errorf("reason %q lacks %q", msg, want)
		}
	}
	if strings.Contains(msg, producerDir) || strings.Contains(msg, e.cfg.DataDir) {
		t.Errorf("reason %q names a server path", msg)
	}
	insp := e.svc.Client.Inspector()
	archived, err := insp.ListArchivedTasks(pipeline.QueueDefault)
	if err != nil || len(archived) == 0 {
		t.Fatalf("archived chunk tasks: %v, %v; want the failed chunk's", archived, err)
	}
	for _, ti := range archived {
		if ti.Retried != 0 || !strings.Contains(ti.LastErr, "not in this worker's artifact store") {
			t.Errorf("archived task %s: retried %d times, last error %q; want no retry and the reason", ti.ID, ti.Retried, ti.LastErr)
		}
	}
	if retrying, err := insp.ListRetryTasks(pipeline.QueueDefault); err != nil || len(retrying) != 0 {
		t.Errorf("tasks waiting to retry: %v, %v", retrying, err)
	}

	end = e.waitTerminal(t, cancelled.ID, time.Minute)
	if end.Status != StatusCancelled || end.RequestCounts != (Counts{Total: 4, Failed: 4}) {
		t.Fatalf("cancelled batch ended %s with %+v; want cancelled, 4 failed", end.Status, end.RequestCounts)
	}
	if len(end.Errors) != 1 || end.Errors[0].Code != CodeInputMissing || !strings.Contains(end.Errors[0].Message, "the input of 2 of the batch's 2 chunks") {
		t.Errorf("cancelled batch's errors: %+v", end.Errors)
	}

	_, err = create()
	if !errors.Is(err, ErrStoreNotShared) {
		t.Fatalf("Create with only a worker on another store: %v; want ErrStoreNotShared", err)
	}
	for _, want := range []string{"it is local, the workers use local elsewhere", "TANDEM_ARTIFACT_STORE=nats"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("refusal %q lacks %q", err, want)
		}
	}
	if list, _, err := e.svc.List(ctx, "", 10); err != nil || len(list) != 2 {
		t.Fatalf("batches after the refusal: %d, %v; want the 2 from before", len(list), err)
	}

	e.cfg.DataDir = producerDir
	e.startWorker(t, envOptions{})
	if _, err := create(); err != nil {
		t.Fatalf("Create with a worker on the producer's store: %v", err)
	}
}

// A chunk whose input is not in its worker's store fails its batch at
// once, but through the seal and the merge: a chunk that finished before
// keeps its rows' results in the output file, and the counts add up to
// the total. On the producer's own store the chunk retries instead.
func TestInputMissingKeepsFinishedChunks(t *testing.T) {
	_, r := newStallEnv(t)
	ctx := context.Background()
	input, _ := openAIInput(8, 3)
	b, _, err := r.Create(ctx, strings.NewReader(input), CreateOptions{Model: "builtin:tiny", ChunkSize: 4})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.RunChunk(ctx, &pipeline.Job[ChunkArgs]{Args: ChunkArgs{BatchID: b.ID, Chunk: 0}}); err != nil {
		t.Fatalf("chunk 0: %v", err)
	}
	if err := r.Artifacts.Delete(ctx, inputKey(b.ID, 1)); err != nil {
		t.Fatal(err)
	}
	// On the producer's own store a missing input may yet appear: the
	// chunk retries and the batch goes on.
	job := &pipeline.Job[ChunkArgs]{Args: ChunkArgs{BatchID: b.ID, Chunk: 1}}
	if err := r.RunChunk(ctx, job); err == nil || pipeline.IsPermanent(err) {
		t.Fatalf("chunk 1 without its input, on the producer's store: %v; want an error to retry", err)
	}
	if st, _, err := r.Store.State(ctx, b.ID); err != nil || st != StatusInProgress {
		t.Fatalf("batch %s, %v; want in_progress while its chunk retries", st, err)
	}
	// A worker on another store: no retry would find it.
	if err := r.Store.rdb.HSet(ctx, recordKey(b.ID), "store", "local:another").Err(); err != nil {
		t.Fatal(err)
	}
	if err := r.RunChunk(ctx, job); !pipeline.IsPermanent(err) {
		t.Fatalf("chunk 1 without its input, on another store: %v; want a permanent error", err)
	}
	if err := r.Finalize(ctx, &pipeline.Job[FinalizeArgs]{Args: FinalizeArgs{BatchID: b.ID}}); err != nil {
		t.Fatalf("finalise: %v", err)
	}
	end, err := r.Get(ctx, b.ID)
	if err != nil {
		t.Fatal(err)
	}
	if end.Status != StatusFailed || end.RequestCounts != (Counts{Total: 8, Completed: 4, Failed: 4}) {
		t.Fatalf("ended %s with %+v; want failed with 4 completed and 4 failed", end.Status, end.RequestCounts)
	}
	if len(end.Errors) == 0 || end.Errors[0].Code != CodeInputMissing {
		t.Fatalf("errors %+v; want %s", end.Errors, CodeInputMissing)
	}
	lines := 0
	if err := readJSONL(ctx, r.Artifacts, outputKey(b.ID), func(json.RawMessage) error { lines++; return nil }); err != nil {
		t.Fatal(err)
	}
	if lines != 4 {
		t.Fatalf("output file: %d lines; want chunk 0's 4", lines)
	}
}

// Only workers that take chunks speak for the store: an interactive-only
// worker on the producer's store does not make a batch acceptable while
// the chunk workers use another one.
func TestOnlyChunkWorkersAdvertiseTheirStore(t *testing.T) {
	e := newTestEnv(t, envOptions{})
	ctx := context.Background()
	e.startWorker(t, envOptions{queues: map[string]int{pipeline.QueueInteractive: 1}})
	if n, err := e.svc.Store.rdb.HLen(ctx, storesKey).Result(); err != nil || n != 0 {
		t.Fatalf("stores advertised by an interactive-only worker: %d, %v; want none", n, err)
	}
	producerDir := e.cfg.DataDir
	e.cfg.DataDir = t.TempDir()
	e.startWorker(t, envOptions{})
	e.cfg.DataDir = producerDir
	input, _ := openAIInput(2, 2)
	if _, _, err := e.svc.Create(ctx, strings.NewReader(input), CreateOptions{Model: "builtin:tiny"}); !errors.Is(err, ErrStoreNotShared) {
		t.Fatalf("create beside an interactive worker on the producer's store and a chunk worker on another: %v; want ErrStoreNotShared", err)
	}
}
