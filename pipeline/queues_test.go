package pipeline

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tandem-ai/tandem/internal/redistest"
)

// restartBundle is a testBundle on a private redis-server without
// persistence, which the test restarts.
type restartBundle struct {
	*testBundle
	rs *redistest.Server
}

// setupRestart is setup on a private redis-server; its servers serve
// served (the default queues when none).
func setupRestart(t *testing.T, served ...string) *restartBundle {
	t.Helper()
	rs := redistest.StartVolatile(t)
	b := &restartBundle{testBundle: &testBundle{reg: NewRegistry(), logger: discardLogger}, rs: rs}
	b.cfg = DefaultConfig()
	b.cfg.RedisURL = "redis://" + rs.Addr
	if len(served) > 0 {
		b.cfg.Queues = map[string]int{}
		for _, q := range served {
			b.cfg.Queues[q] = 1
		}
	}
	b.cfg.PollInterval = 20 * time.Millisecond
	b.cfg.ShutdownTimeout = 5 * time.Second
	c, err := NewClient(b.cfg, WithRegistry(b.reg))
	if err != nil {
		t.Fatal(err)
	}
	b.client = c
	t.Cleanup(func() { _ = c.Close() })
	return b
}

// waitRegistered polls the inspector until it lists every one of queues;
// it allows a few registration intervals.
func waitRegistered(t *testing.T, insp *asynq.Inspector, queues ...string) {
	t.Helper()
	deadline := time.Now().Add(5 * QueueRegisterInterval)
	for {
		got, err := insp.Queues()
		if err == nil && !slices.ContainsFunc(queues, func(q string) bool { return !slices.Contains(got, q) }) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v the inspector lists queues %v (err %v); want %v among them", 5*QueueRegisterInterval, got, err, queues)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestAsynqQueuesKey pins the name of asynq's set of queue names, which
// asynq keeps unexported: an asynq upgrade that renames it fails here.
func TestAsynqQueuesKey(t *testing.T) {
	b := setupRestart(t)
	if _, err := enqueueEcho(b, "pinned"); err != nil {
		t.Fatal(err)
	}
	ok, err := b.client.Redis().SIsMember(context.Background(), asynqQueuesKey, "pinned").Result()
	if err != nil || !ok {
		t.Fatalf("SISMEMBER %s pinned = %v, %v after an enqueue to it; asynq's key has changed", asynqQueuesKey, ok, err)
	}
}

// enqueueEcho enqueues an echo job to queue through b's client.
func enqueueEcho(b *restartBundle, queue string, opts ...asynq.Option) (*asynq.TaskInfo, error) {
	return b.client.EnqueueRaw(context.Background(), echoArgs{}.Kind(), []byte(`{"text":"x"}`),
		append([]asynq.Option{asynq.Queue(queue), asynq.Retention(time.Hour)}, opts...)...)
}

// TestQueuesComeBackAfterRedisRestart restarts a Redis without persistence
// under a client and a server that stay up, and checks that the queue
// list, the queue metrics and the status of jobs enqueued since come back
// by themselves: the served queue (the server registers it, even with no
// job in it), a queue only the client enqueues to, and a job that ran.
func TestQueuesComeBackAfterRedisRestart(t *testing.T) {
	const served, idle, unserved = "restart-served", "restart-idle", "restart-unserved"
	b := setupRestart(t, served, idle)
	var mu sync.Mutex
	ran := map[string]bool{}
	Register(b.reg, WorkFunc[echoArgs](func(ctx context.Context, job *Job[echoArgs]) error {
		mu.Lock()
		defer mu.Unlock()
		ran[job.ID] = true
		return nil
	}), KindOptions{})
	b.startServer(t)
	insp := b.client.Inspector()
	// Before the restart: both queues published, so asynq's client will not
	// add them to its set again.
	var before *asynq.TaskInfo
	for _, q := range []string{served, unserved} {
		info, err := enqueueEcho(b, q)
		if err != nil {
			t.Fatal(err)
		}
		before = info
	}
	waitRegistered(t, insp, served, unserved)

	b.rs.Restart(t)
	// The keepers of the server and the client re-register their queues at
	// any moment after the restart; the job waiting since before it proves
	// the data went.
	if _, err := insp.GetTaskInfo(unserved, before.ID); err == nil {
		t.Fatalf("after the restart the job %s enqueued before it is still there; want an empty Redis", before.ID)
	}
	ranJob, err := enqueueEcho(b, served)
	if err != nil {
		t.Fatalf("enqueue after the restart: %v", err)
	}
	waiting, err := enqueueEcho(b, unserved)
	if err != nil {
		t.Fatalf("enqueue after the restart: %v", err)
	}

	waitRegistered(t, insp, served, idle, unserved)
	waitFor(t, "the job enqueued after the restart to run", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return ran[ranJob.ID]
	})
	waitFor(t, "the job that ran to show completed", func() bool {
		info, err := insp.GetTaskInfo(served, ranJob.ID)
		return err == nil && info.State == asynq.TaskStateCompleted
	})
	info, err := insp.GetTaskInfo(unserved, waiting.ID)
	if err != nil || info.State != asynq.TaskStatePending {
		t.Fatalf("job in the unserved queue: %+v, %v; want it pending", info, err)
	}
	// The queue metrics read the same set.
	preg := prometheus.NewRegistry()
	preg.MustRegister(QueueCollector(insp))
	mfs, err := preg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sizes := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "asynq_queue_size" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "queue" {
					sizes[l.GetValue()] = m.GetGauge().GetValue()
				}
			}
		}
	}
	if sizes[unserved] != 1 || len(sizes) != 3 {
		t.Errorf("asynq_queue_size by queue = %v; want %s, %s and %s, with 1 in %s", sizes, served, idle, unserved, unserved)
	}
}

