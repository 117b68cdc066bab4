package batch

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/tandem-ai/tandem/pipeline"
)

// buildWorker builds cmd/worker once per test binary run.
func buildWorker(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "worker")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/tandem-ai/tandem/cmd/worker").CombinedOutput()
	if err != nil {
		t.Fatalf("go build ./cmd/worker: %v\n%s", err, out)
	}
	return bin
}

// workerProc is a worker binary running as a child process.
type workerProc struct {
	cmd *exec.Cmd
	log string
}

func startWorkerProc(t *testing.T, bin string, env []string, dir string) *workerProc {
	t.Helper()
	admin := freeAddr(t)
	cmd := exec.Command(bin, "--admin-addr", admin)
	cmd.Env = append(os.Environ(), env...)
	logPath := filepath.Join(dir, fmt.Sprintf("worker-%d.log", time.Now().UnixNano()))
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
		logf.Close()
	})
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if resp, err := http.Get("http://" + admin + "/healthz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return &workerProc{cmd: cmd, log: logPath}
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("worker did not become healthy; log in %s", logPath)
	return nil
}

func (w *workerProc) kill(t *testing.T) {
	t.Helper()
	if err := w.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = w.cmd.Wait()
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// A batch survives its workers being SIGKILLed mid-chunk: it completes,
// and every custom_id is in output.jsonl or errors.jsonl exactly once.
// asynq re-queues a killed worker's task once its 30 s lease and a further
// 30 s margin have passed; a worker started after that recovers it at once.
func TestBatchSurvivesSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the worker and waits out asynq's lease recovery (about 80 s)")
	}
	bin := buildWorker(t)
	e := newTestEnv(t, envOptions{nats: true})
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
		w := startWorkerProc(t, bin, env, logDir(t, e.cfg.DataDir))
		waitUntil(t, fmt.Sprintf("%d chunks before kill %d", target, kill+1), func() bool { return done() >= target })
		waitUntil(t, "a chunk in progress", func() bool {
			active, err := insp.ListActiveTasks(pipeline.QueueDefault)
			return err == nil && len(active) > 0
		})
		w.kill(t)
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
	startWorkerProc(t, bin, env, logDir(t, e.cfg.DataDir))
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
