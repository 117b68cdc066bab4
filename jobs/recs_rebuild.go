package jobs

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/tandem-ai/tandem/dataroot"
	"github.com/tandem-ai/tandem/limits"
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
	MaxRecsNeighbors = limits.RecsNeighbors
	MaxRecsTop       = limits.RecsTop
)

// RecsRebuildArgs asks for a full rebuild of the recommender from an
// interaction log (.csv or .jsonl, see recsys.ReadEvents).
type RecsRebuildArgs struct {
	// Interactions is the log, in the data root.
	Interactions string `json:"interactions"`
	// Out, when set, receives one JSON line per user (recsys.RecLine); a
	// file in the data root.
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

// jobPaths implements pathArgs.
func (a RecsRebuildArgs) jobPaths() []JobPath {
	return []JobPath{{"interactions", a.Interactions}, {"out", a.Out}}
}

// Validate implements pipeline.Validator.
func (a RecsRebuildArgs) Validate() error {
	switch {
	case a.Interactions == "":
		return errors.New("interactions: required")
	case a.Out == "" && !a.Publish:
		return errors.New("out: required unless publish is true (the rebuild would be thrown away)")
	case a.Out != "":
		if err := dataroot.CheckPath("out", a.Out); err != nil {
			return err
		}
	}
	if err := checkRecsKnobs(a.Mode, a.Neighbors, a.Top); err != nil {
		return err
	}
	return dataroot.CheckPath("interactions", a.Interactions)
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

// LoadRecsModel builds a model from an interaction file named by a path of
// the file system: the scheduler's --interactions, set by its operator.
// Bad input is an error matching recsys.ErrBadInput.
func LoadRecsModel(ctx context.Context, path string, cfg recsys.Config) (*recsys.Model, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("interactions: %w", err)
	}
	defer f.Close()
	return loadRecsModel(ctx, f, path, cfg)
}

// loadRecsModel builds a model from an open interaction file; name picks
// the format (.csv or .jsonl) and names the file in errors.
func loadRecsModel(ctx context.Context, f io.Reader, name string, cfg recsys.Config) (*recsys.Model, error) {
	format, err := recsys.FormatFromPath(name)
	if err != nil {
		return nil, fmt.Errorf("interactions: %w", err)
	}
	st, err := recsys.NewStore(recsys.StoreConfig{})
	if err != nil {
		return nil, err
	}
	if err := st.Load(f, format); err != nil {
		return nil, fmt.Errorf("interactions: %s: %w", name, err)
	}
	return recsys.Build(ctx, st, cfg)
}

func (w RecsRebuildWorker) run(ctx context.Context, a RecsRebuildArgs) (RecsRebuildResult, error) {
	var res RecsRebuildResult
	if err := a.Validate(); err != nil {
		return res, pipeline.Permanent(err)
	}
	root, err := w.Deps.DataRoot()
	if err != nil {
		return res, err
	}
	f, err := root.Open("interactions", a.Interactions)
	if err != nil {
		return res, pipeline.Permanent(err)
	}
	m, err := loadRecsModel(ctx, f, a.Interactions, RecsConfig(a.Neighbors))
	f.Close()
	if err != nil {
		if permanentRecsErr(err) {
			return res, pipeline.Permanent(err)
		}
		return res, err
	}
	res.Users, res.Items = m.Users(), m.Items()
	opts := a.recOptions()
	if a.Out != "" {
		n, err := writeRecsFile(root, a.Out, m, opts)
		if err != nil {
			return res, err
		}
		name, _ := root.Name("out", a.Out) // accepted by the write
		res.Lines, res.Out = n, root.Path(name)
	}
	if a.Publish {
		rdb, err := redisOf(w.Deps)
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

// writeRecsFile writes the recommendations atomically inside the data
// root: a reader never sees half a file, and a failed run leaves the
// previous one in place.
func writeRecsFile(root *dataroot.Root, path string, m *recsys.Model, opts recsys.RecOptions) (int, error) {
	var n int
	err := root.WriteFile("out", path, func(w io.Writer) error {
		var err error
		n, err = recsys.WriteRecommendations(w, m, opts)
		return err
	})
	return n, err
}

func execRecsRebuild(ctx context.Context, d *Deps, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("worker exec recs-rebuild", flag.ContinueOnError)
	var a RecsRebuildArgs
	fs.StringVar(&a.Interactions, "interactions", "", "interaction log (.csv or .jsonl), in the data root ($TANDEM_DATA_ROOT)")
	fs.StringVar(&a.Out, "out", "", "write one JSON line of recommendations per user here, in the data root")
	fs.StringVar(&a.Mode, "mode", RecsModeUser, "user (user-kNN) or item (item-kNN)")
	fs.IntVar(&a.Neighbors, "neighbors", 50, "neighbours kept per user and per item (K)")
	fs.IntVar(&a.Top, "top", 20, "recommendations per user")
	fs.BoolVar(&a.Publish, "publish", false, "publish every user's list to Redis (TANDEM_REDIS_* settings)")
	if _, err := pipeline.ParseArgs(fs, args); err != nil {
		return err
	}
	res, err := RecsRebuildWorker{Deps: d}.run(ctx, a)
	if err != nil {
		return err
	}
	return writeJSON(stdout, res)
}

// ServingChange implements ServingChanger.
func (a RecsRebuildArgs) ServingChange() string {
	if a.Publish {
		return `field "publish": publishing replaces the recommendation lists every user is served`
	}
	return ""
}
