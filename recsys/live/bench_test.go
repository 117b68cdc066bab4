package live

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/tandem-ai/tandem/jobs"
	"github.com/tandem-ai/tandem/pipeline"
	"github.com/tandem-ai/tandem/recsys"
)

// benchSynth is the recommender benchmark's data (recsys/bench_test.go):
// a fifth of the product's scale in every dimension by default, the full
// 100k users x 20k items x 2M events with TANDEM_RECSYS_BENCH_SCALE=full.
func benchSynth() recsys.SynthConfig {
	c := recsys.SynthConfig{Users: 20_000, Items: 4_000, Interactions: 400_000, Groups: 20, Noise: 0.1, Skew: 1.5, Seed: 1}
	if os.Getenv("TANDEM_RECSYS_BENCH_SCALE") == "full" {
		c.Users, c.Items, c.Interactions = 100_000, 20_000, 2_000_000
	}
	return c
}

// BenchmarkFeedbackToList times one feedback event from the client's
// publish to JetStream until the user's refreshed list is in Redis: the
// FEEDBACK consumer logs it and enqueues the coalesced update task, the
// live model follows the log, and the update task (on the scheduler's own
// asynq server) rewrites the list. Each event buys the user's top
// recommendation, which must then leave the list; Redis is polled every
// millisecond. Events go one at a time, each at a random moment of the
// window, so this is latency, not throughput. It reports p50, p90 and p99
// per update window.
func BenchmarkFeedbackToList(b *testing.B) {
	for _, window := range []time.Duration{DefaultWindow, 50 * time.Millisecond} {
		b.Run("window="+window.String(), func(b *testing.B) {
			sc := benchSynth()
			e := newFeedbackEnvWith(b, sc)
			e.publishRebuild(b)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			o := e.options()
			o.Window, o.Poll = window, DefaultPoll
			_, stop, err := start(ctx, e.bus, o)
			if err != nil {
				b.Fatal(err)
			}
			defer stop()
			rng := rand.New(rand.NewPCG(7, 8))
			var ds []time.Duration
			k := 0
			for b.Loop() {
				k++
				user := recsys.SynthUser(rng.IntN(sc.Users))
				before, ok, err := e.store.Get(ctx, user)
				if err != nil {
					b.Fatal(err)
				}
				if !ok || len(before) == 0 {
					continue
				}
				// Events arrive at random moments of the window, as users'
				// do, not just after the previous refresh.
				time.Sleep(time.Duration(rng.Int64N(int64(window))))
				target := before[0].Item
				body, _ := json.Marshal(recsys.Event{ID: "bench-" + strconv.Itoa(k), User: user, Item: target, Type: recsys.EventPurchase, Value: 1})
				start := time.Now()
				if _, err := publishBody(ctx, e.bus, body); err != nil {
					b.Fatal(err)
				}
				for {
					l, _, err := e.store.Get(ctx, user)
					if err != nil {
						b.Fatal(err)
					}
					if !slices.ContainsFunc(l, func(s recsys.Scored) bool { return s.Item == target }) {
						break
					}
					if time.Since(start) > time.Minute {
						b.Fatalf("%s's list kept %s for a minute after buying it", user, target)
					}
					time.Sleep(time.Millisecond)
				}
				ds = append(ds, time.Since(start))
			}
			if len(ds) == 0 {
				b.Fatal("no event measured")
			}
			slices.Sort(ds)
			for _, q := range []int{50, 90, 99} {
				b.ReportMetric(float64(ds[min(len(ds)-1, len(ds)*q/100)].Microseconds())/1000, fmt.Sprintf("p%d-ms", q))
			}
		})
	}
}

// BenchmarkShardedRebuild times the nightly rebuild from the fan-out's
// enqueue to the merged lists served, on an in-process asynq worker server
// with four slots, against a single-process rebuild of the same data
// (load, build, publish) run just before. Sharding pays for each shard
// loading the snapshot; it wins when the shards run on several machines.
func BenchmarkShardedRebuild(b *testing.B) {
	sc := benchSynth()
	e := newFeedbackEnvWith(b, sc)
	e.startWorkers(b)
	ctx := context.Background()
	start := time.Now()
	m, err := jobs.LoadRecsModel(ctx, e.interactions, jobs.RecsConfig(0))
	if err != nil {
		b.Fatal(err)
	}
	all, err := m.All(recsys.RecOptions{})
	if err != nil {
		b.Fatal(err)
	}
	if _, _, err := e.store.Publish(ctx, all); err != nil {
		b.Fatal(err)
	}
	single := time.Since(start)
	client, err := pipeline.NewClient(e.cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer client.Close()
	var runs []time.Duration
	prev := ""
	for b.Loop() {
		t0 := time.Now()
		if _, err := pipeline.Enqueue(ctx, client, jobs.RecsFanoutArgs{Interactions: e.interactions, Shards: 8}); err != nil {
			b.Fatal(err)
		}
		prev = e.waitBase(b, prev).Rebuild
		runs = append(runs, time.Since(t0))
	}
	slices.Sort(runs)
	med := runs[len(runs)/2]
	b.ReportMetric(med.Seconds(), "sharded-s")
	b.ReportMetric(single.Seconds(), "one-process-s")
}
