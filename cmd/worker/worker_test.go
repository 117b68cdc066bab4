package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tandem-ai/tandem/internal/workerproc"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/tandem-ai/tandem/jobs"
)

// These tests run the real worker binary as a child process against a real
// Redis, because what they check (SIGKILL, SIGTERM) happens to processes.

const testRedisDB = 13

func testRedisAddr() string {
	if a := os.Getenv("TANDEM_TEST_REDIS_ADDR"); a != "" {
		return a
	}
	return "127.0.0.1:6379"
}

// testBundle is what each process test needs.
type testBundle struct {
	bin      string
	redisURL string
	client   *asynq.Client
	insp     *asynq.Inspector
	dir      string // the data root and the worker's working directory
	state    string // the data dir, inside dir as by default
}

func setup(t *testing.T) *testBundle {
	t.Helper()
	if testing.Short() {
		t.Skip("process tests build and run the worker binary")
	}
	dir := t.TempDir()
	bin := workerproc.Build(t)
	rc := redis.NewClient(&redis.Options{Addr: testRedisAddr(), DB: testRedisDB})
	if err := rc.FlushDB(context.Background()).Err(); err != nil {
		t.Fatalf("redis at %s: %v", testRedisAddr(), err)
	}
	_ = rc.Close()
	opt := asynq.RedisClientOpt{Addr: testRedisAddr(), DB: testRedisDB}
	b := &testBundle{bin: bin, redisURL: fmt.Sprintf("redis://%s/%d", testRedisAddr(), testRedisDB), client: asynq.NewClient(opt), insp: asynq.NewInspector(opt), dir: dir, state: filepath.Join(dir, ".tandem")}
	t.Cleanup(func() {
		b.client.Close()
		b.insp.Close()
		rc := redis.NewClient(&redis.Options{Addr: testRedisAddr(), DB: testRedisDB})
		_ = rc.FlushDB(context.Background()).Err()
		_ = rc.Close()
	})
	return b
}

// startWorker starts the binary on the bundle's Redis and waits until
// /healthz answers.
func (b *testBundle) startWorker(t *testing.T, extraEnv ...string) *exec.Cmd {
	t.Helper()
	return b.startWorkerProc(t, extraEnv...).Cmd
}

// startWorkerProc is startWorker, keeping the log for failure messages.
func (b *testBundle) startWorkerProc(t *testing.T, extraEnv ...string) *workerproc.Proc {
	t.Helper()
	env := append([]string{"TANDEM_REDIS_URL=" + b.redisURL, "TANDEM_QUEUES=default=1", "TANDEM_NATS_URL=", "TANDEM_DATA_DIR=" + b.state, "TANDEM_DATA_ROOT=" + b.dir}, extraEnv...)
	return workerproc.Start(t, b.bin, b.dir, env, "--concurrency", "2")
}

func (b *testBundle) enqueuePing(t *testing.T, id string, args jobs.PingArgs) {
	t.Helper()
	payload, _ := json.Marshal(args)
	if _, err := b.client.Enqueue(asynq.NewTask(jobs.KindPing, payload), asynq.TaskID(id), asynq.Queue("default"), asynq.MaxRetry(3), asynq.Retention(time.Hour)); err != nil {
		t.Fatal(err)
	}
}

// slowDeadline bounds a wait for something a healthy run reaches in
// seconds; it is long so that a loaded machine does not fail the test, and
// only a hang does.
const slowDeadline = 3 * time.Minute

func waitFor(t *testing.T, what string, limit time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("timed out after %v waiting for %s", limit, what)
}

// waitExit waits up to limit for cmd to exit and returns its exit error;
// past limit it kills the process and says it hung.
func waitExit(cmd *exec.Cmd, limit time.Duration) error {
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-time.After(limit):
		_ = cmd.Process.Kill()
		<-done
		return fmt.Errorf("still running %v after the signal (killed)", limit)
	}
}

func runsRecorded(path string) []string {
	b, _ := os.ReadFile(path)
	return strings.Fields(string(b))
}

func TestSIGKILLedWorkerTaskIsRecovered(t *testing.T) {
	b := setup(t)
	record := filepath.Join(b.dir, "runs.txt")
	w1 := b.startWorker(t)
	b.enqueuePing(t, "crash-1", jobs.PingArgs{SleepMS: 4000, Record: record})
	waitFor(t, "the first run to start", 30*time.Second, func() bool { return len(runsRecorded(record)) == 1 })

	if err := w1.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = w1.Wait()
	killedAt := time.Now()
	info, err := b.insp.GetTaskInfo("default", "crash-1")
	if err != nil {
		t.Fatal(err)
	}
	if info.State != asynq.TaskStateActive {
		t.Fatalf("after SIGKILL the task is %v; want it still active (its lease not yet expired)", info.State)
	}

	// asynq's recoverer re-queues a task once its 30s lease has expired and
	// a further 30s of clock-skew margin has passed; a worker runs it at
	// start, so a replacement started after that picks the task up at once.
	time.Sleep(time.Until(killedAt.Add(62 * time.Second)))
	b.startWorker(t)
	waitFor(t, "the task to complete after recovery", 60*time.Second, func() bool {
		info, err := b.insp.GetTaskInfo("default", "crash-1")
		return err == nil && info.State == asynq.TaskStateCompleted
	})
	runs := runsRecorded(record)
	if len(runs) != 2 || runs[0] != "0" || runs[1] != "1" {
		t.Fatalf("runs recorded = %v; want the killed run then one recovered retry [0 1]", runs)
	}
}

