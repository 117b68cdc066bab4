package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/tandem-ai/tandem/dataroot"
	"github.com/tandem-ai/tandem/finetune"
	"github.com/tandem-ai/tandem/generation"
	"github.com/tandem-ai/tandem/gpu"
	"github.com/tandem-ai/tandem/limits"
	"github.com/tandem-ai/tandem/model"
	"github.com/tandem-ai/tandem/pipeline"
	"github.com/tandem-ai/tandem/registry"
)

// KindFinetune is the stable kind string of FinetuneArgs.
const KindFinetune = "finetune"

// FinetuneArgs asks a worker to train a model on a dataset file. The model
// is a base to fine-tune (a directory, a registered "name" or "name@N", or
// builtin:NAME for a fresh model of that shape) or InitConfig for a fresh
// model of any shape. Zero hyper-parameters take finetune's defaults.
type FinetuneArgs struct {
	Model      string        `json:"model,omitempty"` // a directory in the data root, name[@N], builtin:NAME
	InitConfig *model.Config `json:"init_config,omitempty"`
	Data       string        `json:"data"`             // the dataset, in the data root
	Format     string        `json:"format,omitempty"` // text or jsonl; default from the file name
	// Out is the run directory (model, checkpoint, loss.png, result.json)
	// in the data root; default finetune/<job id>. A retried job finds its
	// checkpoint there and resumes.
	Out string `json:"out,omitempty"`

	Epochs          int     `json:"epochs,omitempty"`
	BatchSize       int     `json:"batch_size,omitempty"`
	SeqLen          int     `json:"seq_len,omitempty"`
	Accum           int     `json:"accum,omitempty"`
	LR              float64 `json:"lr,omitempty"`
	MinLR           float64 `json:"min_lr,omitempty"`
	Warmup          int     `json:"warmup,omitempty"`
	Schedule        string  `json:"schedule,omitempty"`
	WeightDecay     float64 `json:"weight_decay,omitempty"`
	MaxGradNorm     float64 `json:"max_grad_norm,omitempty"`
	DevFrac         float64 `json:"dev_frac,omitempty"`
	TestFrac        float64 `json:"test_frac,omitempty"`
	Patience        int     `json:"patience,omitempty"`
	Seed            int64   `json:"seed,omitempty"`
	CheckpointEvery int     `json:"checkpoint_every,omitempty"`
	GenEval         int     `json:"gen_eval,omitempty"`
	GenMaxTokens    int     `json:"gen_max_tokens,omitempty"`

	// Register adds the trained model to the registry as the next version
	// of this name; Promote also makes it the version "name" resolves to.
	Register string `json:"register,omitempty"`
	Promote  bool   `json:"promote,omitempty"`
}

// Kind implements pipeline.JobArgs.
func (FinetuneArgs) Kind() string { return KindFinetune }

// jobPaths implements pathArgs.
func (a FinetuneArgs) jobPaths() []JobPath {
	return []JobPath{{"model", a.Model}, {"data", a.Data}, {"out", a.Out}}
}

// KindOptions implements pipeline.KindOptioner: fine-tuning has a queue of
// its own so it never starves generation.
func (FinetuneArgs) KindOptions() pipeline.KindOptions {
	return pipeline.KindOptions{Queue: pipeline.QueueFinetune, MaxRetry: 10, Timeout: 24 * time.Hour}
}

// Validate implements pipeline.Validator. It checks the args' shape; the
// dataset is checked by the worker before training starts.
func (a FinetuneArgs) Validate() error {
	o, err := a.options("")
	if err != nil {
		return err
	}
	if err := o.WithDefaults().Validate(); err != nil {
		return err
	}
	if a.Register != "" {
		if err := registry.ValidateName(a.Register); err != nil {
			return fmt.Errorf("register: %w", err)
		}
	} else if a.Promote {
		return errors.New("promote: needs register")
	}
	if a.Out != "" {
		if err := dataroot.CheckPath("out", a.Out); err != nil {
			return err
		}
	}
	if a.Model != "" {
		if err := checkModelPath("model", a.Model); err != nil {
			return err
		}
	}
	return dataroot.CheckPath("data", a.Data)
}

