package jobs

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/tandem-ai/tandem/atomicfile"
	"github.com/tandem-ai/tandem/pipeline"
	"github.com/tandem-ai/tandem/recsys"
)

// KindRecsRebuild is the stable kind string of RecsRebuildArgs.
const KindRecsRebuild = "recs-rebuild"

// Recommendation modes of RecsRebuildArgs.Mode.
const (
	RecsModeUser = "user" // user-kNN
	RecsModeItem = "item" // item-kNN
)

// Bounds of the rebuild's knobs; recsys enforces its own limits as well,
// these keep a typo from asking for a job that never ends.
const (
	MaxRecsNeighbors = 1000
	MaxRecsTop       = 1000
)

// RecsRebuildArgs asks for a full rebuild of the recommender from an
// interaction log (.csv or .jsonl, see recsys.ReadEvents).
type RecsRebuildArgs struct {
	Interactions string `json:"interactions"`
	// Out, when set, receives one JSON line per user (recsys.RecLine).
	Out string `json:"out,omitempty"`
	// Mode is "user" (default) or "item".
	Mode string `json:"mode,omitempty"`
	// Neighbors is K of both similarity tables; default 50.
	Neighbors int `json:"neighbors,omitempty"`
	// Top is the list length per user; default 20.
	Top int `json:"top,omitempty"`
	// Publish swaps every user's list, and the cold-start list of popular
	// items (recsys.PopularField), into the Redis serving store.
	Publish bool `json:"publish,omitempty"`
}

// Kind implements pipeline.JobArgs.
func (RecsRebuildArgs) Kind() string { return KindRecsRebuild }

// Validate implements pipeline.Validator.
func (a RecsRebuildArgs) Validate() error {
	switch {
	case a.Interactions == "":
		return errors.New("interactions: required")
	case a.Out == "" && !a.Publish:
		return errors.New("out: required unless publish is true (the rebuild would be thrown away)")
	}
	return checkRecsKnobs(a.Mode, a.Neighbors, a.Top)
}

// checkRecsKnobs validates the mode, neighbour count and list length that
// every rebuild kind takes.
func checkRecsKnobs(mode string, neighbors, top int) error {
	switch {
	case mode != "" && mode != RecsModeUser && mode != RecsModeItem:
		return fmt.Errorf("mode: %q (want %s or %s)", mode, RecsModeUser, RecsModeItem)
	case neighbors < 0 || neighbors > MaxRecsNeighbors:
		return fmt.Errorf("neighbors: %d out of range [1, %d]", neighbors, MaxRecsNeighbors)
	case top < 0 || top > MaxRecsTop:
		return fmt.Errorf("top: %d out of range [1, %d]", top, MaxRecsTop)
	}
	return nil
}

// recOptions turns mode and top into recsys options.
func (a RecsRebuildArgs) recOptions() recsys.RecOptions { return RecsOptions(a.Mode, a.Top) }

// RecsOptions turns a mode ("user", "item" or "" for user) and a list
// length (0: the default) into recommendation options.
func RecsOptions(mode string, top int) recsys.RecOptions {
	opts := recsys.RecOptions{N: top}
	if mode == RecsModeItem {
		opts.Method = recsys.ItemKNN
	}
	return opts
}

// RecsConfig is the model configuration of every rebuild for K neighbours
// (0: the default): IDF feature weights on both sides, computed exactly
// from the data being rebuilt.
func RecsConfig(k int) recsys.Config {
	sim := recsys.SimConfig{K: k, Weighting: recsys.WeightIDF}
	return recsys.Config{Users: sim, Items: sim}
}

// RecsLiveConfig is RecsConfig for a live model that takes feedback
// between rebuilds: the IDF weights are frozen as the model was built (from
// the last rebuild's snapshot), so an event recomputes only its own user's
// and item's rows instead of every row holding the item; the next rebuild
// computes them afresh. recsys.SimConfig.FreezeWeights says what that
// state equals. Exact weights between rebuilds cost 35-45 times the CPU
// per event (docs/PERFORMANCE.md).
func RecsLiveConfig(k int) recsys.Config {
	cfg := RecsConfig(k)
	cfg.Users.FreezeWeights, cfg.Items.FreezeWeights = true, true
	return cfg
}

// RecsRebuildResult is what recs-rebuild prints and keeps as the task result.
type RecsRebuildResult struct {
	Users      int    `json:"users"`
	Items      int    `json:"items"`
	Lines      int    `json:"lines,omitempty"`
	Out        string `json:"out,omitempty"`
	Generation int64  `json:"generation,omitempty"`
	Published  int    `json:"published,omitempty"`
}

