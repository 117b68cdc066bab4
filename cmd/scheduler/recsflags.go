package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"time"

	"github.com/tandem-ai/tandem/jobs"
	"github.com/tandem-ai/tandem/pipeline"
	"github.com/tandem-ai/tandem/recsys"
	"github.com/tandem-ai/tandem/recsys/live"
)

// nightlyEntryName names the built-in periodic entry of the sharded
// rebuild; its task ids are "recs-nightly:<tick unix seconds>".
const nightlyEntryName = "recs-nightly"

// defaultNightlySpec is 02:00 UTC every day.
const defaultNightlySpec = "0 2 * * *"

// recsFlags are the scheduler's recommender settings.
type recsFlags struct {
	rebuild     string // cron spec of the nightly rebuild, or "off"
	shards      int
	window      time.Duration
	poll        time.Duration
	concurrency int
	weights     string // "frozen" or "exact"
}

func (r *recsFlags) bind(fs *flag.FlagSet) error {
	shards, err := envInt("TANDEM_RECS_SHARDS", jobs.DefaultRecsShards)
	if err != nil {
		return err
	}
	window, err := envDuration("TANDEM_RECS_WINDOW", live.DefaultWindow)
	if err != nil {
		return err
	}
	poll, err := envDuration("TANDEM_RECS_POLL", live.DefaultPoll)
	if err != nil {
		return err
	}
	conc, err := envInt("TANDEM_RECS_CONCURRENCY", live.DefaultConcurrency)
	if err != nil {
		return err
	}
	fs.StringVar(&r.rebuild, "recs-rebuild", envOr("TANDEM_RECS_REBUILD", defaultNightlySpec),
		"cron spec (UTC) of the nightly sharded recommender rebuild; off disables it. A schedule entry of kind "+jobs.KindRecsFanout+" replaces it [TANDEM_RECS_REBUILD]")
	fs.IntVar(&r.shards, "recs-shards", shards, "row ranges per side of the nightly rebuild [TANDEM_RECS_SHARDS]")
	fs.DurationVar(&r.window, "recs-window", window, "a user's feedback events within this window share one update task [TANDEM_RECS_WINDOW]")
	fs.DurationVar(&r.poll, "recs-poll", poll, "how often the update server looks at its empty queue [TANDEM_RECS_POLL]")
	fs.IntVar(&r.concurrency, "recs-concurrency", conc, "update tasks run at once [TANDEM_RECS_CONCURRENCY]")
	fs.StringVar(&r.weights, "recs-weights", envOr("TANDEM_RECS_WEIGHTS", "frozen"),
		"IDF weights of the live model between rebuilds: frozen (as the last rebuild computed them) or exact (recomputed per event, slower) [TANDEM_RECS_WEIGHTS]")
	return nil
}

func (r *recsFlags) validate() error {
	switch {
	case r.shards < 1 || r.shards > jobs.MaxRecsShards:
		return fmt.Errorf("--recs-shards %d: want 1..%d", r.shards, jobs.MaxRecsShards)
	case r.window < live.MinWindow || r.window > live.MaxWindow:
		return fmt.Errorf("--recs-window %v: want %v..%v (an update task waits out its window within its %v timeout)",
			r.window, live.MinWindow, live.MaxWindow, jobs.RecsUserUpdateTimeout)
	case r.poll < pipeline.MinPollInterval || r.poll > pipeline.MaxPollInterval:
		return fmt.Errorf("--recs-poll %v: want %v..%v", r.poll, pipeline.MinPollInterval, pipeline.MaxPollInterval)
	case r.concurrency < 1 || r.concurrency > pipeline.MaxConcurrency:
		return fmt.Errorf("--recs-concurrency %d: want 1..%d", r.concurrency, pipeline.MaxConcurrency)
	case r.weights != "frozen" && r.weights != "exact":
		return fmt.Errorf("--recs-weights %q: want frozen or exact", r.weights)
	}
	return nil
}

// withNightlyRebuild adds the built-in nightly rebuild to the schedule,
// unless it is off or the schedule has an entry of its kind already. With
// no rebuild at all it warns: only rebuilds trim the interaction log.
func withNightlyRebuild(entries []pipeline.PeriodicEntry, r recsFlags, interactions string, logger *slog.Logger) ([]pipeline.PeriodicEntry, error) {
	if r.rebuild == "off" {
		if !slices.ContainsFunc(entries, func(e pipeline.PeriodicEntry) bool { return e.Kind == jobs.KindRecsFanout }) {
			logger.Warn("no recommender rebuild is scheduled: only a rebuild trims the interaction log, which grows to its cap and then drops its oldest events",
				"log", recsys.KeyLog, "cap", recsys.DefaultLogMaxLen)
		}
		return entries, nil
	}
	for _, e := range entries {
		if e.Kind == jobs.KindRecsFanout {
			logger.Info("the schedule's entry replaces the built-in nightly rebuild", "entry", e.Name, "spec", e.Spec)
			return entries, nil
		}
	}
	payload, err := json.Marshal(jobs.RecsFanoutArgs{Interactions: interactions, Shards: r.shards})
	if err != nil {
		return nil, err
	}
	e := pipeline.PeriodicEntry{Name: nightlyEntryName, Spec: r.rebuild, Kind: jobs.KindRecsFanout, Payload: payload}
	// Checked as a schedule file's entry is, so a bad spec names the flag.
	one, err := json.Marshal([]pipeline.PeriodicEntry{e})
	if err != nil {
		return nil, err
	}
	if _, err := pipeline.ParseSchedule("--recs-rebuild", one); err != nil {
		return nil, err
	}
	return append(entries, e), nil
}

func envInt(key string, def int) (int, error) {
	v, ok := os.LookupEnv(key)
	if !ok || v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		return 0, fmt.Errorf("%s=%q: want an integer", key, v)
	}
	return n, nil
}

func envDuration(key string, def time.Duration) (time.Duration, error) {
	v, ok := os.LookupEnv(key)
	if !ok || v == "" {
		return def, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return 0, fmt.Errorf("%s=%q: want a duration such as 200ms", key, v)
	}
	return d, nil
}
