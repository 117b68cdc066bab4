package batch

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/tandem-ai/tandem/artifact"
	"github.com/tandem-ai/tandem/files"
	"github.com/tandem-ai/tandem/generation"
	"github.com/tandem-ai/tandem/jobs"
	"github.com/tandem-ai/tandem/pipeline"
)

// Tests use Redis database 9 and flush only it.
const testRedisDB = 9

func testRedisAddr() string {
	if a := os.Getenv("TANDEM_TEST_REDIS_ADDR"); a != "" {
		return a
	}
	return "127.0.0.1:6379"
}

func flushTestDB(t testing.TB) {
	t.Helper()
	rc := redis.NewClient(&redis.Options{Addr: testRedisAddr(), DB: testRedisDB})
	defer rc.Close()
	if err := rc.FlushDB(context.Background()).Err(); err != nil {
		t.Fatalf("redis at %s: %v", testRedisAddr(), err)
	}
}

// testEnv is a real Redis, optionally an embedded nats-server, a Service
// as the producer has it and in-process workers.
type testEnv struct {
	cfg     pipeline.Config
	svc     *Service
	bus     *pipeline.Bus
	nats    *pipeline.EmbeddedNATS
	promReg *prometheus.Registry
	deps    *jobs.Deps
	run     *Runner // the last worker's
}

type envOptions struct {
	nats      bool
	artifacts string // artifact store spec
	workers   int    // in-process worker servers (0: none; start later)
	webhooks  *WebhookConfig
	poll      time.Duration
	queues    map[string]int // a started worker's queues (nil: the env's, default only)
}

func newTestEnv(t testing.TB, o envOptions) *testEnv {
	t.Helper()
	flushTestDB(t)
	t.Cleanup(func() { flushTestDB(t) })
	e := &testEnv{promReg: prometheus.NewRegistry()}
	cfg := pipeline.DefaultConfig()
	cfg.RedisURL = fmt.Sprintf("redis://%s/%d", testRedisAddr(), testRedisDB)
	cfg.DataDir = t.TempDir()
	cfg.Queues = map[string]int{pipeline.QueueDefault: 1}
	cfg.Concurrency = 2
	cfg.PollInterval = 20 * time.Millisecond
	cfg.ShutdownTimeout = 5 * time.Second
	cfg.RetryBaseDelay = 50 * time.Millisecond
	cfg.RetryMaxDelay = 200 * time.Millisecond
	e.cfg = cfg
	ctx := context.Background()
	if o.artifacts != "" {
		t.Setenv(artifact.EnvStore, o.artifacts) // workers read it, as in production
	}
	if o.nats {
		srv, err := pipeline.StartEmbeddedNATS(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(srv.Shutdown)
		e.nats = srv
		bus, err := pipeline.ConnectBus(ctx, srv.URL())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(bus.Close)
		if err := bus.EnsureStreams(ctx); err != nil {
			t.Fatal(err)
		}
		e.bus = bus
	}
	svc, err := Open(ctx, cfg, OpenOptions{ArtifactStore: o.artifacts, Bus: e.bus, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	svc.CancelGrace = 300 * time.Millisecond
	t.Cleanup(func() { svc.Close() })
	e.svc = svc
	for i := 0; i < o.workers; i++ {
		e.startWorker(t, o)
	}
	return e
}

func quietLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// startWorker runs an in-process worker server until the test ends.
func (e *testEnv) startWorker(t testing.TB, o envOptions) *jobs.Deps {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	logger := quietLogger()
	deps := jobs.NewDeps(logger)
	deps.Bus = e.bus
	reg := pipeline.NewRegistry()
	jobs.RegisterAll(reg, deps)
	cfg := e.cfg
	if o.queues != nil {
		cfg.Queues = o.queues
	}
	r, detach, err := Attach(ctx, reg, deps, cfg, e.promReg)
	if err != nil {
		t.Fatal(err)
	}
	r.PollInterval = 50 * time.Millisecond
	if o.poll > 0 {
		r.PollInterval = o.poll
	}
	if o.webhooks != nil {
		r.Webhooks = o.webhooks
	}
	srv, err := pipeline.NewServer(cfg, reg, logger)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("worker: %v", err)
		}
		detach()
	})
	e.deps, e.run = deps, r
	return deps
}

// waitTerminal waits for the batch to end and returns it.
func (e *testEnv) waitTerminal(t testing.TB, id string, limit time.Duration) *Batch {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	var last *Batch
	err := e.svc.Watch(ctx, id, 20*time.Millisecond, func(b *Batch) bool { last = b; return true })
	if err != nil {
		t.Fatalf("batch %s did not end within %v (last seen %+v): %v", id, limit, last, err)
	}
	return last
}

// results reads a finished batch's two files.
func (e *testEnv) results(t testing.TB, id string) (out, errs []generation.ResponseLine) {
	t.Helper()
	return readResults(t, e.svc, id)
}