// options maps the args onto finetune.Options; baseDir is the resolved
// base model directory ("" before resolution).
func (a FinetuneArgs) options(baseDir string) (finetune.Options, error) {
	o := finetune.Options{Data: a.Data, Format: a.Format, OutDir: a.Out, Epochs: a.Epochs, BatchSize: a.BatchSize, SeqLen: a.SeqLen,
		Accum: a.Accum, LR: a.LR, MinLR: a.MinLR, Warmup: a.Warmup, Schedule: a.Schedule, WeightDecay: a.WeightDecay,
		MaxGradNorm: a.MaxGradNorm, DevFrac: a.DevFrac, TestFrac: a.TestFrac, Patience: a.Patience, Seed: a.Seed,
		CheckpointEvery: a.CheckpointEvery, GenEval: a.GenEval, GenMaxTokens: a.GenMaxTokens}
	switch {
	case a.Model != "" && a.InitConfig != nil:
		return o, errors.New("model: give model or init_config, not both")
	case a.InitConfig != nil:
		c := *a.InitConfig
		if c.LayerNormEpsilon == 0 {
			c.LayerNormEpsilon = model.DefaultLayerNormEpsilon
		}
		o.InitConfig = &c
	case strings.HasPrefix(a.Model, generation.BuiltinPrefix):
		c, ok := generation.BuiltinConfigs[strings.TrimPrefix(a.Model, generation.BuiltinPrefix)]
		if !ok {
			return o, fmt.Errorf("model: unknown builtin %q", a.Model)
		}
		o.InitConfig = &c // a builtin's shape, trained from scratch
	case a.Model != "":
		o.BaseModel = a.Model
		if baseDir != "" {
			o.BaseModel = baseDir
		}
	default:
		return o, errors.New("model: required (a model directory, a registered name, builtin:NAME, or init_config)")
	}
	return o, nil
}

// FinetuneStatus is a run's progress while it trains and its outcome when
// done: the task's result, the progress events' payload and what
// `producer finetune --wait` draws its bar from.
type FinetuneStatus struct {
	RunID        string                `json:"run_id"`
	State        string                `json:"state"`      // "training" or "done"
	Out          string                `json:"out"`        // absolute path on the worker's file system
	LossCurve    string                `json:"loss_curve"` // likewise
	Epoch        int                   `json:"epoch,omitempty"`
	Step         int                   `json:"step,omitempty"`
	TotalSteps   int                   `json:"total_steps,omitempty"`
	Loss         float64               `json:"loss,omitempty"`
	LR           float64               `json:"lr,omitempty"`
	TokensPerSec float64               `json:"tokens_per_sec,omitempty"`
	Epochs       []finetune.EpochStats `json:"epochs,omitempty"`
	Result       *finetune.Result      `json:"result,omitempty"`
	Version      string                `json:"version,omitempty"` // registered as name@N
	Promoted     bool                  `json:"promoted,omitempty"`
}

// FinetuneWorker runs finetune jobs.
type FinetuneWorker struct{ Deps *Deps }

// Work implements pipeline.Worker.
func (w FinetuneWorker) Work(ctx context.Context, job *pipeline.Job[FinetuneArgs]) error {
	a := job.Args
	if a.Out == "" {
		a.Out = DefaultFinetuneOut(job.ID)
	}
	var lastWrite time.Time
	report := func(st FinetuneStatus, force bool) {
		if w.Deps != nil && w.Deps.Bus != nil {
			if subj := pipeline.FinetuneProgressSubject(job.ID); subj != "" {
				_ = w.Deps.Bus.PublishCore(subj, st) // progress is best effort
			}
		}
		if job.ResultWriter != nil && (force || time.Since(lastWrite) >= time.Second) {
			if b, err := json.Marshal(st); err == nil {
				_, _ = job.ResultWriter.Write(b)
				lastWrite = time.Now()
			}
		}
	}
	st, err := w.run(ctx, job.ID, a, report, nil)
	if err != nil {
		return err
	}
	report(st, true)
	return nil
}

// DefaultFinetuneOut is the run directory of a finetune job that names
// none, relative to the data root.
func DefaultFinetuneOut(jobID string) string { return path.Join("finetune", jobID) }

