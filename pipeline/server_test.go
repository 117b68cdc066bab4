package pipeline

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestEndToEndTypedJobs(t *testing.T) {
	t.Parallel()
	b := setup(t)
	var mu sync.Mutex
	got := map[string]*Job[echoArgs]{}
	Register(b.reg, WorkFunc[echoArgs](func(ctx context.Context, job *Job[echoArgs]) error {
		mu.Lock()
		defer mu.Unlock()
		got[job.Args.Text] = job
		return nil
	}), KindOptions{Queue: b.queue, MaxRetry: 3, Timeout: time.Minute})

	ids := map[string]string{}
	for _, text := range []string{"alpha", "beta", "gamma"} {
		info, err := Enqueue(context.Background(), b.client, echoArgs{Text: text, N: len(text)})
		if err != nil {
			t.Fatal(err)
		}
		if info.Queue != b.queue || info.MaxRetry != 3 || info.Timeout != time.Minute {
			t.Errorf("enqueued with queue %q retry %d timeout %v; want the kind's options", info.Queue, info.MaxRetry, info.Timeout)
		}
		ids[text] = info.ID
	}
	stop := b.startServer(t, DefaultMiddleware(b.logger, NewMetrics(nil))...)
	waitFor(t, "three jobs processed", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(got) == 3
	})
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	for text, id := range ids {
		job := got[text]
		if job.ID != id || job.Queue != b.queue || job.MaxRetry != 3 || job.Retried != 0 {
			t.Errorf("job %q = {ID %q Queue %q MaxRetry %d Retried %d}; want ID %q, queue %q, 3, 0",
				text, job.ID, job.Queue, job.MaxRetry, job.Retried, id, b.queue)
		}
		if job.Args.N != len(text) || job.ResultWriter == nil {
			t.Errorf("job %q: args %+v, result writer %v", text, job.Args, job.ResultWriter)
		}
	}
}

func TestEnqueueRejectsInvalidArgs(t *testing.T) {
	t.Parallel()
	b := setup(t)
	Register(b.reg, WorkFunc[echoArgs](func(context.Context, *Job[echoArgs]) error { return nil }),
		KindOptions{Queue: b.queue})

	for _, tc := range []struct {
		args  echoArgs
		field string
	}{
		{echoArgs{}, "text: required"},
		{echoArgs{Text: "x", N: -1}, "n: must be >= 0"},
	} {
		_, err := Enqueue(context.Background(), b.client, tc.args)
		if err == nil || !strings.Contains(err.Error(), tc.field) || !IsPermanent(err) {
			t.Errorf("Enqueue(%+v) = %v; want a permanent error naming %q", tc.args, err, tc.field)
		}
		if _, err := NewTask(tc.args); err == nil {
			t.Errorf("NewTask(%+v) accepted invalid args", tc.args)
		}
	}
	_, err := b.client.EnqueueRaw(context.Background(), "test:echo", []byte(`{"text":"x","extra":1}`))
	if err == nil || !strings.Contains(err.Error(), "extra") {
		t.Errorf("EnqueueRaw with an unknown field = %v; want an error naming it", err)
	}
	queues, err := b.client.Inspector().Queues()
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range queues {
		if q == b.queue {
			t.Errorf("queue %q exists: something was enqueued", q)
		}
	}
}

