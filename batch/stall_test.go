package batch

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/tandem-ai/tandem/internal/redistest"
	"github.com/tandem-ai/tandem/jobs"
	"github.com/tandem-ai/tandem/pipeline"
)

// newStallEnv is a Service and a Runner on a private Redis with the
// client options production uses (go-redis's defaults).
func newStallEnv(t *testing.T) (*redistest.Server, *Runner) {
	t.Helper()
	rs := redistest.StartVolatile(t)
	cfg := pipeline.DefaultConfig()
	cfg.RedisURL = "redis://" + rs.Addr + "/0"
	cfg.DataDir = t.TempDir()
	cfg.Queues = map[string]int{pipeline.QueueDefault: 1}
	svc, err := Open(context.Background(), cfg, OpenOptions{ArtifactStore: "local", Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.Close() })
	// A running worker has its scripts cached in Redis, so the client
	// sends EVALSHA, which runs again when retried; on a fresh server the
	// first EVALSHA would answer NOSCRIPT instead and hide the retry.
	for _, s := range []*redis.Script{scriptCreate, scriptTransition, scriptChunkDone, scriptSeal, scriptFinish} {
		if err := s.Load(context.Background(), svc.Client.Redis()).Err(); err != nil {
			t.Fatal(err)
		}
	}
	return rs, &Runner{Service: svc, Models: jobs.NewDeps(quietLogger()).Models}
}

// Counting a chunk is one call that go-redis may send several times: a
// read timeout makes it send the script again, and both runs happen. The
// second run must answer as the first did (this call counted), or the
// caller deletes the output that counted.
func TestChunkDoneRetriedByTheClientIsStillCounted(t *testing.T) {
	e := newTestEnv(t, envOptions{})
	ctx := context.Background()
	st := e.svc.Store
	if err := st.Create(ctx, newRecord("batch_retry", 2)); err != nil {
		t.Fatal(err)
	}
	first, err := st.ChunkDone(ctx, "batch_retry", 0, "key-a", 2, 0)
	if err != nil || !first.Counted {
		t.Fatalf("first run: %+v, %v", first, err)
	}
	again, err := st.ChunkDone(ctx, "batch_retry", 0, "key-a", 2, 0)
	if err != nil || !again.Counted || again.Duplicate {
		t.Fatalf("the same call run again: %+v, %v; want counted (it is this call's own count)", again, err)
	}
	if again.Completed != 2 || again.ChunksDone != 1 {
		t.Fatalf("the rerun counted twice: %+v", again)
	}
	other, err := st.ChunkDone(ctx, "batch_retry", 0, "key-b", 2, 0)
	if err != nil || other.Counted || !other.Duplicate {
		t.Fatalf("another run of the chunk: %+v, %v; want duplicate", other, err)
	}
	// Sealed in between: the retry of the call that counted still owns it.
	if err := st.Transition(ctx, "batch_retry", StatusCancelling, StatusInProgress); err != nil {
		t.Fatal(err)
	}
	if s, err := st.Seal(ctx, "batch_retry", false); err != nil || !s.Sealed {
		t.Fatalf("seal: %+v, %v", s, err)
	}
	sealed, err := st.ChunkDone(ctx, "batch_retry", 0, "key-a", 2, 0)
	if err != nil || !sealed.Counted {
		t.Fatalf("the counting call, retried after the seal: %+v, %v; want counted", sealed, err)
	}
	outs, _ := st.ChunkOutputs(ctx, "batch_retry")
	b, _ := st.Get(ctx, "batch_retry")
	if outs[0] != "key-a" || b.RequestCounts.Completed != 2 || b.ChunksDone != 1 {
		t.Fatalf("outputs %v, counts %+v, chunks done %d", outs, b.RequestCounts, b.ChunksDone)
	}
}

// The finding of issue 22: Redis paused past the client's read timeout
// while a chunk counts. go-redis retries the script; Redis, once resumed,
// runs it twice. The chunk's output must survive, and the batch must end
// with every row once.
func TestChunkSurvivesRedisStallWhileCounting(t *testing.T) {
	rs, r, b, ids := newStallBatch(t, 8)
	ctx := context.Background()
	var resumed <-chan struct{}
	beforeChunkCount = func(chunk int) {
		if chunk == 0 {
			resumed = rs.Stall(t, redistest.PastReadTimeout)
		}
	}
	t.Cleanup(func() { beforeChunkCount = nil })
	for c := range 2 {
		job := &pipeline.Job[ChunkArgs]{Args: ChunkArgs{BatchID: b.ID, Chunk: c}}
		if err := r.RunChunk(ctx, job); err != nil {
			t.Fatalf("chunk %d: %v", c, err)
		}
	}
	<-resumed
	checkOneOutputPerChunk(t, r, b.ID, 2)
	finaliseAndCheck(t, r, b.ID, ids)
}