// run trains, registers when asked, and returns the final status. Every
// file it touches is in the data root, except a registered base model's
// directory, which the registry owns.
func (w FinetuneWorker) run(ctx context.Context, runID string, a FinetuneArgs, report func(FinetuneStatus, bool), onEpoch func(finetune.EpochStats)) (FinetuneStatus, error) {
	st := FinetuneStatus{RunID: runID, State: "training", Out: a.Out}
	root, err := w.Deps.DataRoot()
	if err != nil {
		return st, err
	}
	data, err := root.Name("data", a.Data)
	if err == nil {
		_, err = root.Stat("data", a.Data)
	}
	if err != nil {
		return st, pipeline.Permanent(err)
	}
	base, err := resolveBase(ctx, w.Deps, root, a.Model)
	if err != nil {
		return st, err
	}
	if base.root != nil {
		defer base.root.Close()
	}
	out, err := root.MkdirAll("out", a.Out)
	if err != nil {
		return st, pipeline.Permanent(err)
	}
	st.Out, st.LossCurve = root.Path(out), root.Path(path.Join(out, finetune.CurveFile))
	o, err := a.options(base.dir)
	if err != nil {
		return st, pipeline.Permanent(err)
	}
	o.Root, o.Data, o.OutDir, o.BaseRoot = root.OS(), data, out, base.root
	hooks := finetune.Hooks{
		OnStep: func(e finetune.StepEvent) {
			finetune.ObserveStep(e)
			st.Epoch, st.Step, st.TotalSteps, st.Loss, st.LR, st.TokensPerSec = e.Epoch, e.Step, e.TotalSteps, e.Loss, e.LR, e.TokensPerSec
			if report != nil {
				report(st, false)
			}
		},
		OnEpoch: func(s finetune.EpochStats) {
			finetune.ObserveEpoch(s)
			st.Epochs = append(st.Epochs, s)
			if report != nil {
				report(st, true)
			}
			if onEpoch != nil {
				onEpoch(s)
			}
		},
	}
	hooks.Backend = trainBackend(w.Deps.Device)
	res, err := finetune.Run(ctx, o, hooks)
	if err != nil {
		if errors.Is(err, finetune.ErrBadDataset) || isOptionError(err) || dataroot.IsRefused(err) {
			return st, pipeline.Permanent(err)
		}
		return st, err
	}
	res.OutDir = st.Out
	st.State, st.Result, st.Epochs = "done", res, res.Epochs
	if a.Register != "" {
		v, err := registerRun(ctx, w.Deps, root, out, a, res, base.parent)
		if err != nil {
			return st, err
		}
		st.Version, st.Promoted = v.Ref(), v.Promoted
	}
	return st, nil
}

// isOptionError reports errors of bad options (not worth a retry).
func isOptionError(err error) bool {
	var fe *pipeline.FieldError
	msg := err.Error()
	return errors.As(err, &fe) || strings.HasPrefix(msg, "out: ") || strings.HasPrefix(msg, "model: ")
}

// baseModel is a finetune's starting point: no directory (from scratch or
// a builtin's shape), or an open directory with the name records give it.
type baseModel struct {
	root   *os.Root // nil: none
	dir    string   // absolute path of root, for records ("" with no root)
	parent string   // how the registry records where training started
}

// resolveBase opens the base model a reference names: a directory in the
// data root, or a registered name through deps' registry.
func resolveBase(ctx context.Context, deps *Deps, root *dataroot.Root, ref string) (baseModel, error) {
	if ref == "" {
		return baseModel{parent: "scratch"}, nil
	}
	if strings.HasPrefix(ref, generation.BuiltinPrefix) {
		return baseModel{parent: ref}, nil
	}
	st, err := root.Stat("model", ref)
	switch {
	case err == nil && st.IsDir():
		d, err := root.OpenDir("model", ref)
		if err != nil {
			return baseModel{}, pipeline.Permanent(err)
		}
		name, _ := root.Name("model", ref) // accepted by OpenDir
		return baseModel{root: d, dir: root.Path(name), parent: root.Path(name)}, nil
	case dataroot.IsRefused(err):
		return baseModel{}, err
	}
	if _, _, perr := registry.ParseRef(ref); perr != nil {
		return baseModel{}, pipeline.Permanent(fmt.Errorf("model: %q is neither a directory in the data root %s nor a registry name", ref, root.Dir()))
	}
	reg, err := registryOf(deps)
	if err != nil {
		return baseModel{}, err
	}
	name, version, _ := registry.ParseRef(ref)
	v, err := reg.Get(ctx, name, version)
	if err != nil {
		if errors.Is(err, registry.ErrNotFound) || errors.Is(err, registry.ErrNoPromoted) {
			return baseModel{}, pipeline.Permanent(fmt.Errorf("model: %w", err))
		}
		return baseModel{}, err
	}
	// The registry wrote this directory; it may lie outside the data root.
	d, err := os.OpenRoot(v.Artifact)
	if err != nil {
		return baseModel{}, fmt.Errorf("model %s: %w", v.Ref(), err)
	}
	return baseModel{root: d, dir: v.Artifact, parent: v.Ref()}, nil
}