// RecsRebuildWorker runs recs-rebuild jobs.
type RecsRebuildWorker struct{ Deps *Deps }

// Work implements pipeline.Worker.
func (w RecsRebuildWorker) Work(ctx context.Context, job *pipeline.Job[RecsRebuildArgs]) error {
	res, err := w.run(ctx, job.Args)
	if err != nil {
		return err
	}
	return keepResult(job.ResultWriter, res)
}

// LoadRecsModel builds a model from an interaction file. Bad input is an
// error matching recsys.ErrBadInput.
func LoadRecsModel(ctx context.Context, path string, cfg recsys.Config) (*recsys.Model, error) {
	st, err := recsys.NewStore(recsys.StoreConfig{})
	if err != nil {
		return nil, err
	}
	if err := st.LoadFile(path); err != nil {
		return nil, fmt.Errorf("interactions: %w", err)
	}
	return recsys.Build(ctx, st, cfg)
}

func (w RecsRebuildWorker) run(ctx context.Context, a RecsRebuildArgs) (RecsRebuildResult, error) {
	var res RecsRebuildResult
	if err := a.Validate(); err != nil {
		return res, pipeline.Permanent(err)
	}
	m, err := LoadRecsModel(ctx, a.Interactions, RecsConfig(a.Neighbors))
	if err != nil {
		if permanentRecsErr(err) {
			return res, pipeline.Permanent(err)
		}
		return res, err
	}
	res.Users, res.Items = m.Users(), m.Items()
	opts := a.recOptions()
	if a.Out != "" {
		n, err := writeRecsFile(a.Out, m, opts)
		if err != nil {
			return res, err
		}
		res.Lines, res.Out = n, a.Out
	}
	if a.Publish {
		rdb, err := recsRedis(w.Deps)
		if err != nil {
			return res, fmt.Errorf("publish: %w", err)
		}
		all, err := m.All(opts)
		if err != nil {
			return res, pipeline.Permanent(err)
		}
		// The cold-start list goes with the generation, for readers that
		// serve users without a list of their own (personalize).
		popular, err := m.Popular(opts)
		if err != nil {
			return res, pipeline.Permanent(err)
		}
		gen, n, err := recsys.NewRedisStore(rdb, recsys.RedisStoreOptions{}).Publish(ctx, recsys.WithPopular(all, popular))
		if err != nil {
			return res, fmt.Errorf("publish: %w", err)
		}
		res.Generation, res.Published = gen, n-1 // users, without the popular list
	}
	return res, nil
}

// permanentRecsErr tells input that no retry can fix (a bad or missing
// file) from passing trouble.
func permanentRecsErr(err error) bool {
	return errors.Is(err, recsys.ErrBadInput) || errors.Is(err, os.ErrNotExist) || errors.Is(err, os.ErrPermission)
}

// writeRecsFile writes the recommendations atomically: a reader never sees
// half a file, and a failed run leaves the previous one in place.
func writeRecsFile(path string, m *recsys.Model, opts recsys.RecOptions) (int, error) {
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return 0, fmt.Errorf("out: %w", err)
		}
	}
	var n int
	err := atomicfile.Write(path, func(w io.Writer) error {
		var err error
		n, err = recsys.WriteRecommendations(w, m, opts)
		return err
	})
	if err != nil {
		return n, fmt.Errorf("out: %w", err)
	}
	return n, nil
}

func execRecsRebuild(ctx context.Context, d *Deps, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("worker exec recs-rebuild", flag.ContinueOnError)
	var a RecsRebuildArgs
	fs.StringVar(&a.Interactions, "interactions", "", "interaction log (.csv or .jsonl)")
	fs.StringVar(&a.Out, "out", "", "write one JSON line of recommendations per user here")
	fs.StringVar(&a.Mode, "mode", RecsModeUser, "user (user-kNN) or item (item-kNN)")
	fs.IntVar(&a.Neighbors, "neighbors", 50, "neighbours kept per user and per item (K)")
	fs.IntVar(&a.Top, "top", 20, "recommendations per user")
	fs.BoolVar(&a.Publish, "publish", false, "publish every user's list to Redis (TANDEM_REDIS_* settings)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	res, err := RecsRebuildWorker{Deps: d}.run(ctx, a)
	if err != nil {
		return err
	}
	return writeJSON(stdout, res)
}