// SIGTERM with a job in flight: the worker stops fetching, gives the job
// its shutdown timeout, puts it back to pending and exits 0.
//
// Nothing here bounds how fast that happens. A loaded machine (this ran
// beside full builds) stretches every step, so each wait is for an
// observable state with a deadline of minutes, far past any healthy run,
// that only turns a hang into a failure. The ping sleeps the longest a ping
// may (limits.PingSleep), so the job cannot finish by itself within those
// deadlines and be mistaken for one that shutdown handled.
func TestSIGTERMRequeuesInFlightWork(t *testing.T) {
	b := setup(t)
	record := filepath.Join(b.dir, "runs.txt")
	w := b.startWorkerProc(t, "TANDEM_SHUTDOWN_TIMEOUT=1s")
	b.enqueuePing(t, "long-1", jobs.PingArgs{SleepMS: int(jobs.MaxPingSleep.Milliseconds()), Record: record})
	waitFor(t, "the run to start", slowDeadline, func() bool { return len(runsRecorded(record)) == 1 })

	if err := w.Cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	termAt := time.Now()
	// The task's state is final once the process is gone: nothing else
	// runs it, so it is checked once, after the exit.
	if err := waitExit(w.Cmd, slowDeadline); err != nil {
		t.Fatalf("worker after SIGTERM: %v; log:\n%s", err, w.LogText())
	}
	t.Logf("worker exited %v after SIGTERM", time.Since(termAt).Round(time.Millisecond))
	info, err := b.insp.GetTaskInfo("default", "long-1")
	if err != nil {
		t.Fatal(err)
	}
	if info.State != asynq.TaskStatePending {
		t.Fatalf("after graceful shutdown the task is %v; want pending so another worker takes it; log:\n%s", info.State, w.LogText())
	}
	if runs := runsRecorded(record); len(runs) != 1 {
		t.Fatalf("runs recorded = %v; want the one interrupted run", runs)
	}
}

func TestBadPayloadIsArchivedNotRetried(t *testing.T) {
	b := setup(t)
	b.startWorker(t)
	if _, err := b.client.Enqueue(asynq.NewTask(jobs.KindPing, []byte(`{"sleep_ms":"soon"}`)), asynq.TaskID("bad-1"), asynq.Queue("default"), asynq.MaxRetry(5)); err != nil {
		t.Fatal(err)
	}
	var info *asynq.TaskInfo
	waitFor(t, "the bad task to be archived", 30*time.Second, func() bool {
		var err error
		info, err = b.insp.GetTaskInfo("default", "bad-1")
		return err == nil && info.State == asynq.TaskStateArchived
	})
	if info.Retried != 0 {
		t.Fatalf("bad payload was retried %d times; want 0", info.Retried)
	}
	if !strings.Contains(info.LastErr, "sleep_ms") {
		t.Fatalf("archived reason %q does not name the field sleep_ms", info.LastErr)
	}
}