// registeredFile remembers a run's registration in its directory, so a
// retried job does not register the same run twice.
const registeredFile = "registered.json"

// registerRun registers the model in out, a run directory in root, in d's
// registry.
func registerRun(ctx context.Context, d *Deps, root *dataroot.Root, out string, a FinetuneArgs, res *finetune.Result, parent string) (registry.Version, error) {
	marker := path.Join(out, registeredFile)
	b, err := root.ReadFile("out", marker, limits.RunMarkerBytes)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return registry.Version{}, pipeline.Permanent(err) // not a marker this worker wrote
	}
	reg, rerr := registryOf(d)
	if rerr != nil {
		return registry.Version{}, rerr
	}
	if err == nil {
		var v registry.Version
		if json.Unmarshal(b, &v) == nil && v.Version > 0 {
			return reg.Get(ctx, v.Name, v.Version)
		}
	}
	hp, _ := json.Marshal(res.Options)
	metrics := map[string]float64{"test_loss": res.TestLoss, "test_ppl": res.TestPPL, "best_dev_loss": res.BestDevLoss}
	if res.BLEU != nil {
		metrics["bleu"] = *res.BLEU
	}
	if res.ROUGEL != nil {
		metrics["rouge_l"] = *res.ROUGEL
	}
	src, err := root.OpenDir("out", out)
	if err != nil {
		return registry.Version{}, err
	}
	defer src.Close()
	v, err := reg.RegisterFrom(ctx, a.Register, src, registry.Version{Parent: parent, DatasetSHA256: res.DatasetDigest, Hyperparams: hp, Metrics: metrics})
	if err != nil {
		return v, err
	}
	if b, err := json.Marshal(v); err == nil {
		_ = root.WriteFile("out", marker, func(w io.Writer) error { _, err := w.Write(b); return err })
	}
	if a.Promote {
		return reg.Promote(ctx, v.Name, v.Version)
	}
	return v, nil
}

// RegistryDir is the registry's artifact root under a data directory.
func RegistryDir(dataDir string) string { return filepath.Join(dataDir, "registry") }

