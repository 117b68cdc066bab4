package main

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/tandem-ai/tandem/gpu"
	"github.com/tandem-ai/tandem/jobs"
	"github.com/tandem-ai/tandem/pipeline"
)

// TestDeviceFallback: --device cuda:0 in a binary without the cuda tag,
// or on a machine without a driver (this one), says why and leaves the
// worker on the CPU without the gpu queue. Where a GPU is present the test
// has nothing to check.
func TestDeviceFallback(t *testing.T) {
	var logs bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&logs, nil))
	for _, c := range []struct {
		name     string
		queues   map[string]int
		explicit bool
		want     string
	}{
		{"cuda:0", pipeline.DefaultConfig().Queues, false, "interactive=6,default=3,finetune=1"},
		{"cuda", map[string]int{"gpu": 4, "interactive": 2}, true, "interactive=2"},
		{"cuda:1", map[string]int{"gpu": 4}, true, "interactive=6,default=3,finetune=1"},
		{"cpu", map[string]int{"gpu": 1, "default": 2}, true, "default=2"},
	} {
		logs.Reset()
		s, err := openDevice(c.name, gpu.FP32, c.queues, c.explicit, logger)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if s.dev != nil {
			s.dev.Close()
			t.Skip("a GPU is present")
		}
		if got := pipeline.FormatQueues(s.queues); got != c.want {
			t.Errorf("%s with %v: queues %s, want %s", c.name, c.queues, got, c.want)
		}
		if c.name != "cpu" {
			why := "no usable CUDA driver"
			if !gpu.Built {
				why = "built without CUDA support"
			}
			if !strings.Contains(logs.String(), why) || !strings.Contains(logs.String(), "models run on the CPU") {
				t.Errorf("%s: the log does not say why the GPU is not used:\n%s", c.name, logs.String())
			}
		}
	}
	if _, err := openDevice("gpu0", gpu.FP32, pipeline.DefaultConfig().Queues, false, logger); err == nil {
		t.Error("a malformed device name was accepted")
	}
}

// TestGPUWorkerFallsBackToCPUQueues runs the worker binary with
// TANDEM_DEVICE=cuda:0 and queues gpu and default on this GPU-less
// machine: it starts, runs the default queue's job, and leaves the gpu
// queue's job for a GPU worker.
func TestGPUWorkerFallsBackToCPUQueues(t *testing.T) {
	b := setup(t)
	b.startWorker(t, "TANDEM_DEVICE=cuda:0", "TANDEM_QUEUES=gpu=4,default=1")
	for _, q := range []string{"gpu", "default"} {
		if _, err := b.client.Enqueue(asynq.NewTask(jobs.KindPing, []byte(`{}`)), asynq.TaskID("on-"+q), asynq.Queue(q), asynq.Retention(time.Hour)); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "the default queue's job to complete", 30*time.Second, func() bool {
		info, err := b.insp.GetTaskInfo("default", "on-default")
		return err == nil && info.State == asynq.TaskStateCompleted
	})
	// The worker polls every second: give it a few chances at the gpu queue.
	time.Sleep(3 * time.Second)
	info, err := b.insp.GetTaskInfo("gpu", "on-gpu")
	if err != nil {
		t.Fatal(err)
	}
	if info.State != asynq.TaskStatePending {
		t.Errorf("the gpu queue's job is %v on a CPU worker; want it left pending", info.State)
	}
}
