package batch

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/tandem-ai/tandem/jobs"
	"github.com/tandem-ai/tandem/pipeline"
)

// chunkTasks lists the generate:chunk tasks of batch id in queue, in every
// state asynq keeps, as task id -> state.
func chunkTasks(t testing.TB, insp *asynq.Inspector, queue, id string) map[string]asynq.TaskState {
	t.Helper()
	lists := []func(string, ...asynq.ListOption) ([]*asynq.TaskInfo, error){
		insp.ListPendingTasks, insp.ListActiveTasks, insp.ListScheduledTasks, insp.ListRetryTasks,
		insp.ListArchivedTasks, insp.ListCompletedTasks,
	}
	got := map[string]asynq.TaskState{}
	for _, list := range lists {
		tasks, err := list(queue, asynq.PageSize(1000))
		if errors.Is(err, asynq.ErrQueueNotFound) {
			return got
		}
		if err != nil {
			t.Fatalf("queue %s: %v", queue, err)
		}
		for _, ti := range tasks {
			if ti.Type == jobs.KindBatchChunk && strings.HasPrefix(ti.ID, id+":") {
				got[ti.ID] = ti.State
			}
		}
	}
	return got
}

// chunkIDs are the task ids of chunks 0..n-1 of batch id, sorted.
func chunkIDs(id string, n int) []string {
	ids := make([]string, n)
	for c := range n {
		ids[c] = ChunkArgs{BatchID: id, Chunk: c}.TaskID()
	}
	sort.Strings(ids)
	return ids
}

func sortedKeys(m map[string]asynq.TaskState) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// waiting counts the tasks of m a worker has yet to take.
func waiting(m map[string]asynq.TaskState) int {
	n := 0
	for _, st := range m {
		if st == asynq.TaskStatePending || st == asynq.TaskStateRetry || st == asynq.TaskStateScheduled {
			n++
		}
	}
	return n
}

func TestBatchDeviceRoutesChunks(t *testing.T) {
	e := newTestEnv(t, envOptions{})
	ctx := context.Background()
	insp := e.svc.Client.Inspector()
	input, _ := openAIInput(10, 2)

	// A bad device is refused, naming the field, before anything is written.
	for _, dev := range []string{"tpu", "gpu", "CUDA", "cuda:", "cuda:x", "cuda:-1", "cpu:0"} {
		_, _, err := e.svc.Create(ctx, strings.NewReader(input), CreateOptions{Model: "builtin:tiny", Device: dev})
		if err == nil || !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "device") {
			t.Errorf("device %q: %v; want an invalid-request error naming device", dev, err)
		}
	}
	e.checkNothingStored(t, "refused devices")

	// No worker runs: the chunks wait in the queue the device chose.
	for _, c := range []struct{ device, queue, other string }{
		{"cuda", pipeline.QueueGPU, pipeline.QueueDefault},
		{"cuda:1", pipeline.QueueGPU, pipeline.QueueDefault},
		{"cpu", pipeline.QueueDefault, pipeline.QueueGPU},
		{"", pipeline.QueueDefault, pipeline.QueueGPU},
	} {
		b, _, err := e.svc.Create(ctx, strings.NewReader(input), CreateOptions{Model: "builtin:tiny", ChunkSize: 3, Device: c.device})
		if err != nil {
			t.Fatalf("device %q: %v", c.device, err)
		}
		if b.Device != c.device || b.Chunks != 4 {
			t.Fatalf("device %q: created %+v", c.device, b)
		}
		if got, err := e.svc.Get(ctx, b.ID); err != nil || got.Device != c.device {
			t.Fatalf("device %q: read back %+v, %v", c.device, got, err)
		}
		in := chunkTasks(t, insp, c.queue, b.ID)
		if ids := sortedKeys(in); fmt.Sprint(ids) != fmt.Sprint(chunkIDs(b.ID, 4)) || waiting(in) != 4 {
			t.Errorf("device %q: chunk tasks in %s: %v; want all 4 pending", c.device, c.queue, in)
		}
		if out := chunkTasks(t, insp, c.other, b.ID); len(out) != 0 {
			t.Errorf("device %q: chunk tasks in %s: %v; want none", c.device, c.other, out)
		}
		// The expiry is CPU work on the default queue whatever the device.
		exp := FinalizeArgs{BatchID: b.ID, Reason: FinalizeExpire}
		if ti, err := insp.GetTaskInfo(pipeline.QueueDefault, exp.TaskID()); err != nil || ti.State != asynq.TaskStateScheduled {
			t.Errorf("device %q: expiry task: %+v, %v", c.device, ti, err)
		}
	}
}

