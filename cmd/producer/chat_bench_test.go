package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tandem-ai/tandem/pipeline"
)

// BenchmarkChatOverCompletions measures what the chat path adds: the same
// tokens asked for through POST /v1/completions (the prompt written as the
// default chat format writes it) and POST /v1/chat/completions (one user
// message), alternately, greedy, two tokens, unstreamed, through HTTP ->
// Redis -> worker -> NATS -> HTTP on a private redis-server. Metrics: the
// p50 of each path's request time and chat-extra-p50-ms, their difference
// (the goal is at most 1 ms).
//
// go test -run '^$' -bench ChatOverCompletions -benchtime 200x ./cmd/producer/
func BenchmarkChatOverCompletions(b *testing.B) {
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	url, stop, err := pipeline.EnsureRedis(context.Background(), "", b.TempDir(), logger)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = stop() })
	e := newGenEnv(b, url)
	lane, _, err := pipeline.DefaultConfig().SplitQueue(pipeline.QueueInteractive, 2*time.Millisecond, 2)
	if err != nil {
		b.Fatal(err)
	}
	lane.RedisURL, lane.NATSURL, lane.DataDir = e.cfg.RedisURL, e.cfg.NATSURL, e.cfg.DataDir
	e.cfg = lane
	e.startWorker(b)
	paths := []struct{ path, body string }{
		{"/v1/completions", `{"model":"builtin:tiny","prompt":"User: Hello, how are you today?\nAssistant:","max_tokens":2,"temperature":0,"stop":"\nUser:"}`},
		{"/v1/chat/completions", `{"model":"builtin:tiny","messages":[{"role":"user","content":"Hello, how are you today?"}],"max_tokens":2,"temperature":0}`},
	}
	timed := func(path, body string) float64 {
		start := time.Now()
		resp, err := http.Post(e.srv.URL+path, "application/json", strings.NewReader(body))
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			b.Fatal(fmt.Errorf("%s: HTTP %d", path, resp.StatusCode))
		}
		return ms(time.Since(start))
	}
	for range 3 { // load the model, warm the connections
		for _, p := range paths {
			timed(p.path, p.body)
		}
	}
	var took [2][]float64
	b.ResetTimer()
	for range b.N {
		for i, p := range paths {
			took[i] = append(took[i], timed(p.path, p.body))
		}
	}
	b.StopTimer()
	completions, chat := percentile(took[0], 50), percentile(took[1], 50)
	b.ReportMetric(completions, "completions-p50-ms")
	b.ReportMetric(chat, "chat-p50-ms")
	b.ReportMetric(chat-completions, "chat-extra-p50-ms")
}