// newStallBatch starts newStallEnv and creates a batch of rows rows in
// chunks of 4; it skips in -short mode.
func newStallBatch(t *testing.T, rows int) (*redistest.Server, *Runner, *Batch, []string) {
	t.Helper()
	if testing.Short() {
		t.Skip("pauses a redis-server for 7 s")
	}
	rs, r := newStallEnv(t)
	input, ids := openAIInput(rows, 3)
	b, _, err := r.Create(context.Background(), strings.NewReader(input), CreateOptions{Model: "builtin:tiny", ChunkSize: 4})
	if err != nil {
		t.Fatal(err)
	}
	return rs, r, b, ids
}

// finaliseAndCheck finalises batch id, whose chunks all counted, and
// checks it completed with every row of ids once.
func finaliseAndCheck(t *testing.T, r *Runner, id string, ids []string) {
	t.Helper()
	ctx := context.Background()
	if err := r.Finalize(ctx, &pipeline.Job[FinalizeArgs]{Args: FinalizeArgs{BatchID: id}}); err != nil {
		t.Fatalf("finalise: %v", err)
	}
	end, err := r.Get(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if end.Status != StatusCompleted || end.RequestCounts != (Counts{Total: len(ids), Completed: len(ids)}) {
		t.Fatalf("ended %s with %+v", end.Status, end.RequestCounts)
	}
	out, errs := readResults(t, r.Service, id)
	checkExactlyOnce(t, ids, out, errs)
}

// Several runs of one chunk at once (a lease that expired under a live
// run, a task delivered twice), with Redis paused while they count so
// that go-redis retries every count: one output stays per chunk, it is
// the one Redis records, and the counts are exact.
func TestDuplicateRunsAndRetriedCountsAgree(t *testing.T) {
	rs, r, b, ids := newStallBatch(t, 12)
	ctx := context.Background()
	const runs = 4
	var once sync.Once
	var resumed <-chan struct{}
	var arrived atomic.Int32 // runs that reached the count, retries included
	beforeChunkCount = func(int) {
		arrived.Add(1)
		// The first run to count pauses Redis; the others count into
		// the pause too, or just after it.
		once.Do(func() { resumed = rs.Stall(t, redistest.PastReadTimeout) })
	}
	t.Cleanup(func() { beforeChunkCount = nil })
	var wg sync.WaitGroup
	failed := make(chan int, runs*b.Chunks)
	for c := range b.Chunks {
		for range runs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				job := &pipeline.Job[ChunkArgs]{Args: ChunkArgs{BatchID: b.ID, Chunk: c}}
				if err := r.RunChunk(ctx, job); err != nil {
					// A count whose every attempt timed out: it may or may
					// not have run. asynq retries such a task.
					t.Logf("chunk %d: %v (retried)", c, err)
					failed <- c
				}
			}()
		}
	}
	wg.Wait()
	close(failed)
	if arrived.Load() == 0 {
		t.Fatal("no run reached the count")
	}
	<-resumed
	for c := range failed {
		job := &pipeline.Job[ChunkArgs]{Args: ChunkArgs{BatchID: b.ID, Chunk: c}, Retried: 1}
		if err := r.RunChunk(ctx, job); err != nil {
			t.Fatalf("chunk %d, retried after the stall: %v", c, err)
		}
	}
	got, err := r.Get(ctx, b.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.ChunksDone != b.Chunks || got.RequestCounts.Completed != 12 || got.RequestCounts.Failed != 0 {
		t.Fatalf("after %d runs of each chunk: %d/%d chunks, counts %+v", runs, got.ChunksDone, b.Chunks, got.RequestCounts)
	}
	checkOneOutputPerChunk(t, r, b.ID, b.Chunks)
	finaliseAndCheck(t, r, b.ID, ids)
}