func TestMalformedPayloadArchivedWithoutRetry(t *testing.T) {
	t.Parallel()
	b := setup(t)
	var calls atomic.Int32
	Register(b.reg, WorkFunc[echoArgs](func(context.Context, *Job[echoArgs]) error {
		calls.Add(1)
		return nil
	}), KindOptions{Queue: b.queue, MaxRetry: 5})

	raw := asynq.NewClientFromRedisClient(b.client.Redis())
	cases := map[string]string{ // payload -> what the last error must say
		`{"text":"x","bogus":1}`: `unknown field "bogus"`,
		`{"text":""}`:            "text: required",
		`{"text":5}`:             "field text",
		`not json`:               "syntax error",
		`{"text":"x"} {}`:        "data after",
	}
	ids := map[string]string{}
	for payload := range cases {
		info, err := raw.Enqueue(asynq.NewTask("test:echo", []byte(payload)), asynq.Queue(b.queue), asynq.MaxRetry(5))
		if err != nil {
			t.Fatal(err)
		}
		ids[payload] = info.ID
	}
	b.startServer(t, DefaultMiddleware(b.logger, nil)...)
	insp := b.client.Inspector()
	waitFor(t, "all malformed tasks archived", func() bool {
		qi, err := insp.GetQueueInfo(b.queue)
		return err == nil && qi.Archived == len(cases)
	})
	for payload, want := range cases {
		info := b.taskInfo(t, b.queue, ids[payload])
		if info.State != asynq.TaskStateArchived || info.Retried != 0 || !strings.Contains(info.LastErr, want) {
			t.Errorf("payload %s: state %v, retried %d, last error %q; want archived, 0, containing %q",
				payload, info.State, info.Retried, info.LastErr, want)
		}
	}
	if n := calls.Load(); n != 0 {
		t.Errorf("worker ran %d times on malformed payloads", n)
	}

	// The queue collector reports the archived tasks.
	reg := prometheus.NewRegistry()
	reg.MustRegister(QueueCollector(insp))
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, mf := range mfs {
		if mf.GetName() != "asynq_tasks_enqueued" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["queue"] == b.queue && labels["state"] == "archived" {
				found = true
				if v := m.GetGauge().GetValue(); v != float64(len(cases)) {
					t.Errorf("archived gauge = %v; want %d", v, len(cases))
				}
			}
		}
	}
	if !found {
		t.Error("no asynq_tasks_enqueued{state=archived} series for the queue")
	}
}

