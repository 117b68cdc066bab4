package main

import (
	"encoding/json"
	"flag"
	"io"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/tandem-ai/tandem/jobs"
	"github.com/tandem-ai/tandem/pipeline"
)

// testRedisDB is the Redis database the scheduler under test uses; no
// package flushes it (recsys/live, which tests the recommender the
// scheduler hosts, flushes 7).
const testRedisDB = 2

func testRedisAddr() string {
	if a := os.Getenv("TANDEM_TEST_REDIS_ADDR"); a != "" {
		return a
	}
	return "127.0.0.1:6379"
}

// waitFor polls cond until it holds or 30 s pass.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func flagSet() *flag.FlagSet { return flag.NewFlagSet("scheduler", flag.ContinueOnError) }

func TestNightlyEntry(t *testing.T) {
	rc := recsFlags{rebuild: defaultNightlySpec, shards: 4}
	got, err := withNightlyRebuild(nil, rc, "/data/interactions.csv", quiet)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Name != nightlyEntryName || got[0].Spec != "0 2 * * *" || got[0].Kind != jobs.KindRecsFanout {
		t.Fatalf("built-in entry %+v", got)
	}
	var args jobs.RecsFanoutArgs
	if err := json.Unmarshal(got[0].Payload, &args); err != nil || args.Shards != 4 || args.Interactions != "/data/interactions.csv" {
		t.Fatalf("payload %s: %+v %v", got[0].Payload, args, err)
	}
	if err := jobs.ValidatePayload(got[0].Kind, got[0].Payload); err != nil {
		t.Fatal(err)
	}
	// A schedule entry of the kind replaces it; "off" drops it.
	own := []pipeline.PeriodicEntry{{Name: "mine", Spec: "30 3 * * *", Kind: jobs.KindRecsFanout}}
	if got, _ := withNightlyRebuild(own, rc, "", quiet); len(got) != 1 || got[0].Name != "mine" {
		t.Fatalf("with a schedule entry: %+v", got)
	}
	rc.rebuild = "off"
	var logged strings.Builder
	if got, _ := withNightlyRebuild(nil, rc, "", slog.New(slog.NewTextHandler(&logged, nil))); len(got) != 0 {
		t.Fatalf("off: %+v", got)
	}
	// With no rebuild at all the log is trimmed by nothing but its cap: say so.
	if !strings.Contains(logged.String(), "level=WARN") || !strings.Contains(logged.String(), "interaction log") {
		t.Fatalf("rebuild off: logged %q, want a warning about the interaction log", logged.String())
	}
	logged.Reset()
	if _, err := withNightlyRebuild(own, rc, "", slog.New(slog.NewTextHandler(&logged, nil))); err != nil || logged.Len() != 0 {
		t.Fatalf("rebuild off with a schedule entry: %v, logged %q", err, logged.String())
	}
	rc.rebuild = "61 2 * * *"
	if _, err := withNightlyRebuild(nil, rc, "", quiet); err == nil || !strings.Contains(err.Error(), "--recs-rebuild") {
		t.Fatalf("bad spec: %v, want an error naming the flag", err)
	}
	// The flags are read from the environment and checked.
	t.Setenv("TANDEM_RECS_WINDOW", "soon")
	var bad recsFlags
	if err := bad.bind(flagSet()); err == nil || !strings.Contains(err.Error(), "TANDEM_RECS_WINDOW") {
		t.Fatalf("bad TANDEM_RECS_WINDOW: %v", err)
	}
	t.Setenv("TANDEM_RECS_WINDOW", "5ms")
	if err := bad.bind(flagSet()); err != nil {
		t.Fatal(err)
	}
	if err := bad.validate(); err == nil || !strings.Contains(err.Error(), "--recs-window") {
		t.Fatalf("a 5ms window: %v", err)
	}
	// A window an update task would sleep out inside its own timeout.
	t.Setenv("TANDEM_RECS_WINDOW", "1m")
	if err := bad.bind(flagSet()); err != nil {
		t.Fatal(err)
	}
	if err := bad.validate(); err == nil || !strings.Contains(err.Error(), "--recs-window") {
		t.Fatalf("a 1m window: %v", err)
	}
}