// checkOneOutputPerChunk asserts that the artifact store holds exactly one
// output per chunk, and that it is the one Redis records.
func checkOneOutputPerChunk(t *testing.T, r *Runner, id string, chunks int) {
	t.Helper()
	ctx := context.Background()
	recorded, err := r.Store.ChunkOutputs(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	keys, err := r.Artifacts.List(ctx, chunksPrefix(id))
	if err != nil {
		t.Fatal(err)
	}
	stored := map[int][]string{}
	for _, k := range keys {
		var c int
		if _, err := fmt.Sscanf(strings.TrimPrefix(k, chunksPrefix(id)), "%06d-", &c); err != nil {
			t.Fatalf("unexpected key %s: %v", k, err)
		}
		stored[c] = append(stored[c], k)
	}
	for c := range chunks {
		if len(stored[c]) != 1 || recorded[c] != stored[c][0] {
			t.Errorf("chunk %d: Redis records %q, the store holds %v; want exactly the recorded one", c, recorded[c], stored[c])
		}
	}
}

// A chunk that counted but whose output is gone at finalisation (deleted by
// hand, a store that lost it) does not hold the batch in finalizing for
// ever: its rows fail with chunk_output_lost and the batch ends.
func TestFinalizeWithMissingChunkOutputEnds(t *testing.T) {
	e := newTestEnv(t, envOptions{})
	ctx := context.Background()
	r := &Runner{Service: e.svc, Models: jobs.NewDeps(quietLogger()).Models}
	b, ids := createAndRun(t, r, 6, 3)
	outs, err := e.svc.Store.ChunkOutputs(ctx, b.ID)
	if err != nil || len(outs) != 2 {
		t.Fatalf("outputs %v, %v", outs, err)
	}
	if err := e.svc.Artifacts.Delete(ctx, outs[1]); err != nil {
		t.Fatal(err)
	}
	fin := &pipeline.Job[FinalizeArgs]{Args: FinalizeArgs{BatchID: b.ID}}
	if err := r.Finalize(ctx, fin); err != nil {
		t.Fatalf("finalise: %v", err)
	}
	end, _ := e.svc.Get(ctx, b.ID)
	if end.Status != StatusCompleted || end.RequestCounts != (Counts{Total: 6, Completed: 3, Failed: 3}) {
		t.Fatalf("ended %s with %+v; want completed, 3 + 3", end.Status, end.RequestCounts)
	}
	out, errs := e.results(t, b.ID)
	checkExactlyOnce(t, ids, out, errs)
	for _, l := range errs {
		if l.Error == nil || l.Error.Code != CodeChunkOutputLost || !strings.Contains(l.Error.Message, "chunk 1") {
			t.Fatalf("errors.jsonl line %+v; want code %s naming chunk 1", l, CodeChunkOutputLost)
		}
	}
	if l := out[0]; l.CustomID != ids[0] {
		t.Fatalf("output.jsonl starts with %s; want %s", l.CustomID, ids[0])
	}
	if err := r.Finalize(ctx, fin); err != nil {
		t.Fatalf("finalisation run again: %v", err)
	}
}

// Every script that changes a record answers a repeat of the same call
// (same arguments, as go-redis sends it after a read timeout) as it
// answered the call, instead of reporting a conflict with itself.
func TestScriptsAnswerARepeatedCallAlike(t *testing.T) {
	e := newTestEnv(t, envOptions{})
	ctx := context.Background()
	rdb := e.svc.Client.Redis()
	rec := recordKey("batch_repeat")
	twice := func(what string, want any, s *redis.Script, keys []string, args ...any) {
		t.Helper()
		for i := range 2 {
			got, err := s.Run(ctx, rdb, keys, args...).Result()
			if err != nil || fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("%s, run %d: %v, %v; want %v", what, i+1, got, err, want)
			}
		}
	}
	twice("create", 1, scriptCreate, []string{rec}, "tok-1", "id", "batch_repeat", "status", "validating", "chunks", 1)
	if n, _ := scriptCreate.Run(ctx, rdb, []string{rec}, "tok-2", "id", "batch_repeat").Int(); n != 0 {
		t.Fatalf("create of an id in use by another call: %d; want 0", n)
	}
	twice("transition", "ok", scriptTransition, []string{rec}, "in_progress", 1, "tok-3", "validating")
	if st, _ := scriptTransition.Run(ctx, rdb, []string{rec}, "in_progress", 1, "tok-4", "validating").Text(); st != "in_progress" {
		t.Fatalf("another call's transition from validating: %q; want the status found", st)
	}
	twice("cancel", "ok", scriptTransition, []string{rec}, "cancelling", 2, "tok-5", "in_progress")
	if _, err := e.svc.Store.Seal(ctx, "batch_repeat", false); err != nil {
		t.Fatal(err)
	}
	twice("finish", "ok", scriptFinish, []string{rec}, "cancelled", 3, 0, 1, "o", "e")
	if st, _ := scriptFinish.Run(ctx, rdb, []string{rec}, "cancelled", 3, 1, 0, "o", "e").Text(); st != "cancelled" {
		t.Fatalf("a different finish of an ended batch: %q; want its status", st)
	}
	twice("announce", 1, scriptAnnounce, []string{rec}, "tok-6")
	if n, _ := scriptAnnounce.Run(ctx, rdb, []string{rec}, "tok-7").Int(); n != 0 {
		t.Fatalf("a second announcement: %d; want 0", n)
	}
	if b, err := e.svc.Store.Get(ctx, "batch_repeat"); err != nil || b.Status != StatusCancelled {
		t.Fatalf("record %+v, %v", b, err)
	} else if first, err := e.svc.Store.MarkAnnounced(ctx, "batch_repeat"); err != nil || first {
		t.Fatalf("MarkAnnounced after the announcement: %v, %v; want false", first, err)
	}
}

// createAndRun creates a batch of rows rows in chunks of chunkSize and
// runs each chunk once.
func createAndRun(t *testing.T, r *Runner, rows, chunkSize int) (*Batch, []string) {
	t.Helper()
	ctx := context.Background()
	input, ids := openAIInput(rows, 3)
	b, _, err := r.Create(ctx, strings.NewReader(input), CreateOptions{Model: "builtin:tiny", ChunkSize: chunkSize})
	if err != nil {
		t.Fatal(err)
	}
	for c := range b.Chunks {
		if err := r.RunChunk(ctx, &pipeline.Job[ChunkArgs]{Args: ChunkArgs{BatchID: b.ID, Chunk: c}}); err != nil {
			t.Fatalf("chunk %d: %v", c, err)
		}
	}
	return b, ids
}
