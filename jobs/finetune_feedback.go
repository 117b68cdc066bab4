package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"time"

	"github.com/tandem-ai/tandem/finetune"
	"github.com/tandem-ai/tandem/pipeline"
	"github.com/tandem-ai/tandem/registry"
)

// KindFinetuneFeedback is the stable kind string of FinetuneFeedbackArgs.
const KindFinetuneFeedback = "finetune-feedback"

// DefaultFeedbackMinSamples is the fewest new samples that start a run.
const DefaultFeedbackMinSamples = 50

// FinetuneFeedbackArgs fine-tunes a registered model's promoted version on
// the generations people accepted or edited, and promotes the result only
// if its loss on a held-out slice of that feedback is no worse than the
// current version's. The scheduler runs it on a cron (the schedule entry
// sets the spec; MinSamples keeps it from training on a handful).
type FinetuneFeedbackArgs struct {
	Model string `json:"model"` // registered model name
	// Collection is the feedback collection; default the model name.
	Collection string `json:"collection,omitempty"`
	// MinSamples is how many samples beyond those of the last run are
	// needed; fewer and the job ends without training.
	MinSamples int `json:"min_samples,omitempty"`
	// HoldoutFrac is the share of samples held out (half dev, half test).
	HoldoutFrac float64 `json:"holdout_frac,omitempty"`
	Epochs      int     `json:"epochs,omitempty"`
	BatchSize   int     `json:"batch_size,omitempty"`
	SeqLen      int     `json:"seq_len,omitempty"`
	LR          float64 `json:"lr,omitempty"`
	Seed        int64   `json:"seed,omitempty"`
}

// Kind implements pipeline.JobArgs.
func (FinetuneFeedbackArgs) Kind() string { return KindFinetuneFeedback }

// KindOptions implements pipeline.KindOptioner.
func (FinetuneFeedbackArgs) KindOptions() pipeline.KindOptions {
	return pipeline.KindOptions{Queue: pipeline.QueueFinetune, MaxRetry: 5, Timeout: 12 * time.Hour}
}

func (a FinetuneFeedbackArgs) withDefaults() FinetuneFeedbackArgs {
	if a.Collection == "" {
		a.Collection = a.Model
	}
	if a.MinSamples == 0 {
		a.MinSamples = DefaultFeedbackMinSamples
	}
	if a.HoldoutFrac == 0 {
		a.HoldoutFrac = 0.2
	}
	return a
}

// Validate implements pipeline.Validator.
func (a FinetuneFeedbackArgs) Validate() error {
	a = a.withDefaults()
	if err := registry.ValidateName(a.Model); err != nil {
		return fmt.Errorf("model: %w", err)
	}
	if err := registry.ValidateName(a.Collection); err != nil {
		return fmt.Errorf("collection: %w", err)
	}
	switch {
	case a.MinSamples < finetune.MinExamples:
		return fmt.Errorf("min_samples: %d, want at least %d", a.MinSamples, finetune.MinExamples)
	case !(a.HoldoutFrac > 0 && a.HoldoutFrac < 0.9):
		return fmt.Errorf("holdout_frac: %g, want (0, 0.9)", a.HoldoutFrac)
	}
	return a.options("", "", "").WithDefaults().Validate()
}