// BindFinetuneFlags registers the flags of `worker exec finetune` and
// `producer finetune` on fs, filling a. Call a.ApplyInitConfig with the
// returned path after parsing.
func BindFinetuneFlags(fs *flag.FlagSet, a *FinetuneArgs) (initConfig *string) {
	initConfig = new(string)
	fs.StringVar(&a.Model, "model", "", "base model: directory, registered name[@N], or builtin:NAME (fresh weights of that shape)")
	fs.StringVar(initConfig, "init-config", "", "config.json of a fresh model to train from scratch")
	fs.StringVar(&a.Data, "data", "", "dataset: text (one example per line) or JSONL of {\"prompt\",\"completion\"}")
	fs.StringVar(&a.Format, "format", "", "text or jsonl (default: from the file name)")
	fs.StringVar(&a.Out, "out", "", "run directory: the trained model, checkpoint, loss.png, result.json")
	fs.IntVar(&a.Epochs, "epochs", 0, "epochs (default 3)")
	fs.IntVar(&a.BatchSize, "batch", 0, "rows per micro-batch (default 8)")
	fs.IntVar(&a.SeqLen, "seq", 0, "tokens per row (default 128, at most n_positions)")
	fs.IntVar(&a.Accum, "accum", 0, "micro-batches per optimizer step (default 1)")
	fs.Float64Var(&a.LR, "lr", 0, "peak learning rate (default 2e-5 for a base model, 1e-3 from scratch)")
	fs.Float64Var(&a.MinLR, "min-lr", 0, "final learning rate of the cosine schedule (default lr/10)")
	fs.IntVar(&a.Warmup, "warmup", 0, "warmup steps (0: 5% of the steps, at most 100; -1: none)")
	fs.StringVar(&a.Schedule, "schedule", "", "cosine or constant")
	fs.Float64Var(&a.WeightDecay, "weight-decay", 0, "AdamW weight decay (default 0.01)")
	fs.Float64Var(&a.MaxGradNorm, "clip", 0, "gradient norm clip (default 1)")
	fs.Float64Var(&a.DevFrac, "dev-frac", 0, "dev fraction (default 0.1)")
	fs.Float64Var(&a.TestFrac, "test-frac", 0, "test fraction (default 0.1)")
	fs.IntVar(&a.Patience, "patience", 0, "stop after this many epochs without a better dev loss (0: never)")
	fs.Int64Var(&a.Seed, "seed", 0, "seed of the split, the data order and a fresh model's weights")
	fs.IntVar(&a.CheckpointEvery, "checkpoint-every", 0, "also checkpoint every N steps (epoch ends always do)")
	fs.IntVar(&a.GenEval, "gen-eval", 0, "score BLEU and ROUGE-L of this many test generations (JSONL data)")
	fs.StringVar(&a.Register, "register", "", "register the result under this model name (needs Redis)")
	fs.BoolVar(&a.Promote, "promote", false, "promote the registered version")
	return initConfig
}

// ApplyInitConfig reads a config.json into InitConfig ("" does nothing).
func (a *FinetuneArgs) ApplyInitConfig(path string) error {
	if path == "" {
		return nil
	}
	b, err := readBounded(path, limits.ModelConfigBytes)
	if err != nil {
		return fmt.Errorf("init-config: %w", err)
	}
	c, err := model.ParseConfig(b)
	if err != nil {
		return fmt.Errorf("init-config: %w", err)
	}
	a.InitConfig = &c
	return nil
}

func execFinetune(ctx context.Context, d *Deps, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("worker exec finetune", flag.ContinueOnError)
	var a FinetuneArgs
	initConfig := BindFinetuneFlags(fs, &a)
	if _, err := pipeline.ParseArgs(fs, args); err != nil {
		return err
	}
	if err := a.ApplyInitConfig(*initConfig); err != nil {
		return err
	}
	if a.Out == "" {
		return errors.New("out: required")
	}
	if err := a.Validate(); err != nil {
		return err
	}
	onEpoch := func(s finetune.EpochStats) {
		_ = writeJSON(stdout, map[string]any{"epoch": s.Epoch, "train_loss": s.TrainLoss, "dev_loss": s.DevLoss, "dev_ppl": s.DevPPL})
	}
	st, err := FinetuneWorker{Deps: d}.run(ctx, "exec", a, nil, onEpoch)
	if err != nil {
		return err
	}
	final := map[string]any{"test_loss": st.Result.TestLoss, "test_ppl": st.Result.TestPPL, "out": st.Out, "loss_curve": st.LossCurve}
	if st.Result.BLEU != nil {
		final["bleu"], final["rouge_l"] = *st.Result.BLEU, *st.Result.ROUGEL
	}
	if st.Version != "" {
		final["version"] = st.Version
	}
	return writeJSON(stdout, final)
}

// ServingChange implements ServingChanger.
func (a FinetuneArgs) ServingChange() string {
	if a.Promote {
		return `field "promote": promoting a version changes the model every job of that name uses`
	}
	return ""
}

// trainBackend is the fine-tuning hook: on a GPU worker each run trains on
// the device and scores its best weights there (see finetune.Hooks.Backend).
func trainBackend(d *gpu.Device) func(m *model.Model) (model.TrainBackend, error) {
	if d == nil {
		return nil
	}
	return func(m *model.Model) (model.TrainBackend, error) {
		tr, err := d.NewTrainBackend(m)
		if err != nil {
			return nil, err
		}
		return tr, nil
	}
}
