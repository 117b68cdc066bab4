package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	"github.com/tandem-ai/tandem/internal/redistest"
	"github.com/tandem-ai/tandem/jobs"
	"github.com/tandem-ai/tandem/pipeline"
)

// TestJobsAPIAfterRedisRestart restarts a Redis without persistence under
// a producer's API and a worker that stay up, and checks what a client of
// the API sees: a job posted since is found and shown completed once it
// ran, /v1/queues lists the queues, and a POST sent again after it went
// through is answered with the job, not 409.
func TestJobsAPIAfterRedisRestart(t *testing.T) {
	rs := redistest.StartVolatile(t)
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg := pipeline.DefaultConfig()
	cfg.RedisURL = "redis://" + rs.Addr
	cfg.PollInterval = 20 * time.Millisecond
	cfg.ShutdownTimeout = 5 * time.Second
	client, err := newClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	mux := http.NewServeMux()
	(&apiServer{client: client, logger: logger}).routes(mux)
	api := httptest.NewServer(mux)
	defer api.Close()

	reg := pipeline.NewRegistry()
	jobs.RegisterAll(reg, jobs.NewDeps(logger))
	worker, err := pipeline.NewServer(cfg, reg, logger)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- worker.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-ran; err != nil {
			t.Errorf("worker: %v", err)
		}
	}()

	do := func(method, path, body string) (int, map[string]any) {
		t.Helper()
		req, err := http.NewRequest(method, api.URL+path, bytes.NewReader([]byte(body)))
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var v map[string]any
		if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
			t.Fatalf("%s %s: %d, body not JSON: %v", method, path, resp.StatusCode, err)
		}
		return resp.StatusCode, v
	}
	// waitCompleted polls GET /v1/jobs/id for a few registration intervals.
	waitCompleted := func(id string) {
		t.Helper()
		deadline := time.Now().Add(5 * pipeline.QueueRegisterInterval)
		for {
			code, v := do(http.MethodGet, "/v1/jobs/"+id, "")
			if code == http.StatusOK && v["state"] == "completed" {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("GET /v1/jobs/%s: %d %v; want 200, completed", id, code, v)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	if code, v := do(http.MethodPost, "/v1/jobs", `{"kind":"ping","args":{},"task_id":"before"}`); code != http.StatusAccepted {
		t.Fatalf("POST before the restart: %d %v", code, v)
	}
	waitCompleted("before")

	rs.Restart(t)
	const post = `{"kind":"ping","args":{"sleep_ms":300},"task_id":"after"}`
	if code, v := do(http.MethodPost, "/v1/jobs", post); code != http.StatusAccepted {
		t.Fatalf("POST after the restart: %d %v", code, v)
	}
	// The client did not hear back and sends it again.
	if code, v := do(http.MethodPost, "/v1/jobs", post); code != http.StatusAccepted || v["id"] != "after" || v["kind"] != "ping" {
		t.Errorf("the same POST again: %d %v; want 202 with job after", code, v)
	}
	code, v := do(http.MethodPost, "/v1/jobs", `{"kind":"ping","args":{"sleep_ms":1},"task_id":"after"}`)
	if msg, _ := v["error"].(map[string]any); code != http.StatusConflict || msg["message"] != "a job with task_id after already exists" {
		t.Errorf("another ping under task_id after: %d %v; want 409 naming the task_id", code, v)
	}
	waitCompleted("after")
	code, v = do(http.MethodGet, "/v1/queues", "")
	var names []string
	qs, _ := v["queues"].([]any)
	for _, q := range qs {
		if m, ok := q.(map[string]any); ok {
			names = append(names, m["queue"].(string))
		}
	}
	if code != http.StatusOK || !slices.Contains(names, pipeline.QueueDefault) {
		t.Errorf("GET /v1/queues: %d %v; want the queue %s listed", code, v, pipeline.QueueDefault)
	}
}
