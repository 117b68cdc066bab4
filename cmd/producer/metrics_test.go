package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tandem-ai/tandem/internal/workerproc"
	"github.com/tandem-ai/tandem/jobs"
)

// TestMetricsPassPromlint runs `producer serve` and lints its /metrics as
// `promtool check metrics` does, with a queue in Redis for the queue
// collector to report and the loop's collector reading Redis.
func TestMetricsPassPromlint(t *testing.T) {
	e := newBatchEnv(t)
	args := filepath.Join(e.dir, "ping.json")
	if err := os.WriteFile(args, []byte(`{}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, stderr, err := runProducer(t, "enqueue", jobs.KindPing, "--args", args); err != nil {
		t.Fatalf("enqueue: %v\n%s", err, stderr)
	}
	addr := workerproc.FreeAddr(t)
	env := []string{"TANDEM_REDIS_URL=" + e.cfg.RedisURL, "TANDEM_NATS_URL=", "TANDEM_DATA_DIR=" + e.dir, "TANDEM_DATA_ROOT=" + t.TempDir()}
	workerproc.StartServing(t, workerproc.BuildCmd(t, "producer"), t.TempDir(), env, addr, "serve", "--addr", addr)
	body := workerproc.CheckMetrics(t, addr)
	for _, family := range []string{"go_goroutines", "asynq_queue_size", "asynq_tasks_enqueued", "tandem_loop_rating_points", "tandem_loop_edit_distance_total", "tandem_loop_metrics_up 1"} {
		if !strings.Contains(body, "\n"+family) {
			t.Errorf("/metrics lacks %s", family)
		}
	}
}