// A job whose path leaves the data root is archived at once, never retried,
// with a reason that names the field, the path and the root; one inside
// runs. This is the asynq handler path: Redis, the worker binary, its
// middleware.
func TestEscapingPathIsArchivedNotRetried(t *testing.T) {
	b := setup(t)
	outside := t.TempDir()
	if err := os.Symlink(outside, filepath.Join(b.dir, "out-link")); err != nil {
		t.Fatal(err)
	}
	b.startWorker(t)
	enqueue := func(id, kind string, args any) {
		t.Helper()
		payload, _ := json.Marshal(args)
		if _, err := b.client.Enqueue(asynq.NewTask(kind, payload), asynq.TaskID(id), asynq.Queue("default"), asynq.MaxRetry(5), asynq.Retention(time.Hour)); err != nil {
			t.Fatal(err)
		}
	}
	absOut := filepath.Join(outside, "stolen.jsonl")
	enqueue("gen-abs", jobs.KindGenerate, jobs.GenerateArgs{Model: "builtin:tiny", Input: "in.jsonl", Output: absOut})
	enqueue("ping-link", jobs.KindPing, jobs.PingArgs{Record: "out-link/runs.txt"})
	enqueue("ping-up", jobs.KindPing, jobs.PingArgs{Record: "../runs.txt"})
	enqueue("ping-ok", jobs.KindPing, jobs.PingArgs{Record: "runs/ok.txt"})
	// The data dir lies inside the data root (the default layout): another
	// batch's output there is out of every job's reach.
	theirs := filepath.Join(b.state, "artifacts", "batches", "b1", "output.jsonl")
	if err := os.MkdirAll(filepath.Dir(theirs), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(theirs, []byte("theirs\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(b.dir, "in.jsonl"), []byte(`{"custom_id":"a","body":{"prompt":"x","max_tokens":1}}`+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	enqueue("gen-state", jobs.KindGenerate, jobs.GenerateArgs{Model: "builtin:tiny", Input: "in.jsonl", Output: ".tandem/artifacts/batches/b1/output.jsonl"})
	enqueue("ping-state", jobs.KindPing, jobs.PingArgs{Record: theirs})
	for _, c := range []struct{ id, want string }{
		{"gen-abs", `field "output": path "` + absOut + `" escapes the data root`},
		{"ping-link", `field "record": path "out-link/runs.txt" escapes the data root`},
		{"ping-up", `field "record": path "../runs.txt" escapes the data root`},
		{"gen-state", `field "output": path ".tandem/artifacts/batches/b1/output.jsonl" lies in the artifact store (TANDEM_DATA_DIR/artifacts), which no job may read or write`},
		{"ping-state", `field "record": path "` + theirs + `" lies in the artifact store (TANDEM_DATA_DIR/artifacts), which no job may read or write`},
	} {
		var info *asynq.TaskInfo
		waitFor(t, c.id+" to be archived", 30*time.Second, func() bool {
			var err error
			info, err = b.insp.GetTaskInfo("default", c.id)
			return err == nil && info.State == asynq.TaskStateArchived
		})
		if info.Retried != 0 || !strings.Contains(info.LastErr, c.want) {
			t.Errorf("%s: archived after %d retries with %q; want no retry and %q", c.id, info.Retried, info.LastErr, c.want)
		}
	}
	waitFor(t, "the ping inside the root to complete", 30*time.Second, func() bool {
		info, err := b.insp.GetTaskInfo("default", "ping-ok")
		return err == nil && info.State == asynq.TaskStateCompleted
	})
	if runs := runsRecorded(filepath.Join(b.dir, "runs", "ok.txt")); len(runs) != 1 {
		t.Fatalf("runs/ok.txt records %v; want one run", runs)
	}
	if entries, _ := os.ReadDir(outside); len(entries) != 0 {
		t.Fatalf("jobs wrote %d entries outside the data root", len(entries))
	}
	if data, _ := os.ReadFile(theirs); string(data) != "theirs\n" {
		t.Fatalf("the other batch's output now holds %q", data)
	}
}

// A worker refuses to start on a data root that lies inside its data dir
// (every job path would reach the service's state), naming both settings;
// `worker exec` too.
func TestWorkerRefusesDataRootInsideDataDir(t *testing.T) {
	state := t.TempDir()
	files := filepath.Join(state, "files")
	if err := os.MkdirAll(files, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("TANDEM_REDIS_URL", "redis://"+testRedisAddr()+"/13")
	t.Setenv("TANDEM_DATA_DIR", state)
	for _, root := range []string{state, files} {
		t.Setenv("TANDEM_DATA_ROOT", root)
		for _, args := range [][]string{{"--admin-addr", "127.0.0.1:0"}, {"exec", "ping"}} {
			err := run(context.Background(), args, io.Discard, io.Discard)
			if err == nil || !strings.Contains(err.Error(), "lies inside the data dir (TANDEM_DATA_DIR)") || !strings.Contains(err.Error(), "TANDEM_DATA_ROOT") {
				t.Fatalf("worker %v with the data root %s in the data dir %s: %v; want a refusal naming both settings", args, root, state, err)
			}
		}
	}
}

// A worker refuses to start on a data root that does not exist, and names
// the setting.
func TestWorkerRefusesMissingDataRoot(t *testing.T) {
	var stderr strings.Builder
	t.Setenv("TANDEM_DATA_ROOT", filepath.Join(t.TempDir(), "missing"))
	t.Setenv("TANDEM_REDIS_URL", "redis://"+testRedisAddr()+"/13")
	err := run(context.Background(), []string{"--admin-addr", "127.0.0.1:0"}, io.Discard, &stderr)
	if err == nil || !strings.Contains(err.Error(), "data root") || !strings.Contains(err.Error(), "TANDEM_DATA_ROOT") {
		t.Fatalf("run = %v; want a refusal naming the data root setting", err)
	}
	err = run(context.Background(), []string{"exec", "ping"}, io.Discard, &stderr)
	if err == nil || !strings.Contains(err.Error(), "data root") {
		t.Fatalf("exec = %v; want a refusal naming the data root", err)
	}
}