// readResults reads a finished batch's two files through svc.
func readResults(t testing.TB, svc *Service, id string) (out, errs []generation.ResponseLine) {
	t.Helper()
	read := func(which string) []generation.ResponseLine {
		rc, _, err := svc.OpenResult(context.Background(), id, which)
		if err != nil {
			t.Fatal(err)
		}
		defer rc.Close()
		var lines []generation.ResponseLine
		b, err := io.ReadAll(rc)
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			if l == "" {
				continue
			}
			var rl generation.ResponseLine
			if err := jsonUnmarshalStrict([]byte(l), &rl); err != nil {
				t.Fatalf("%s line %q: %v", which, l, err)
			}
			lines = append(lines, rl)
		}
		return lines
	}
	return read(FileOutput), read(FileErrors)
}

// sealAndMerge runs a finalisation of batch id up to its merge, as one
// that then dies would have: the batch sealed, output.jsonl and
// errors.jsonl written, nothing registered or finished.
func sealAndMerge(t testing.TB, r *Runner, id string) (Status, Counts) {
	t.Helper()
	ctx := context.Background()
	seal, err := r.Store.Seal(ctx, id, false)
	if err != nil || !seal.Sealed {
		t.Fatalf("seal: %+v, %v", seal, err)
	}
	sealed, err := r.Store.Get(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	counts, missing, err := r.merge(ctx, sealed, seal.Final)
	if err != nil || len(missing) != 0 {
		t.Fatal(missing, err)
	}
	return seal.Final, counts
}

// checkResultFiles asserts that b, ended, names its merged files by their
// Files API ids and that finalisation registered both, with the merged
// files' bytes, before anything read the batch through the API.
func checkResultFiles(t testing.TB, svc *Service, b *Batch) {
	t.Helper()
	ctx := context.Background()
	read := func(rc io.ReadCloser, err error) []byte {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		defer rc.Close()
		data, err := io.ReadAll(rc)
		if err != nil {
			t.Fatal(err)
		}
		return data
	}
	for _, f := range []struct{ which, id, key string }{{FileOutput, b.OutputFileID, b.OutputKey}, {FileErrors, b.ErrorFileID, b.ErrorKey}} {
		if want := files.ResultID(b.ID, f.which); f.id != want {
			t.Fatalf("batch %s: %s file id %q; want %q", b.ID, f.which, f.id, want)
		}
		rc, fo, err := svc.Files.Open(ctx, f.id)
		if err != nil {
			t.Fatalf("batch %s ended %s: its %s file is not a file: %v", b.ID, b.Status, f.which, err)
		}
		got, want := read(rc, nil), read(svc.Artifacts.Get(ctx, f.key))
		if fo.Purpose != files.PurposeBatchOutput || fo.Bytes != int64(len(want)) || string(got) != string(want) {
			t.Fatalf("%s file %+v holds %d bytes; want purpose %s and the merged file's %d bytes", f.which, fo, len(got), files.PurposeBatchOutput, len(want))
		}
	}
}

// checkExactlyOnce asserts every custom_id of ids appears once across the
// two files, and nothing else does.
func checkExactlyOnce(t testing.TB, ids []string, out, errs []generation.ResponseLine) {
	t.Helper()
	seen := map[string]int{}
	for _, l := range append(append([]generation.ResponseLine(nil), out...), errs...) {
		seen[l.CustomID]++
	}
	var problems []string
	for _, id := range ids {
		if seen[id] != 1 {
			problems = append(problems, fmt.Sprintf("%s x%d", id, seen[id]))
		}
		delete(seen, id)
	}
	for id, n := range seen {
		problems = append(problems, fmt.Sprintf("unexpected %s x%d", id, n))
	}
	sort.Strings(problems)
	if len(problems) > 0 {
		t.Fatalf("custom_ids not exactly once: %v", problems)
	}
}

// openAIInput writes n request lines; ids are r0000..
func openAIInput(n, maxTokens int) (string, []string) {
	var b strings.Builder
	ids := make([]string, n)
	for i := range n {
		ids[i] = fmt.Sprintf("r%04d", i)
		fmt.Fprintf(&b, `{"custom_id":%q,"method":"POST","url":"/v1/completions","body":{"prompt":"Write about topic %d:","max_tokens":%d,"temperature":0.7,"seed":%d}}`+"\n", ids[i], i, maxTokens, i)
	}
	return b.String(), ids
}

// checkNothingStored asserts that nothing is in Redis (no record, no task)
// and nothing in the artifact store, after what.
func (e *testEnv) checkNothingStored(t testing.TB, what string) {
	t.Helper()
	ctx := context.Background()
	rc := redis.NewClient(&redis.Options{Addr: testRedisAddr(), DB: testRedisDB})
	defer rc.Close()
	if keys, _ := rc.Keys(ctx, "*").Result(); len(keys) != 0 {
		t.Fatalf("Redis keys after %s: %v", what, keys)
	}
	if keys, _ := e.svc.Artifacts.List(ctx, ""); len(keys) != 0 {
		t.Fatalf("artifacts after %s: %v", what, keys)
	}
}