func TestTransientErrorsRetried(t *testing.T) {
	t.Parallel()
	b := setup(t)
	var calls atomic.Int32
	Register(b.reg, WorkFunc[echoArgs](func(_ context.Context, job *Job[echoArgs]) error {
		if n := calls.Add(1); n <= 2 {
			return errors.New("flaky dependency")
		}
		return nil
	}), KindOptions{Queue: b.queue, MaxRetry: 5})

	info, err := Enqueue(context.Background(), b.client, echoArgs{Text: "retry me"}, asynq.Retention(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	m := NewMetrics(prometheus.NewRegistry())
	b.startServer(t, DefaultMiddleware(b.logger, m)...)
	waitFor(t, "job completed after retries", func() bool {
		ti, err := b.client.Inspector().GetTaskInfo(b.queue, info.ID)
		return err == nil && ti.State == asynq.TaskStateCompleted
	})
	ti := b.taskInfo(t, b.queue, info.ID)
	if ti.Retried != 2 || calls.Load() != 3 || !strings.Contains(ti.LastErr, "flaky dependency") {
		t.Errorf("retried %d, calls %d, last error %q; want 2, 3, the transient error", ti.Retried, calls.Load(), ti.LastErr)
	}
	kind := echoArgs{}.Kind()
	for name, want := range map[string]float64{
		"processed": 3, "failed": 2, "retried": 2,
	} {
		var c *prometheus.CounterVec
		switch name {
		case "processed":
			c = m.processed
		case "failed":
			c = m.failed
		case "retried":
			c = m.retried
		}
		if got := testutil.ToFloat64(c.WithLabelValues(kind, b.queue)); got != want {
			t.Errorf("tandem_jobs_%s_total = %v; want %v", name, got, want)
		}
	}
	if n := testutil.CollectAndCount(m.duration); n != 1 {
		t.Errorf("duration histogram has %d series; want 1", n)
	}
}

func TestRetriesExhaustedArchives(t *testing.T) {
	t.Parallel()
	b := setup(t)
	Register(b.reg, WorkFunc[echoArgs](func(context.Context, *Job[echoArgs]) error {
		return errors.New("always down")
	}), KindOptions{Queue: b.queue, MaxRetry: 2})
	info, err := Enqueue(context.Background(), b.client, echoArgs{Text: "x"})
	if err != nil {
		t.Fatal(err)
	}
	b.startServer(t, DefaultMiddleware(b.logger, nil)...)
	waitFor(t, "job archived", func() bool {
		ti, err := b.client.Inspector().GetTaskInfo(b.queue, info.ID)
		return err == nil && ti.State == asynq.TaskStateArchived
	})
	if ti := b.taskInfo(t, b.queue, info.ID); ti.Retried != 2 {
		t.Errorf("retried %d; want 2", ti.Retried)
	}
}

func TestPanicRecovered(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.cfg.Concurrency = 1
	var okRuns atomic.Int32
	Register(b.reg, WorkFunc[echoArgs](func(_ context.Context, job *Job[echoArgs]) error {
		switch job.Args.Text {
		case "boom":
			var m map[string]int
			m["nil map"]++ // a runtime panic, as a real bug would be
		case "bad input":
			panic(Permanent(errors.New("unusable input")))
		}
		okRuns.Add(1)
		return nil
	}), KindOptions{Queue: b.queue, MaxRetry: 3})

	boom, err := Enqueue(context.Background(), b.client, echoArgs{Text: "boom"}, asynq.MaxRetry(0))
	if err != nil {
		t.Fatal(err)
	}
	bad, err := Enqueue(context.Background(), b.client, echoArgs{Text: "bad input"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Enqueue(context.Background(), b.client, echoArgs{Text: "fine"}); err != nil {
		t.Fatal(err)
	}
	b.startServer(t, DefaultMiddleware(b.logger, nil)...)
	waitFor(t, "panicking jobs archived and the next job run", func() bool {
		qi, err := b.client.Inspector().GetQueueInfo(b.queue)
		return err == nil && qi.Archived == 2 && okRuns.Load() == 1
	})
	if ti := b.taskInfo(t, b.queue, boom.ID); !strings.Contains(ti.LastErr, "panic in test:echo") {
		t.Errorf("last error %q; want the panic", ti.LastErr)
	}
	if ti := b.taskInfo(t, b.queue, bad.ID); ti.Retried != 0 || !strings.Contains(ti.LastErr, "unusable input") {
		t.Errorf("permanent panic: retried %d, last error %q; want archived at once", ti.Retried, ti.LastErr)
	}
	logs := b.logs.String()
	if !strings.Contains(logs, "job panicked") || !strings.Contains(logs, "goroutine ") {
		t.Errorf("log lacks the panic and its stack:\n%s", logs)
	}
}

func TestGracefulShutdownRequeuesUnfinished(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.cfg.ShutdownTimeout = 200 * time.Millisecond
	started := make(chan struct{})
	cancelled := make(chan struct{})
	var once sync.Once
	Register(b.reg, WorkFunc[echoArgs](func(ctx context.Context, _ *Job[echoArgs]) error {
		once.Do(func() { close(started) })
		<-ctx.Done()
		close(cancelled)
		return ctx.Err()
	}), KindOptions{Queue: b.queue})
	info, err := Enqueue(context.Background(), b.client, echoArgs{Text: "long"})
	if err != nil {
		t.Fatal(err)
	}
	stop := b.startServer(t, DefaultMiddleware(b.logger, nil)...)
	<-started
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	ti := b.taskInfo(t, b.queue, info.ID)
	if ti.State != asynq.TaskStatePending || ti.Retried != 0 {
		t.Errorf("after shutdown: state %v, retried %d; want pending, 0", ti.State, ti.Retried)
	}
	<-cancelled // the handler's ctx was cancelled, so it returned
}

func TestServerRunTwice(t *testing.T) {
	t.Parallel()
	b := setup(t)
	srv, err := NewServer(b.cfg, b.reg, discardLogger)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := srv.Run(ctx); err != nil {
		t.Fatalf("first Run: %v", err)
	}
	if err := srv.Run(context.Background()); err == nil {
		t.Error("second Run succeeded")
	}
}

func TestServerRejectsBadConfig(t *testing.T) {
	t.Parallel()
	cfg := DefaultConfig()
	cfg.Concurrency = 0
	if _, err := NewServer(cfg, NewRegistry(), discardLogger); err == nil || !strings.Contains(err.Error(), "Concurrency") {
		t.Errorf("NewServer = %v; want an error naming Concurrency", err)
	}
	if _, err := NewClient(cfg); err == nil {
		t.Error("NewClient accepted a bad config")
	}
}

func TestServerRunFailsFastWithoutRedis(t *testing.T) {
	t.Parallel()
	cfg := DefaultConfig()
	port, err := freeLoopbackPort() // nothing listens there now
	if err != nil {
		t.Fatal(err)
	}
	cfg.RedisURL = "redis://127.0.0.1:" + strconv.Itoa(port) + "/12"
	srv, err := NewServer(cfg, NewRegistry(), discardLogger)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "redis ping") {
		t.Errorf("Run = %v; want a redis ping error", err)
	}
}