// A GPU batch runs where the GPU pool of k8s/components/gpu-workers runs
// it: a worker that takes only the gpu queue runs the chunks (here on the
// CPU engine: the queue, not the chip, is under test), and a CPU worker on
// the default queue finalises.
func TestGPUBatchRunsOnGPUWorkers(t *testing.T) {
	e := newTestEnv(t, envOptions{})
	e.startWorker(t, envOptions{queues: map[string]int{pipeline.QueueDefault: 1}})
	e.startWorker(t, envOptions{queues: map[string]int{pipeline.QueueGPU: 1}})
	ctx := context.Background()
	input, ids := openAIInput(11, 3)
	b, _, err := e.svc.Create(ctx, strings.NewReader(input), CreateOptions{Model: "builtin:tiny", ChunkSize: 3, Device: "cuda"})
	if err != nil {
		t.Fatal(err)
	}
	end := e.waitTerminal(t, b.ID, 2*time.Minute)
	if end.Status != StatusCompleted || end.RequestCounts != (Counts{Total: 11, Completed: 11}) || end.ChunksDone != 4 || end.Device != "cuda" {
		t.Fatalf("ended %+v", end)
	}
	out, errs := e.results(t, b.ID)
	checkExactlyOnce(t, ids, out, errs)
	if len(errs) != 0 {
		t.Fatalf("error lines: %+v", errs)
	}
	// Every chunk ran from the gpu queue (retention keeps them there,
	// completed); none was ever on the default queue.
	insp := e.svc.Client.Inspector()
	gpu := chunkTasks(t, insp, pipeline.QueueGPU, b.ID)
	if fmt.Sprint(sortedKeys(gpu)) != fmt.Sprint(chunkIDs(b.ID, 4)) {
		t.Fatalf("chunk tasks in gpu: %v", gpu)
	}
	for id, st := range gpu {
		if st != asynq.TaskStateCompleted {
			t.Errorf("chunk task %s is %v; want completed", id, st)
		}
	}
	if def := chunkTasks(t, insp, pipeline.QueueDefault, b.ID); len(def) != 0 {
		t.Fatalf("chunk tasks in default: %v", def)
	}
}

// Cancelling a batch whose chunks wait for workers that are not there (a
// GPU batch with no GPU worker) ends it cancelled, every row reported, and
// removes the waiting chunks so they do not hold or wake GPU workers.
// A CPU batch cancelled at once ends the same way, with nothing left
// waiting either.
func TestCancelRemovesWaitingChunks(t *testing.T) {
	for _, device := range []string{"cuda", ""} {
		t.Run("device="+device, func(t *testing.T) {
			e := newTestEnv(t, envOptions{workers: 1}) // the default queue only
			ctx := context.Background()
			input, ids := openAIInput(40, 24)
			b, _, err := e.svc.Create(ctx, strings.NewReader(input), CreateOptions{Model: "builtin:tiny", ChunkSize: 2, Device: device})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := e.svc.Cancel(ctx, b.ID); err != nil {
				t.Fatal(err)
			}
			end := e.waitTerminal(t, b.ID, time.Minute)
			if end.Status != StatusCancelled || end.Device != device {
				t.Fatalf("ended %+v", end)
			}
			out, errs := e.results(t, b.ID)
			checkExactlyOnce(t, ids, out, errs)
			if device != "" && (len(out) != 0 || len(errs) != 40) {
				t.Fatalf("no GPU worker, yet %d rows completed", len(out))
			}
			for _, l := range errs {
				if l.Error == nil || l.Error.Code != "batch_cancelled" {
					t.Fatalf("error line %+v", l)
				}
			}
			insp := e.svc.Client.Inspector()
			waitUntil(t, "the waiting chunks to be removed", func() bool {
				return waiting(chunkTasks(t, insp, end.chunkQueue(), b.ID)) == 0
			})
			if device != "" {
				if left := chunkTasks(t, insp, pipeline.QueueGPU, b.ID); len(left) != 0 {
					t.Fatalf("chunk tasks left in gpu: %v", left)
				}
			}
		})
	}
}