func (a FinetuneFeedbackArgs) options(base, data, out string) finetune.Options {
	return finetune.Options{BaseModel: orDefault(base, "unset"), Data: orDefault(data, "unset"), Format: finetune.FormatJSONL, OutDir: out,
		Epochs: a.Epochs, BatchSize: a.BatchSize, SeqLen: a.SeqLen, LR: a.LR, Seed: a.Seed,
		DevFrac: a.HoldoutFrac / 2, TestFrac: a.HoldoutFrac / 2}
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// FeedbackRunResult is what a finetune-feedback job reports.
type FeedbackRunResult struct {
	Skipped     string  `json:"skipped,omitempty"` // why no training happened
	Samples     int     `json:"samples"`
	Base        string  `json:"base,omitempty"`    // name@N trained from
	Version     string  `json:"version,omitempty"` // name@N registered
	BaseDevLoss float64 `json:"base_dev_loss,omitempty"`
	NewDevLoss  float64 `json:"new_dev_loss,omitempty"`
	Promoted    bool    `json:"promoted"`
	Out         string  `json:"out,omitempty"`
}

// FinetuneFeedbackWorker runs finetune-feedback jobs.
type FinetuneFeedbackWorker struct{ Deps *Deps }

// Work implements pipeline.Worker.
func (w FinetuneFeedbackWorker) Work(ctx context.Context, job *pipeline.Job[FinetuneFeedbackArgs]) error {
	res, err := w.run(ctx, job.ID, job.Args)
	if err != nil {
		return err
	}
	if job.ResultWriter != nil {
		b, _ := json.Marshal(res)
		_, _ = job.ResultWriter.Write(b)
	}
	return nil
}

func (w FinetuneFeedbackWorker) run(ctx context.Context, runID string, a FinetuneFeedbackArgs) (FeedbackRunResult, error) {
	a = a.withDefaults()
	var res FeedbackRunResult
	rdb, err := redisOf(w.Deps)
	if err != nil {
		return res, err
	}
	reg, err := registryOf(w.Deps)
	if err != nil {
		return res, err
	}
	col, err := finetune.NewFeedbackCollector(rdb, a.Collection)
	if err != nil {
		return res, pipeline.Permanent(err)
	}
	n, err := col.Count(ctx)
	if err != nil {
		return res, err
	}
	trained, err := col.Trained(ctx)
	if err != nil {
		return res, err
	}
	res.Samples = n
	if n-trained < a.MinSamples {
		res.Skipped = fmt.Sprintf("%d new samples since the last run, need %d", n-trained, a.MinSamples)
		return res, nil
	}
	base, err := reg.Get(ctx, a.Model, 0)
	if err != nil {
		if errors.Is(err, registry.ErrNotFound) || errors.Is(err, registry.ErrNoPromoted) {
			return res, pipeline.Permanent(fmt.Errorf("model: %w", err))
		}
		return res, err
	}
	res.Base = base.Ref()
	if w.Deps.DataDir == "" {
		return res, errors.New("jobs: Deps.DataDir is not set: a feedback fine-tune writes its run under the data dir")
	}
	runDir := filepath.Join(w.Deps.DataDir, "finetune", runID)
	data := filepath.Join(runDir, "feedback.jsonl")
	if _, _, err := col.Export(ctx, data); err != nil {
		return res, err
	}
	out := filepath.Join(runDir, "model")
	o := a.options(base.Artifact, data, out)
	ft, err := finetune.Run(ctx, o, finetune.Hooks{OnStep: finetune.ObserveStep, OnEpoch: finetune.ObserveEpoch, Backend: trainBackend(w.Deps.Device)})
	if err != nil {
		if errors.Is(err, finetune.ErrBadDataset) {
			return res, pipeline.Permanent(err)
		}
		return res, err
	}
	res.Out = out
	// The base model's dev loss is measured on the same held-out slice
	// before the first step, so the two numbers compare like with like.
	res.BaseDevLoss, res.NewDevLoss = ft.InitialDevLoss, ft.BestDevLoss
	better := ft.BestDevLoss <= ft.InitialDevLoss
	hp, _ := json.Marshal(o)
	v, err := reg.Register(ctx, a.Model, out, registry.Version{Parent: base.Ref(), DatasetSHA256: ft.DatasetDigest, Hyperparams: hp,
		Metrics: map[string]float64{"base_dev_loss": ft.InitialDevLoss, "dev_loss": ft.BestDevLoss, "test_loss": ft.TestLoss, "test_ppl": ft.TestPPL}})
	if err != nil {
		return res, err
	}
	res.Version = v.Ref()
	if better {
		if _, err := reg.Promote(ctx, a.Model, v.Version); err != nil {
			return res, err
		}
		res.Promoted = true
	}
	if err := col.MarkTrained(ctx, n); err != nil {
		return res, err
	}
	if w.Deps != nil && w.Deps.Logger != nil {
		w.Deps.Logger.Info("feedback fine-tune", "model", a.Model, "version", res.Version, "promoted", res.Promoted,
			"base_dev_loss", res.BaseDevLoss, "new_dev_loss", res.NewDevLoss)
	}
	return res, nil
}

func execFinetuneFeedback(ctx context.Context, d *Deps, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("worker exec finetune-feedback", flag.ContinueOnError)
	var a FinetuneFeedbackArgs
	fs.StringVar(&a.Model, "model", "", "registered model name")
	fs.StringVar(&a.Collection, "collection", "", "feedback collection (default: the model name)")
	fs.IntVar(&a.MinSamples, "min-samples", 0, "new samples needed to train (default 50)")
	fs.Float64Var(&a.HoldoutFrac, "holdout", 0, "held-out share of the samples (default 0.2)")
	fs.IntVar(&a.Epochs, "epochs", 0, "epochs (default 3)")
	fs.IntVar(&a.BatchSize, "batch", 0, "rows per batch (default 8)")
	fs.IntVar(&a.SeqLen, "seq", 0, "tokens per row (default 128)")
	fs.Float64Var(&a.LR, "lr", 0, "learning rate (default 2e-5)")
	fs.Int64Var(&a.Seed, "seed", 0, "seed")
	if _, err := pipeline.ParseArgs(fs, args); err != nil {
		return err
	}
	if err := a.Validate(); err != nil {
		return err
	}
	res, err := FinetuneFeedbackWorker{Deps: d}.run(ctx, "exec-"+time.Now().UTC().Format("20060102T150405"), a)
	if err != nil {
		return err
	}
	return writeJSON(stdout, res)
}

// ServingChange implements ServingChanger.
func (a FinetuneFeedbackArgs) ServingChange() string {
	return `kind "finetune-feedback": it promotes its result when the dev loss holds, which changes the model every job of that name uses`
}
