package batch

import (
	"context"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/tandem-ai/tandem/internal/workerproc"
	"github.com/tandem-ai/tandem/pipeline"
)

// A batch survives its workers being SIGKILLed mid-chunk: it completes,
// and every custom_id is in output.jsonl or errors.jsonl exactly once.
// asynq re-queues a killed worker's task once its 30 s lease and a further
// 30 s margin have passed; a worker started after that recovers it at once.
func TestBatchSurvivesSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the worker and waits out asynq's lease recovery (about 80 s)")
	}
	bin := workerproc.Build(t)
	e := newTestEnv(t, envOptions{nats: true, artifacts: "local"}) // the worker processes' store
	env := []string{
		"TANDEM_REDIS_URL=" + e.cfg.RedisURL, "TANDEM_DATA_DIR=" + e.cfg.DataDir, "TANDEM_NATS_URL=" + e.nats.URL(),
		"TANDEM_QUEUES=default=1", "TANDEM_CONCURRENCY=2", "TANDEM_ARTIFACT_STORE=local", "TANDEM_LOG_LEVEL=warn",
		"TANDEM_WEBHOOK_URLS=", "TANDEM_POLL_INTERVAL=100ms",
	}
	ctx := context.Background()
	insp := e.svc.Client.Inspector()
	input, ids := openAIInput(300, 48)
	b, _, err := e.svc.Create(ctx, strings.NewReader(input), CreateOptions{Model: "builtin:tiny", ChunkSize: 6})
	if err != nil {
		t.Fatal(err)
	}

	done := func() int {
		got, err := e.svc.Get(ctx, b.ID)
		if err != nil {
			t.Fatal(err)
		}
		if c := got.RequestCounts; c.Done() > c.Total {
			t.Fatalf("counts overshoot: %+v", c) // a chunk counted twice
		}
		return got.ChunksDone
	}
	orphaned := 0
	var lastKill time.Time
	for kill, target := range []int{5, 15} {
		w := workerproc.Start(t, bin, logDir(t, e.cfg.DataDir), env)
		waitUntil(t, fmt.Sprintf("%d chunks before kill %d", target, kill+1), func() bool { return done() >= target })
		waitUntil(t, "a chunk in progress", func() bool {
			active, err := insp.ListActiveTasks(pipeline.QueueDefault)
			return err == nil && len(active) > 0
		})
		if err := w.Cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		_ = w.Cmd.Wait()
		lastKill = time.Now()
		active, err := insp.ListActiveTasks(pipeline.QueueDefault)
		if err != nil {
			t.Fatal(err)
		}
		orphaned += len(active)
		t.Logf("kill %d: %d chunks counted, %d chunk tasks orphaned mid-run", kill+1, done(), len(active))
	}
	if orphaned == 0 {
		t.Fatal("no kill landed while a chunk ran; the test did not exercise recovery")
	}
	if done() >= b.Chunks {
		t.Fatal("the batch finished before the workers were killed; give it more work")
	}

	// Past lease and margin, a fresh worker's recoverer re-queues the
	// orphans at start and finishes the batch.
	time.Sleep(time.Until(lastKill.Add(62 * time.Second)))
	workerproc.Start(t, bin, logDir(t, e.cfg.DataDir), env)
	t.Cleanup(func() {
		if t.Failed() {
			dumpTasks(t, insp)
		}
	})
	end := e.waitTerminal(t, b.ID, 2*time.Minute)
	if end.Status != StatusCompleted {
		t.Fatalf("ended %+v", end)
	}
	out, errs := e.results(t, b.ID)
	checkExactlyOnce(t, ids, out, errs)
	if end.RequestCounts != (Counts{Total: 300, Completed: len(out), Failed: len(errs)}) || len(errs) != 0 {
		t.Fatalf("counts %+v; output %d lines, errors %d", end.RequestCounts, len(out), len(errs))
	}
	if _, err := insp.GetTaskInfo(pipeline.QueueDefault, b.ID+":0"); err != nil {
		t.Fatalf("chunk task %s:0: %v", b.ID, err)
	}
	// Re-submitting a chunk is a conflict, not a second run.
	if _, err := e.svc.Client.EnqueueRaw(ctx, "generate:chunk", []byte(fmt.Sprintf(`{"batch_id":%q,"chunk":0}`, b.ID)), asynq.TaskID(b.ID+":0")); err == nil {
		t.Fatal("re-enqueuing a finished chunk under its task id succeeded")
	}
}

// logDir is where worker logs go: $TANDEM_TEST_LOG_DIR when set (kept for
// a look after a failure), else dir.
func logDir(t *testing.T, dir string) string {
	if d := os.Getenv("TANDEM_TEST_LOG_DIR"); d != "" {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		return d
	}
	return dir
}

// dumpTasks logs the queue's tasks, to see where a stuck batch is stuck.
func dumpTasks(t *testing.T, insp *asynq.Inspector) {
	lists := map[string]func(string, ...asynq.ListOption) ([]*asynq.TaskInfo, error){
		"active": insp.ListActiveTasks, "pending": insp.ListPendingTasks, "retry": insp.ListRetryTasks,
		"archived": insp.ListArchivedTasks, "scheduled": insp.ListScheduledTasks,
	}
	for name, list := range lists {
		tasks, err := list(pipeline.QueueDefault)
		if err != nil {
			t.Logf("%s: %v", name, err)
			continue
		}
		for _, ti := range tasks {
			t.Logf("%s: %s %s retried=%d last_err=%q", name, ti.ID, ti.Type, ti.Retried, ti.LastErr)
		}
	}
}
