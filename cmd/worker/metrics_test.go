package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/tandem-ai/tandem/internal/workerproc"
	"github.com/tandem-ai/tandem/jobs"
)

// TestMetricsPassPromlint runs the worker binary and lints its /metrics as
// `promtool check metrics` does, once a ping and a generation have run, so
// that the job and engine families have series.
func TestMetricsPassPromlint(t *testing.T) {
	b := setup(t)
	line := `{"custom_id":"r1","method":"POST","url":"/v1/completions","body":{"model":"builtin:tiny","prompt":"hi","max_tokens":2}}` + "\n"
	if err := os.WriteFile(filepath.Join(b.dir, "in.jsonl"), []byte(line), 0o644); err != nil {
		t.Fatal(err)
	}
	p := b.startWorkerProc(t)
	b.enqueuePing(t, "lint-ping", jobs.PingArgs{})
	payload, _ := json.Marshal(jobs.GenerateArgs{Model: "builtin:tiny", Input: "in.jsonl", Output: "out.jsonl"})
	if _, err := b.client.Enqueue(asynq.NewTask(jobs.KindGenerate, payload), asynq.TaskID("lint-generate"), asynq.Queue("default"), asynq.Retention(time.Hour)); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"lint-ping", "lint-generate"} {
		waitFor(t, id+" to complete", slowDeadline, func() bool {
			info, err := b.insp.GetTaskInfo("default", id)
			return err == nil && info.State == asynq.TaskStateCompleted
		})
	}
	body := workerproc.CheckMetrics(t, p.Admin)
	for _, family := range []string{"go_goroutines", "tandem_jobs_processed_total", "tandem_job_duration_seconds_bucket", "tandem_engine_tokens_total", "tandem_finetune_loss"} {
		if !strings.Contains(body, "\n"+family) {
			t.Errorf("/metrics lacks %s", family)
		}
	}
}
