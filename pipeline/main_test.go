package pipeline

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"
)

// Tests run against the real Redis on 127.0.0.1:6379, database 12, which
// they own: it is flushed before and after the run and nothing else is
// touched. Each test uses queues named after itself, so tests run in
// parallel without seeing each other's tasks.
const testRedisURL = "redis://127.0.0.1:6379/12"

func TestMain(m *testing.M) {
	if err := flushTestDB(); err != nil {
		fmt.Fprintf(os.Stderr, "pipeline tests need Redis at %s: %v\n", testRedisURL, err)
		os.Exit(1)
	}
	// Servers and clients are closed by every test, so nothing of asynq or
	// go-redis may outlive them: no goroutine is ignored.
	goleak.VerifyTestMain(flushAfter{m})
}

// flushAfter runs the tests, then empties the test database.
type flushAfter struct{ m *testing.M }

func (f flushAfter) Run() int {
	code := f.m.Run()
	if err := flushTestDB(); err != nil {
		fmt.Fprintf(os.Stderr, "flush test db: %v\n", err)
	}
	return code
}

func flushTestDB() error {
	cfg := DefaultConfig()
	cfg.RedisURL = testRedisURL
	rdb, err := cfg.RedisClient()
	if err != nil {
		return err
	}
	defer rdb.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return rdb.FlushDB(ctx).Err()
}

// echoArgs is the test job kind: a text to record and a count.
type echoArgs struct {
	Text string `json:"text"`
	N    int    `json:"n,omitempty"`
}

func (echoArgs) Kind() string { return "test:echo" }

func (a echoArgs) Validate() error {
	if a.Text == "" {
		return InvalidField("text", "required")
	}
	if a.N < 0 {
		return InvalidField("n", "must be >= 0, got %d", a.N)
	}
	return nil
}

// testQueue names a queue after the test, so parallel tests never share one.
func testQueue(t testing.TB, suffix string) string {
	r := strings.NewReplacer("/", "-", " ", "_", "#", "_")
	return "q-" + r.Replace(t.Name()) + suffix
}

// syncBuffer is a goroutine-safe log sink; asynq logs from its own goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// testBundle is what most tests need: a config on the test DB with fast
// polling and retries, a registry, a client, and a captured log.
type testBundle struct {
	cfg    Config
	reg    *Registry
	client *Client
	queue  string
	logs   *syncBuffer
	logger *slog.Logger
}

func setup(t *testing.T) *testBundle {
	t.Helper()
	b := &testBundle{reg: NewRegistry(), queue: testQueue(t, ""), logs: &syncBuffer{}}
	b.cfg = DefaultConfig()
	b.cfg.RedisURL = testRedisURL
	b.cfg.Queues = map[string]int{b.queue: 1}
	b.cfg.Concurrency = 4
	b.cfg.PollInterval = 20 * time.Millisecond
	b.cfg.RetryBaseDelay = 10 * time.Millisecond
	b.cfg.RetryMaxDelay = 40 * time.Millisecond
	b.cfg.ShutdownTimeout = 5 * time.Second
	b.logger = slog.New(slog.NewTextHandler(b.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	c, err := NewClient(b.cfg, WithRegistry(b.reg))
	if err != nil {
		t.Fatal(err)
	}
	b.client = c
	// Start from an empty queue (a -count=N rerun sees the last run's tasks)
	// and leave one behind.
	_ = c.Inspector().DeleteQueue(b.queue, true)
	t.Cleanup(func() {
		_ = c.Inspector().DeleteQueue(b.queue, true)
		if err := c.Close(); err != nil {
			t.Errorf("close client: %v", err)
		}
		if t.Failed() {
			t.Logf("log:\n%s", b.logs.String())
		}
	})
	return b
}

// startServer runs a Server for b until the returned stop is called (or
// the test ends) and returns what Run returned.
func (b *testBundle) startServer(t *testing.T, mw ...asynq.MiddlewareFunc) (stop func() error) {
	t.Helper()
	srv, err := NewServer(b.cfg, b.reg, b.logger, mw...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	var once sync.Once
	var runErr error
	stop = func() error {
		once.Do(func() {
			cancel()
			runErr = <-done
		})
		return runErr
	}
	t.Cleanup(func() { _ = stop() })
	return stop
}

// waitFor polls cond until it holds or the (generous) limit passes. It
// bounds a wait; it asserts nothing about speed.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// taskInfo fetches a task's state, failing the test on error.
func (b *testBundle) taskInfo(t *testing.T, queue, id string) *asynq.TaskInfo {
	t.Helper()
	info, err := b.client.Inspector().GetTaskInfo(queue, id)
	if err != nil {
		t.Fatalf("task %s/%s: %v", queue, id, err)
	}
	return info
}

// rawRedis returns a plain client on the test DB.
func rawRedis(t *testing.T) redis.UniversalClient {
	t.Helper()
	cfg := DefaultConfig()
	cfg.RedisURL = testRedisURL
	rdb, err := cfg.RedisClient()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rdb.Close() })
	return rdb
}

var discardLogger = slog.New(slog.NewTextHandler(io.Discard, nil))
