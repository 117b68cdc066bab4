package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tandem-ai/tandem/pipeline"
)

// BenchmarkInteractiveFirstToken measures the time to the first streamed
// token of POST /v1/completions through HTTP -> Redis (asynq) -> worker ->
// NATS -> HTTP, less the model's own first-token time that the worker
// reports, for several poll intervals of the worker's interactive lane; and
// what the idle lane costs Redis. Each request follows a random pause, so
// requests arrive at random points of the lane's poll cycle, as people's do.
// It runs on a private redis-server, so that Redis's counters hold only the
// lane's traffic. Metrics: overhead-p50-ms and overhead-p99-ms (the goal is
// under 5 and 20), ttft-p50-ms (model included), model-ms (the model's
// first-token time), idle-redis-calls/s and idle-redis-cpu-% (of one core).
//
// go test -run '^$' -bench InteractiveFirstToken -benchtime 300x ./cmd/producer/
func BenchmarkInteractiveFirstToken(b *testing.B) {
	for _, poll := range []time.Duration{time.Millisecond, 2 * time.Millisecond, 5 * time.Millisecond, 20 * time.Millisecond, time.Second} {
		b.Run("poll="+poll.String(), func(b *testing.B) { benchFirstToken(b, poll) })
	}
}

func benchFirstToken(b *testing.B, poll time.Duration) {
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	url, stop, err := pipeline.EnsureRedis(context.Background(), "", b.TempDir(), logger)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = stop() })
	e := newGenEnv(b, url)
	// The worker's lane, as cmd/worker builds it.
	lane, _, err := pipeline.DefaultConfig().SplitQueue(pipeline.QueueInteractive, poll, 2)
	if err != nil {
		b.Fatal(err)
	}
	lane.RedisURL, lane.NATSURL, lane.DataDir = e.cfg.RedisURL, e.cfg.NATSURL, e.cfg.DataDir
	e.cfg = lane
	e.startWorker(b)
	const body = `{"model":"builtin:tiny","prompt":"Hello, how are you today?","max_tokens":2,"stream":true}`
	for range 3 { // load the model and the tokenizer, warm the connections
		if _, _, err := firstToken(e.srv.URL, body); err != nil {
			b.Fatal(err)
		}
	}

	b.StopTimer()
	calls, cpu := idleRedisCost(b, e.rdb, 2*time.Second)
	b.ReportMetric(calls, "idle-redis-calls/s")
	b.ReportMetric(cpu, "idle-redis-cpu-%")

	n := b.N
	if poll >= 100*time.Millisecond {
		n = min(n, 20) // a second per request: enough to show the default
	}
	maxPause := 2*poll + 5*time.Millisecond
	var overhead, ttft, modelMS []float64
	b.StartTimer()
	for range n {
		time.Sleep(rand.N(maxPause))
		t, m, err := firstToken(e.srv.URL, body)
		if err != nil {
			b.Fatal(err)
		}
		ttft = append(ttft, ms(t))
		modelMS = append(modelMS, m)
		overhead = append(overhead, ms(t)-m)
	}
	b.StopTimer()
	b.ReportMetric(percentile(overhead, 50), "overhead-p50-ms")
	b.ReportMetric(percentile(overhead, 99), "overhead-p99-ms")
	b.ReportMetric(percentile(ttft, 50), "ttft-p50-ms")
	b.ReportMetric(percentile(modelMS, 50), "model-ms")
}

// firstToken streams one completion and returns when its first token chunk
// arrived, and the model's first-token time from the last chunk.
func firstToken(base, body string) (time.Duration, float64, error) {
	start := time.Now()
	resp, err := http.Post(base+"/v1/completions", "application/json", strings.NewReader(body))
	if err != nil {
		return 0, 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, 0, fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	var first time.Duration
	var modelMS float64
	err = readSSE(resp.Body, func(data []byte) error {
		if first == 0 {
			first = time.Since(start)
		}
		var c completionChunk
		if err := json.Unmarshal(data, &c); err != nil {
			return err
		}
		if c.Timing != nil {
			modelMS = c.Timing.ModelFirstTokenMS
		}
		return nil
	})
	return first, modelMS, err
}

// idleRedisCost watches Redis for d while nothing is enqueued and returns
// the commands per second it served and the CPU it used (percent of one
// core), from INFO's counters.
func idleRedisCost(b *testing.B, rdb *redis.Client, d time.Duration) (callsPerSec, cpuPercent float64) {
	ctx := context.Background()
	read := func() (calls, cpu float64) {
		info, err := rdb.Info(ctx, "commandstats", "cpu").Result()
		if err != nil {
			b.Fatal(err)
		}
		for _, line := range strings.Split(info, "\n") {
			line = strings.TrimSpace(line)
			if k, v, ok := strings.Cut(line, ":"); ok {
				switch {
				case strings.HasPrefix(k, "cmdstat_"):
					for _, f := range strings.Split(v, ",") {
						if n, ok := strings.CutPrefix(f, "calls="); ok {
							c, _ := strconv.ParseFloat(n, 64)
							calls += c
						}
					}
				case k == "used_cpu_sys" || k == "used_cpu_user":
					c, _ := strconv.ParseFloat(v, 64)
					cpu += c
				}
			}
		}
		return calls, cpu
	}
	c0, u0 := read()
	time.Sleep(d)
	c1, u1 := read()
	sec := d.Seconds()
	return (c1 - c0 - 1) / sec, 100 * (u1 - u0) / sec // -1: the first INFO
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// percentile returns the p-th percentile of xs (nearest rank).
func percentile(xs []float64, p float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	i := int(float64(len(s))*p/100+0.5) - 1
	return s[min(max(i, 0), len(s)-1)]
}
