package pipeline

import (
	"context"
	"flag"
	"io"
	"log/slog"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
)

// BenchmarkNoop prices Tandem's layer over asynq: the typed adapter (strict
// JSON decode, validation, Job construction) and the full middleware chain
// (logging at Info, metrics, recovery), against a bare asynq server, on the
// same Redis, queue and concurrency, in one run.
//
// An iteration enqueues -tandem.bench.jobs no-op jobs with the timer
// stopped, then times a fresh server draining them (start included).
//
//   - raw-asynq, tandem-full-stack: one kind of server each; the second
//     reports "ratio", its rate over the first's.
//   - paired: each iteration drains one round with each server, in
//     alternating order, and reports both rates, their ratio and the median
//     of the per-pair ratios. On a machine shared with other work these are
//     the ones to trust, since load changes hit both sides alike.
//
// The bar is ratio >= 0.9.
//
//	go test ./pipeline -run '^$' -bench Noop -benchtime 5x
var (
	benchJobs        = flag.Int("tandem.bench.jobs", 5000, "jobs per BenchmarkNoop round")
	benchConcurrency = flag.Int("tandem.bench.concurrency", 20, "worker concurrency in BenchmarkNoop")
)

type noopArgs struct {
	N int `json:"n"`
}

func (noopArgs) Kind() string { return "bench:noop" }

func (a noopArgs) Validate() error {
	if a.N < 0 {
		return InvalidField("n", "negative")
	}
	return nil
}

func BenchmarkNoop(b *testing.B) {
	var rawRate float64
	b.Run("raw-asynq", func(b *testing.B) {
		d := newDrainer(b)
		var t time.Duration
		for i := 0; i < b.N; i++ {
			t += d.round(b, startRawServer)
		}
		rawRate = d.rate(b.N, t)
		b.ReportMetric(rawRate, "jobs/s")
	})
	b.Run("tandem-full-stack", func(b *testing.B) {
		d := newDrainer(b)
		var t time.Duration
		for i := 0; i < b.N; i++ {
			t += d.round(b, startTandemServer)
		}
		rate := d.rate(b.N, t)
		b.ReportMetric(rate, "jobs/s")
		if rawRate > 0 {
			b.ReportMetric(rate/rawRate, "ratio")
		}
	})
	b.Run("paired", func(b *testing.B) {
		d := newDrainer(b)
		var raw, full time.Duration
		ratios := make([]float64, 0, b.N)
		for i := 0; i < b.N; i++ {
			var r, f time.Duration
			if i%2 == 0 {
				r = d.round(b, startRawServer)
				f = d.round(b, startTandemServer)
			} else {
				f = d.round(b, startTandemServer)
				r = d.round(b, startRawServer)
			}
			raw, full = raw+r, full+f
			ratios = append(ratios, float64(r)/float64(f))
		}
		rr, fr := d.rate(b.N, raw), d.rate(b.N, full)
		b.ReportMetric(rr, "raw-jobs/s")
		b.ReportMetric(fr, "full-jobs/s")
		b.ReportMetric(fr/rr, "ratio")
		// The median of per-pair ratios shrugs off a round that a burst of
		// outside load slowed down.
		sort.Float64s(ratios)
		b.ReportMetric(ratios[len(ratios)/2], "median-ratio")
	})
}

// benchServer starts a server on cfg that calls done once per processed
// job, and returns its stop function.
type benchServer func(b *testing.B, cfg Config, done func()) (stop func())

// drainer holds what the rounds of one sub-benchmark share.
type drainer struct {
	cfg    Config
	queue  string
	client *Client
	n      int
}

func newDrainer(b *testing.B) *drainer {
	b.Helper()
	b.StopTimer()
	b.ReportAllocs()
	d := &drainer{queue: testQueue(b, ""), n: *benchJobs}
	d.cfg = DefaultConfig()
	d.cfg.RedisURL = testRedisURL
	d.cfg.Queues = map[string]int{d.queue: 1}
	d.cfg.Concurrency = *benchConcurrency
	c, err := NewClient(d.cfg)
	if err != nil {
		b.Fatal(err)
	}
	d.client = c
	b.Cleanup(func() {
		_ = c.Inspector().DeleteQueue(d.queue, true)
		c.Close()
	})
	return d
}

// round fills the queue, then times one server draining it.
func (d *drainer) round(b *testing.B, start benchServer) time.Duration {
	_ = d.client.Inspector().DeleteQueue(d.queue, true) // leftovers of an earlier round
	enqueueNoops(b, context.Background(), d.client, d.queue, d.n)

	var count atomic.Int64
	all := make(chan struct{})
	done := func() {
		if count.Add(1) == int64(d.n) {
			close(all)
		}
	}
	t0 := time.Now()
	b.StartTimer()
	stop := start(b, d.cfg, done)
	<-all
	b.StopTimer()
	elapsed := time.Since(t0)
	stop()
	return elapsed
}

func (d *drainer) rate(rounds int, t time.Duration) float64 {
	return float64(d.n*rounds) / t.Seconds()
}

// enqueueNoops fills the queue from a few goroutines; enqueueing is not
// what is measured.
func enqueueNoops(b *testing.B, ctx context.Context, c *Client, queue string, n int) {
	const producers = 8
	var wg sync.WaitGroup
	errs := make(chan error, producers)
	for p := 0; p < producers; p++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := p; i < n; i += producers {
				if _, err := Enqueue(ctx, c, noopArgs{N: i}, asynq.Queue(queue)); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
}

// benchLogger keeps benchmark output clean; Info is the production level,
// so the logging middleware pays what it pays in production.
var benchLogger = slog.New(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelInfo}))

func startRawServer(b *testing.B, cfg Config, done func()) func() {
	rdb, err := cfg.RedisClient()
	if err != nil {
		b.Fatal(err)
	}
	srv := asynq.NewServerFromRedisClient(rdb, asynq.Config{
		Concurrency:       cfg.Concurrency,
		Queues:            cfg.Queues,
		TaskCheckInterval: cfg.PollInterval,
		Logger:            asynqLogger{benchLogger},
		LogLevel:          asynq.WarnLevel,
	})
	if err := srv.Start(asynq.HandlerFunc(func(context.Context, *asynq.Task) error {
		done()
		return nil
	})); err != nil {
		b.Fatal(err)
	}
	return func() {
		srv.Shutdown()
		rdb.Close()
	}
}

func startTandemServer(b *testing.B, cfg Config, done func()) func() {
	reg := NewRegistry()
	Register(reg, WorkFunc[noopArgs](func(context.Context, *Job[noopArgs]) error {
		done()
		return nil
	}), KindOptions{})
	mw := DefaultMiddleware(benchLogger, NewMetrics(prometheus.NewRegistry()))
	srv, err := NewServer(cfg, reg, benchLogger, mw...)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan error, 1)
	go func() { stopped <- srv.Run(ctx) }()
	return func() {
		cancel()
		if err := <-stopped; err != nil {
			b.Error(err)
		}
	}
}
