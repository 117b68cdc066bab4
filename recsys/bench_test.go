package recsys

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// benchScale reads TANDEM_RECSYS_BENCH_SCALE: "full" is the product's bar
// (100k users x 20k items x 2M events); the default is a fifth of that in
// every dimension, quick enough for a laptop.
func benchSynth() SynthConfig {
	c := SynthConfig{Users: 20_000, Items: 4_000, Interactions: 400_000, Groups: 20, Noise: 0.1, Skew: 1.5, Seed: 1}
	if os.Getenv("TANDEM_RECSYS_BENCH_SCALE") == "full" {
		c.Users, c.Items, c.Interactions = 100_000, 20_000, 2_000_000
	}
	return c
}

func benchStore(b *testing.B, c SynthConfig) *Store {
	b.Helper()
	st, err := NewStore(StoreConfig{})
	if err != nil {
		b.Fatal(err)
	}
	if err := Synthesize(c, func(ev Event) error { return st.Add(ev) }); err != nil {
		b.Fatal(err)
	}
	return st
}

// BenchmarkRebuild times one side of the full rebuild.
func BenchmarkRebuild(b *testing.B) {
	st := benchStore(b, benchSynth())
	for _, side := range []Side{SideUsers, SideItems} {
		for _, w := range []Weighting{WeightNone, WeightIDF} {
			b.Run(fmt.Sprintf("%v/%v", side, w), func(b *testing.B) {
				cfg := Config{Users: SimConfig{K: 50, Weighting: w}, Items: SimConfig{K: 50, Weighting: w}}
				n := st.Users()
				if side == SideItems {
					n = st.Items()
				}
				for b.Loop() {
					if _, err := BuildShard(context.Background(), st, cfg, side, 0, n); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// BenchmarkFeedbackLatency times one feedback event from Apply to the user's
// refreshed recommendations and reports p50 and p99 over the run.
func BenchmarkFeedbackLatency(b *testing.B) {
	c := benchSynth()
	for _, sim := range []SimConfig{{Weighting: WeightNone}, {Weighting: WeightIDF}, {Weighting: WeightIDF, FreezeWeights: true}} {
		name := sim.Weighting.String()
		if sim.FreezeWeights {
			name += "-frozen"
		}
		b.Run(name, func(b *testing.B) {
			m, err := Build(context.Background(), benchStore(b, c), Config{Users: sim, Items: sim})
			if err != nil {
				b.Fatal(err)
			}
			rng := rand.New(rand.NewPCG(3, 4))
			types := []string{EventView, EventClick, EventAccepted, EventEdited, EventRejected, EventRating}
			var d, cpu []time.Duration
			k := 0
			for b.Loop() {
				k++
				u := rng.IntN(c.Users)
				lo, hi := blockOf(c.UserGroup(u), c.Groups, c.Items)
				ev := Event{ID: "b" + strconv.Itoa(k), User: SynthUser(u), Item: SynthItem(lo + rng.IntN(hi-lo)),
					Type: types[rng.IntN(len(types))], Value: float64(1 + rng.IntN(5))}
				t, c0 := time.Now(), processCPU()
				if _, err := m.Apply(ev); err != nil {
					b.Fatal(err)
				}
				if _, err := m.Recommend(ev.User, RecOptions{N: 20}); err != nil {
					b.Fatal(err)
				}
				d = append(d, time.Since(t))
				cpu = append(cpu, processCPU()-c0)
			}
			for _, q := range []struct {
				name string
				ds   []time.Duration
			}{{"wall", d}, {"cpu", cpu}} {
				slices.Sort(q.ds)
				b.ReportMetric(float64(q.ds[len(q.ds)/2].Microseconds()), q.name+"-p50-µs")
				b.ReportMetric(float64(q.ds[min(len(q.ds)-1, len(q.ds)*99/100)].Microseconds()), q.name+"-p99-µs")
			}
		})
	}
}

// processCPU is the process's CPU time, all threads: on a shared host it
// measures the work, where wall time also counts waiting for a core.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