// TestEnqueueRetriedAfterRedisRestartIsReportedAsDone sends an enqueue with
// a task ID again after it went through, on a Redis that restarted (so
// asynq's set of queue names has lost the queue): the same kind and
// payload is the earlier task, anything else is still a conflict.
func TestEnqueueRetriedAfterRedisRestartIsReportedAsDone(t *testing.T) {
	b := setupRestart(t)
	const queue = "restart-retried"
	if _, err := enqueueEcho(b, queue); err != nil {
		t.Fatal(err)
	}
	b.rs.Restart(t)
	ctx := context.Background()
	kind, payload := echoArgs{}.Kind(), []byte(`{"text":"once"}`)
	opts := []asynq.Option{asynq.Queue(queue), asynq.TaskID("job-1")}
	first, err := b.client.EnqueueRawIdempotent(ctx, kind, payload, opts...)
	if err != nil {
		t.Fatal(err)
	}
	again, err := b.client.EnqueueRawIdempotent(ctx, kind, payload, opts...)
	if err != nil {
		t.Fatalf("the same enqueue again: %v; want the task it enqueued", err)
	}
	if again.ID != first.ID || again.Queue != queue || again.State != asynq.TaskStatePending {
		t.Errorf("the same enqueue again gave %s in %s (%v); want %s pending in %s", again.ID, again.Queue, again.State, first.ID, queue)
	}
	if _, err := b.client.EnqueueRawIdempotent(ctx, kind, []byte(`{"text":"twice"}`), opts...); !errors.Is(err, asynq.ErrTaskIDConflict) {
		t.Errorf("another payload under the same task ID: %v; want ErrTaskIDConflict", err)
	}
	Register(b.reg, WorkFunc[otherArgs](func(context.Context, *Job[otherArgs]) error { return nil }), KindOptions{})
	if _, err := b.client.EnqueueRawIdempotent(ctx, otherArgs{}.Kind(), payload, opts...); !errors.Is(err, asynq.ErrTaskIDConflict) {
		t.Errorf("another kind under the same task ID: %v; want ErrTaskIDConflict", err)
	}
	// EnqueueRaw keeps asynq's answer: the periodic scheduler counts on it.
	if _, err := b.client.EnqueueRaw(ctx, kind, payload, opts...); !errors.Is(err, asynq.ErrTaskIDConflict) {
		t.Errorf("EnqueueRaw of the same task again: %v; want ErrTaskIDConflict", err)
	}
}

// otherArgs is a second job kind.
type otherArgs struct {
	Text string `json:"text"`
}

func (otherArgs) Kind() string    { return "test:other" }
func (otherArgs) Validate() error { return nil }