// The window of a GPU batch closes with no GPU worker: a CPU worker
// expires it and removes its chunks from the gpu queue.
func TestExpiryRemovesWaitingGPUChunks(t *testing.T) {
	defer func(old time.Duration) { minCompletionWindow = old }(minCompletionWindow)
	minCompletionWindow = time.Second
	e := newTestEnv(t, envOptions{workers: 1}) // the default queue only
	ctx := context.Background()
	input, ids := openAIInput(7, 2)
	b, _, err := e.svc.Create(ctx, strings.NewReader(input), CreateOptions{Model: "builtin:tiny", ChunkSize: 2, CompletionWindow: "1s", Device: "cuda:0"})
	if err != nil {
		t.Fatal(err)
	}
	insp := e.svc.Client.Inspector()
	if n := waiting(chunkTasks(t, insp, pipeline.QueueGPU, b.ID)); n != 4 {
		t.Fatalf("%d chunk tasks waiting in gpu; want 4", n)
	}
	end := e.waitTerminal(t, b.ID, time.Minute)
	if end.Status != StatusExpired || end.RequestCounts != (Counts{Total: 7, Failed: 7}) {
		t.Fatalf("ended %+v", end)
	}
	out, errs := e.results(t, b.ID)
	checkExactlyOnce(t, ids, out, errs)
	for _, l := range errs {
		if l.Error == nil || l.Error.Code != "batch_expired" {
			t.Fatalf("error line %+v", l)
		}
	}
	waitUntil(t, "the gpu queue to lose the batch's chunks", func() bool {
		return len(chunkTasks(t, insp, pipeline.QueueGPU, b.ID)) == 0
	})
}

// A finalisation that died right after it ended the batch (Finish) never
// removed the waiting chunks; its retry finds the batch ended and must
// still remove them, or a cancelled GPU batch leaves work in gpu for good.
func TestFinalizeRetryRemovesWaitingChunks(t *testing.T) {
	e := newTestEnv(t, envOptions{}) // no worker: tasks stay where they are
	ctx := context.Background()
	input, _ := openAIInput(6, 2)
	b, _, err := e.svc.Create(ctx, strings.NewReader(input), CreateOptions{Model: "builtin:tiny", ChunkSize: 2, Device: "cuda"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.Cancel(ctx, b.ID); err != nil {
		t.Fatal(err)
	}
	// The first finalisation, up to Finish, then a crash.
	r := &Runner{Service: e.svc}
	final, counts := sealAndMerge(t, r, b.ID)
	if err := r.Store.Finish(ctx, b.ID, final, counts, outputKey(b.ID), errorKey(b.ID)); err != nil {
		t.Fatal(err)
	}
	insp := e.svc.Client.Inspector()
	if n := waiting(chunkTasks(t, insp, pipeline.QueueGPU, b.ID)); n != 3 {
		t.Fatalf("%d chunk tasks waiting in gpu before the retry; want 3", n)
	}
	// The retry.
	if err := r.Finalize(ctx, &pipeline.Job[FinalizeArgs]{Args: FinalizeArgs{BatchID: b.ID}}); err != nil {
		t.Fatal(err)
	}
	if left := chunkTasks(t, insp, pipeline.QueueGPU, b.ID); len(left) != 0 {
		t.Fatalf("chunk tasks left in gpu after the retried finalisation: %v", left)
	}
}

// TestSetupFailureRemovesQueuedChunks: a batch whose setup fails after
// some chunk tasks were enqueued ends failed, and those tasks leave the
// gpu queue at once instead of waiting a whole window for the expiry.
func TestSetupFailureRemovesQueuedChunks(t *testing.T) {
	e := newTestEnv(t, envOptions{}) // no worker: tasks stay where they are
	ctx := context.Background()
	beforeChunkEnqueue = func(c int) error {
		if c == 2 {
			return errors.New("injected enqueue failure")
		}
		return nil
	}
	t.Cleanup(func() { beforeChunkEnqueue = nil })
	input, _ := openAIInput(6, 2)
	_, _, err := e.svc.Create(ctx, strings.NewReader(input), CreateOptions{Model: "builtin:tiny", ChunkSize: 2, Device: "cuda"})
	if err == nil || !strings.Contains(err.Error(), "chunk 2: injected enqueue failure") {
		t.Fatalf("Create: %v; want the injected failure at chunk 2", err)
	}
	list, _, err := e.svc.Store.List(ctx, "", 10)
	if err != nil || len(list) != 1 || list[0].Status != StatusFailed {
		t.Fatalf("batches after the failed setup: %v, %v; want one, failed", list, err)
	}
	if left := chunkTasks(t, e.svc.Client.Inspector(), pipeline.QueueGPU, list[0].ID); len(left) != 0 {
		t.Fatalf("chunk tasks left in gpu after the failed setup: %v", left)
	}
}
