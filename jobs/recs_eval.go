package jobs

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/tandem-ai/tandem/dataroot"
	"github.com/tandem-ai/tandem/limits"
	"github.com/tandem-ai/tandem/pipeline"
	"github.com/tandem-ai/tandem/recsys"
)

// KindRecsEval names the `worker exec recs-eval` command.
const KindRecsEval = "recs-eval"

// MaxRecsEvalEvents bounds the events recs-eval holds in memory for the
// split (the rebuild streams; the evaluation needs them all at once).
const MaxRecsEvalEvents = limits.RecsEvalEvents

// RecsEvalOptions configures an offline evaluation of the recommender.
type RecsEvalOptions struct {
	Interactions string  // the log, in the data root
	K            int     // cut-off of the metrics; default 10
	Holdout      float64 // fraction of each user's items held out; default 0.2
	Seed         uint64  // of the split
	Mode         string  // user (default) or item
	Neighbors    int     // K of the similarity tables; default 50
}

// RecsEval holds out part of every user's items, builds the model on the
// rest and scores its top-K lists against the held-out items. The
// interaction log is read through root.
func RecsEval(ctx context.Context, root *dataroot.Root, o RecsEvalOptions) (recsys.Metrics, error) {
	if o.K == 0 {
		o.K = 10
	}
	if o.Holdout == 0 {
		o.Holdout = 0.2
	}
	switch {
	case o.Interactions == "":
		return recsys.Metrics{}, errors.New("interactions: required")
	case o.K < 1 || o.K > MaxRecsTop:
		return recsys.Metrics{}, fmt.Errorf("k: %d out of range [1, %d]", o.K, MaxRecsTop)
	case o.Mode != "" && o.Mode != RecsModeUser && o.Mode != RecsModeItem:
		return recsys.Metrics{}, fmt.Errorf("mode: %q (want %s or %s)", o.Mode, RecsModeUser, RecsModeItem)
	}
	events, err := readRecsEvents(root, o.Interactions)
	if err != nil {
		return recsys.Metrics{}, err
	}
	train, test, err := recsys.HoldoutSplit(events, o.Holdout, o.Seed)
	if err != nil {
		return recsys.Metrics{}, fmt.Errorf("holdout: %w", err)
	}
	st, err := recsys.NewStore(recsys.StoreConfig{})
	if err != nil {
		return recsys.Metrics{}, err
	}
	for _, ev := range train {
		if err := st.Add(ev); err != nil {
			return recsys.Metrics{}, fmt.Errorf("interactions: %w", err)
		}
	}
	m, err := recsys.Build(ctx, st, RecsConfig(o.Neighbors))
	if err != nil {
		return recsys.Metrics{}, err
	}
	opts := RecsRebuildArgs{Mode: o.Mode, Top: o.K}.recOptions()
	var recErr error
	met, err := recsys.Evaluate(o.K, m.Items(), test, func(user string) []string {
		recs, err := m.Recommend(user, opts)
		if err != nil {
			recErr = err
			return nil
		}
		out := make([]string, len(recs))
		for i, r := range recs {
			out[i] = r.Item
		}
		return out
	})
	if err == nil {
		err = recErr
	}
	return met, err
}

func readRecsEvents(root *dataroot.Root, path string) ([]recsys.Event, error) {
	format, err := recsys.FormatFromPath(path)
	if err != nil {
		return nil, fmt.Errorf("interactions: %w", err)
	}
	f, err := root.Open("interactions", path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var events []recsys.Event
	err = recsys.ReadEvents(f, format, recsys.DefaultLimits(), func(line int, ev recsys.Event) error {
		if len(events) >= MaxRecsEvalEvents {
			return fmt.Errorf("more than %d events", MaxRecsEvalEvents)
		}
		events = append(events, ev)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("interactions: %s: %w", path, err)
	}
	return events, nil
}

// execRecsEval is `worker exec recs-eval`: it prints the metrics as JSON.
func execRecsEval(ctx context.Context, d *Deps, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("worker exec recs-eval", flag.ContinueOnError)
	var o RecsEvalOptions
	fs.StringVar(&o.Interactions, "interactions", "", "interaction log (.csv or .jsonl), in the data root ($TANDEM_DATA_ROOT)")
	fs.IntVar(&o.K, "k", 10, "cut-off of precision, recall, nDCG and MAP")
	fs.Float64Var(&o.Holdout, "holdout", 0.2, "fraction of each user's items held out, in (0, 1)")
	fs.Uint64Var(&o.Seed, "seed", 1, "seed of the holdout split")
	fs.StringVar(&o.Mode, "mode", RecsModeUser, "user (user-kNN) or item (item-kNN)")
	fs.IntVar(&o.Neighbors, "neighbors", 50, "neighbours kept per user and per item (K)")
	if _, err := pipeline.ParseArgs(fs, args); err != nil {
		return err
	}
	root, err := d.DataRoot()
	if err != nil {
		return err
	}
	met, err := RecsEval(ctx, root, o)
	if err != nil {
		return err
	}
	return writeJSON(stdout, met)
}
