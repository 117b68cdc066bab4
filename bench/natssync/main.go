// Command natssync measures what JetStream's `sync_interval: always` costs a
// Tandem publisher: the same feedback events are published, acknowledged
// one by one and by concurrent publishers, to a file-backed stream on two
// embedded servers, one with the default periodic fsync (every 2 minutes)
// and one that fsyncs every write before acknowledging it. Runs alternate
// between the two so that load on the machine falls on both; it prints the
// median rate of each and the ratio.
//
// Usage: go run ./bench/natssync [-dir DIR] [-n 2000] [-rounds 3] [-conc 16]
//
// DIR must be on the disk you care about: fsync on tmpfs costs nothing.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tandem-ai/tandem/pipeline"
)

func main() {
	dir := flag.String("dir", "", "directory for the two JetStream stores (default: a new one under the working directory)")
	n := flag.Int("n", 2000, "events per run")
	rounds := flag.Int("rounds", 3, "runs of each kind, alternating")
	conc := flag.Int("conc", 16, "concurrent publishers in the concurrent runs")
	flag.Parse()
	if err := run(*dir, *n, *rounds, *conc); err != nil {
		fmt.Fprintln(os.Stderr, "natssync:", err)
		os.Exit(1)
	}
}

type side struct {
	name string
	bus  *pipeline.Bus
	stop func()
}

func open(ctx context.Context, dir, name string, opts ...pipeline.EmbeddedOption) (*side, error) {
	ns, err := pipeline.StartEmbeddedNATS(filepath.Join(dir, name), opts...)
	if err != nil {
		return nil, err
	}
	bus, err := pipeline.ConnectBus(ctx, ns.URL())
	if err != nil {
		ns.Shutdown()
		return nil, err
	}
	if err := bus.EnsureStreams(ctx); err != nil {
		bus.Close()
		ns.Shutdown()
		return nil, err
	}
	return &side{name: name, bus: bus, stop: func() { bus.Close(); ns.Shutdown() }}, nil
}

// event is the size and shape of a rating on FEEDBACK.
type event struct {
	ID     string  `json:"id"`
	Type   string  `json:"type"`
	User   string  `json:"user"`
	Item   string  `json:"item"`
	Rating float64 `json:"rating"`
	Time   string  `json:"time"`
}

// publish sends n events from conc publishers, each waiting for its ack,
// and returns events per second.
func (s *side) publish(ctx context.Context, round, n, conc int) (float64, error) {
	var wg sync.WaitGroup
	errs := make(chan error, conc)
	start := time.Now()
	for w := range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += conc {
				id := fmt.Sprintf("%s-r%d-c%d-%d", s.name, round, conc, i)
				ev := event{ID: id, Type: "rating", User: fmt.Sprintf("user-%d", i%97), Item: fmt.Sprintf("tpl-%d", i%31), Rating: 4, Time: time.Now().UTC().Format(time.RFC3339Nano)}
				if err := s.bus.Publish(ctx, pipeline.FeedbackSubject("rating"), id, ev); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return 0, err
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

func median(xs []float64) float64 {
	s := slices.Sorted(slices.Values(xs))
	return s[len(s)/2]
}

func run(dir string, n, rounds, conc int) error {
	ctx := context.Background()
	if dir == "" {
		wd, err := os.Getwd()
		if err != nil {
			return err
		}
		if dir, err = os.MkdirTemp(wd, ".natssync-"); err != nil {
			return err
		}
		defer os.RemoveAll(dir)
	}
	def, err := open(ctx, dir, "default")
	if err != nil {
		return err
	}
	defer def.stop()
	always, err := open(ctx, dir, "always", pipeline.WithEmbeddedSyncAlways())
	if err != nil {
		return err
	}
	defer always.stop()

	fmt.Printf("%d events of about 150 bytes per run, %d runs each, alternating; store under %s\n", n, rounds, dir)
	for _, c := range []int{1, conc} {
		rates := map[string][]float64{}
		for r := range rounds {
			for _, s := range []*side{def, always} {
				rate, err := s.publish(ctx, r, n, c)
				if err != nil {
					return fmt.Errorf("%s: %w", s.name, err)
				}
				rates[s.name] = append(rates[s.name], rate)
			}
		}
		d, a := median(rates["default"]), median(rates["always"])
		fmt.Printf("%2d publisher(s): default fsync %8.0f events/s, sync always %8.0f events/s, always/default %.2f\n", c, d, a, a/d)
	}
	// Artifacts (batch chunk outputs, recommender snapshots) go to a
	// JetStream object store in Kubernetes: 128 KiB chunks, each a write.
	rates := map[string][]float64{}
	for r := range rounds {
		for _, s := range []*side{def, always} {
			rate, err := s.putObject(ctx, r, artifactBytes)
			if err != nil {
				return fmt.Errorf("%s: %w", s.name, err)
			}
			rates[s.name] = append(rates[s.name], rate)
		}
	}
	d, a := median(rates["default"]), median(rates["always"])
	fmt.Printf("%d MiB artifact put: default fsync %6.0f MiB/s, sync always %6.0f MiB/s, always/default %.2f\n", artifactBytes>>20, d, a, a/d)
	return nil
}

// artifactBytes is the size of the artifact each put run writes.
const artifactBytes = 32 << 20

// putObject writes one artifact of size bytes and returns MiB per second.
func (s *side) putObject(ctx context.Context, round, size int) (float64, error) {
	obs, err := s.bus.JS.CreateOrUpdateObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: "natssync", Storage: jetstream.FileStorage})
	if err != nil {
		return 0, err
	}
	data := make([]byte, size)
	for i := range data {
		data[i] = byte(i * 7)
	}
	start := time.Now()
	if _, err := obs.PutBytes(ctx, fmt.Sprintf("chunk-%d", round), data); err != nil {
		return 0, err
	}
	return float64(size) / (1 << 20) / time.Since(start).Seconds(), nil
}
