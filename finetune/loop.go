package finetune

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/tandem-ai/tandem/atomicfile"
	"github.com/tandem-ai/tandem/dataroot"
	"github.com/tandem-ai/tandem/model"
)

// Files a run writes in its OutDir besides the model itself.
const (
	BestDir    = "best"        // model with the lowest dev loss so far
	CurveFile  = "loss.png"    // loss curve
	ResultFile = "result.json" // final Result
)

// StepEvent reports one optimizer step.
type StepEvent struct {
	Epoch        int     `json:"epoch"` // 1-based
	Step         int     `json:"step"`  // optimizer steps so far
	TotalSteps   int     `json:"total_steps"`
	Loss         float64 `json:"loss"`
	LR           float64 `json:"lr"`
	GradNorm     float64 `json:"grad_norm"`
	TokensPerSec float64 `json:"tokens_per_sec"`
	Skipped      bool    `json:"skipped,omitempty"`
}

// Hooks observe a run; every field may be nil. They run on the training
// goroutine, so they should be quick.
type Hooks struct {
	OnStep       func(StepEvent)
	OnEpoch      func(EpochStats)
	OnCheckpoint func(path string, st State)
	// Backend, when set, makes the accelerator the run trains on (a GPU
	// worker's gpu.Trainer): it gets the model once it is loaded or
	// resumed, optimizer steps and dev-set evaluations run there, and the
	// host copy is synchronised before every checkpoint and saved model.
	// It is closed at the end of the run when it implements io.Closer.
	// When it also implements model.ScoringBackend (gpu.Trainer does), the
	// final test-set evaluation and GenEval run there too, on the best
	// epoch's weights; otherwise they run on the CPU. Either way the done
	// checkpoint holds the last step's parameters and moments.
	Backend func(m *model.Model) (model.TrainBackend, error)
}

// Result is a finished run.
type Result struct {
	OutDir         string       `json:"out_dir"`
	DatasetDigest  string       `json:"dataset_sha256"`
	Examples       [3]int       `json:"examples"` // train, dev, test
	Steps          int          `json:"steps"`
	Epochs         []EpochStats `json:"epochs"`
	InitialDevLoss float64      `json:"initial_dev_loss"`
	BestDevLoss    float64      `json:"best_dev_loss"`
	BestEpoch      int          `json:"best_epoch"`
	TestLoss       float64      `json:"test_loss"`
	TestPPL        float64      `json:"test_ppl"`
	BLEU           *float64     `json:"bleu,omitempty"`
	ROUGEL         *float64     `json:"rouge_l,omitempty"`
	StoppedEarly   bool         `json:"stopped_early,omitempty"`
	// ResumedAt is the optimizer step the run resumed from (0: fresh).
	ResumedAt int     `json:"resumed_at,omitempty"`
	Options   Options `json:"options"`
}

// run is one training run's working state.
type run struct {
	opts    Options
	hooks   Hooks
	tok     *model.Tokenizer
	ds      *Dataset
	split   Split
	train   []Row
	dev     []Row
	test    []Row
	T       int
	m       *model.Model
	opt     *model.AdamW
	trainer *model.Trainer
	st      State
	out     *os.Root // OutDir, open: every file of the run goes through it
	perStep int      // rows per optimizer step
	steps   int      // optimizer steps per epoch
}

// Run trains according to opts and writes the results into opts.OutDir.
// When OutDir holds a checkpoint of the same run (same options and
// dataset), training resumes from it; a finished run returns its stored
// result. Cancelling ctx checkpoints and returns ctx's error. With
// opts.Root set, Data and OutDir are read and written through it only.
func Run(ctx context.Context, opts Options, hooks Hooks) (*Result, error) {
	opts = opts.WithDefaults()
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	if opts.OutDir == "" {
		return nil, errors.New("out: required")
	}
	tok, err := model.NewTokenizer()
	if err != nil {
		return nil, err
	}
	ds, err := opts.loadDataset(tok)
	if err != nil {
		return nil, err
	}
	out, err := opts.openOut()
	if err != nil {
		return nil, err
	}
	defer out.Close()
	r := &run{opts: opts, hooks: hooks, tok: tok, ds: ds, out: out}
	if err := r.prepare(); err != nil {
		return nil, err
	}
	if c, ok := r.trainer.Backend.(io.Closer); ok {
		defer c.Close()
	}
	if r.st.Done {
		return r.readResult()
	}
	return r.loop(ctx)
}

// loadDataset reads Data, through Root when it is set.
func (o Options) loadDataset(tok *model.Tokenizer) (*Dataset, error) {
	if o.Root == nil {
		return LoadDataset(o.Data, o.Format, tok)
	}
	f, err := dataroot.OpenRegular(o.Root, o.Data, os.O_RDONLY, 0)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadDataset, err)
	}
	defer f.Close()
	return readDataset(f, o.Data, o.Format, tok)
}

// openOut creates OutDir if needed and opens it, through Root when set.
func (o Options) openOut() (*os.Root, error) {
	if o.Root == nil {
		if err := os.MkdirAll(o.OutDir, 0o755); err != nil {
			return nil, fmt.Errorf("out: %w", err)
		}
		out, err := os.OpenRoot(o.OutDir)
		if err != nil {
			return nil, fmt.Errorf("out: %w", err)
		}
		return out, nil
	}
	if err := o.Root.MkdirAll(o.OutDir, 0o755); err != nil {
		return nil, fmt.Errorf("out: %w", err)
	}
	out, err := o.Root.OpenRoot(o.OutDir)
	if err != nil {
		return nil, fmt.Errorf("out: %w", err)
	}
	return out, nil
}

// prepare splits the data, loads or resumes the model and sizes the run.
func (r *run) prepare() error {
	o := r.opts
	sp, err := SplitExamples(r.ds.Examples, o.DevFrac, o.TestFrac, o.Seed)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrBadDataset, err)
	}
	r.split = sp
	key := o.runKey(r.ds.Digest)
	ck, err := loadCheckpoint(r.out.Open, CheckpointFile, filepath.Join(o.OutDir, CheckpointFile))
	switch {
	case errors.Is(err, ErrNoCheckpoint):
		if err := r.freshModel(); err != nil {
			return err
		}
		r.st = State{RunKey: key, Config: r.m.Config, BestDevLoss: math.MaxFloat64}
	case err != nil:
		return err
	default:
		if ck.State.RunKey != key {
			return fmt.Errorf("out: %s holds a checkpoint of a different run (other options or dataset); use a new output directory", o.OutDir)
		}
		r.m, err = model.New(ck.State.Config, 0)
		if err != nil {
			return err
		}
		if len(ck.Params) != len(r.m.Params) {
			return fmt.Errorf("checkpoint: %d params, config needs %d", len(ck.Params), len(r.m.Params))
		}
		r.m.Params = ck.Params
		r.st = ck.State
		r.opt = model.NewAdamW(float32(o.LR), float32(o.WeightDecay))
		if err := r.opt.SetState(ck.Opt, len(r.m.Params)); err != nil {
			return err
		}
	}
	if r.opt == nil {
		r.opt = model.NewAdamW(float32(o.LR), float32(o.WeightDecay))
	}
	r.T = min(o.SeqLen, r.m.Config.NPositions)
	r.train, r.dev, r.test = PackRows(sp.Train, r.T), PackRows(sp.Dev, r.T), PackRows(sp.Test, r.T)
	if len(r.train) == 0 || len(r.dev) == 0 || len(r.test) == 0 {
		return fmt.Errorf("%w: train, dev and test splits need tokens (have %d, %d and %d rows)", ErrBadDataset, len(r.train), len(r.dev), len(r.test))
	}
	r.perStep = o.BatchSize * o.Accum
	r.steps = (len(r.train) + r.perStep - 1) / r.perStep
	total := r.steps * o.Epochs
	if total > MaxTotalSteps {
		return fmt.Errorf("epochs: %d steps in all, limit %d", total, MaxTotalSteps)
	}
	warmup := o.Warmup
	switch {
	case warmup == -1:
		warmup = 0
	case warmup == 0:
		warmup = min(100, max(1, total/20))
	}
	r.trainer = &model.Trainer{Model: r.m, Opt: r.opt, MaxGradNorm: float32(o.MaxGradNorm), Warmup: warmup, MinLR: float32(o.MinLR)}
	if o.Schedule == ScheduleCosine {
		r.trainer.TotalSteps = total
	}
	if r.hooks.Backend != nil && !r.st.Done {
		b, err := r.hooks.Backend(r.m)
		if err != nil {
			return fmt.Errorf("accelerator: %w", err)
		}
		r.trainer.Backend = b
	}
	return nil
}

func (r *run) freshModel() error {
	o := r.opts
	var err error
	switch {
	case o.InitConfig != nil:
		r.m, err = model.New(*o.InitConfig, o.Seed)
	case o.BaseRoot != nil:
		r.m, err = model.LoadRoot(o.BaseRoot, ".")
		if err != nil {
			err = fmt.Errorf("model: %w", err)
		}
	default:
		r.m, err = model.LoadDir(o.BaseModel)
		if err != nil {
			err = fmt.Errorf("model: %w", err)
		}
	}
	if err != nil {
		return err
	}
	if r.m.Config.VocabSize < r.tok.VocabSize() {
		return fmt.Errorf("model: vocab_size %d is smaller than the GPT-2 tokenizer's %d", r.m.Config.VocabSize, r.tok.VocabSize())
	}
	return nil
}

func (r *run) loop(ctx context.Context) (*Result, error) {
	o := r.opts
	res := &Result{OutDir: o.OutDir, DatasetDigest: r.ds.Digest, Options: o,
		Examples: [3]int{len(r.split.Train), len(r.split.Dev), len(r.split.Test)}}
	res.ResumedAt = r.opt.Steps
	if r.opt.Steps == 0 && r.st.Epoch == 0 && r.st.StepInEpoch == 0 {
		l, err := r.evalRows(ctx, r.dev)
		if err != nil {
			return nil, err
		}
		r.st.InitialDevLoss = l
	}
	total := r.steps * o.Epochs
	// A run resumed after it stopped early (it died in finish) stays
	// stopped: the decision is the checkpointed BadEpochs, not a local.
	stopped := r.stopsEarly()
	res.StoppedEarly = stopped
	for r.st.Epoch < o.Epochs && !stopped {
		e := r.st.Epoch
		pcg := rand.NewPCG(uint64(o.Seed), uint64(e)+0x65706f6368) // stream per epoch
		if len(r.st.RNG) > 0 && r.st.StepInEpoch > 0 {
			if err := pcg.UnmarshalBinary(r.st.RNG); err != nil {
				return nil, fmt.Errorf("checkpoint: rng state: %w", err)
			}
		}
		rngState, _ := pcg.MarshalBinary()
		r.st.RNG = rngState
		perm := rand.New(pcg).Perm(len(r.train))
		for s := r.st.StepInEpoch; s < r.steps; s++ {
			if err := ctx.Err(); err != nil {
				if cerr := r.checkpoint(); cerr != nil {
					return nil, errors.Join(err, cerr)
				}
				return nil, err
			}
			start := time.Now()
			batches := r.stepBatches(perm, s)
			sr, err := r.trainer.Step(batches...)
			if err != nil {
				return nil, err
			}
			ntok := 0
			for _, b := range batches {
				ntok += b.B * b.T
			}
			r.st.StepInEpoch = s + 1
			r.st.EpochTrainLoss += float64(sr.Loss)
			r.st.EpochSteps++
			r.st.StepLosses = append(r.st.StepLosses, sr.Loss)
			if r.hooks.OnStep != nil {
				r.hooks.OnStep(StepEvent{Epoch: e + 1, Step: sr.Step, TotalSteps: total, Loss: float64(sr.Loss), LR: float64(sr.LR),
					GradNorm: float64(sr.GradNorm), TokensPerSec: float64(ntok) / max(time.Since(start).Seconds(), 1e-9), Skipped: sr.Skipped})
			}
			if o.CheckpointEvery > 0 && sr.Step%o.CheckpointEvery == 0 && s+1 < r.steps {
				if err := r.checkpoint(); err != nil {
					return nil, err
				}
			}
		}
		stats, err := r.endEpoch(ctx, e)
		if err != nil {
			return nil, err
		}
		res.Epochs = r.st.Epochs
		if r.hooks.OnEpoch != nil {
			r.hooks.OnEpoch(stats)
		}
		if r.stopsEarly() {
			stopped = true
			res.StoppedEarly = true
		}
	}
	return r.finish(ctx, res)
}

// stopsEarly reports whether Patience ends the run before its last epoch.
func (r *run) stopsEarly() bool {
	return r.opts.Patience > 0 && r.st.BadEpochs >= r.opts.Patience && r.st.Epoch < r.opts.Epochs
}

// stepBatches are the micro-batches of step s of the epoch order perm.
func (r *run) stepBatches(perm []int, s int) []model.Batch {
	B := r.opts.BatchSize
	var out []model.Batch
	for k := 0; k < r.opts.Accum; k++ {
		lo := s*r.perStep + k*B
		if lo >= len(perm) {
			break
		}
		hi := min(lo+B, len(perm))
		rows := make([]Row, 0, hi-lo)
		for _, i := range perm[lo:hi] {
			rows = append(rows, r.train[i])
		}
		out = append(out, batchOf(rows, r.T))
	}
	return out
}

// endEpoch evaluates on dev, keeps the best model, checkpoints and redraws
// the curve.
func (r *run) endEpoch(ctx context.Context, e int) (EpochStats, error) {
	dev, err := r.evalRows(ctx, r.dev)
	if err != nil {
		return EpochStats{}, err
	}
	stats := EpochStats{Epoch: e + 1, Step: r.opt.Steps, TrainLoss: r.st.EpochTrainLoss / float64(max(r.st.EpochSteps, 1)), DevLoss: dev, DevPPL: math.Exp(dev)}
	r.st.Epochs = append(r.st.Epochs, stats)
	if dev < r.st.BestDevLoss {
		r.st.BestDevLoss, r.st.BestEpoch, r.st.BadEpochs = dev, e+1, 0
		if err := r.trainer.SyncHost(); err != nil {
			return stats, err
		}
		if err := r.m.SaveRoot(r.out, BestDir); err != nil {
			return stats, err
		}
	} else {
		r.st.BadEpochs++
	}
	r.st.Epoch, r.st.StepInEpoch, r.st.EpochTrainLoss, r.st.EpochSteps, r.st.RNG = e+1, 0, 0, 0, nil
	if err := r.checkpoint(); err != nil {
		return stats, err
	}
	if err := r.drawCurve(); err != nil {
		return stats, err
	}
	return stats, nil
}

// finish puts the best weights in OutDir, scores the test split and marks
// the run done.
func (r *run) finish(ctx context.Context, res *Result) (*Result, error) {
	o := r.opts
	best, err := model.LoadRoot(r.out, BestDir)
	if err != nil {
		return nil, fmt.Errorf("best model: %w", err)
	}
	final := r.m.Clone()
	final.Params = best.Params
	if err := final.SaveRoot(r.out, "."); err != nil {
		return nil, err
	}
	eval, decoders, err := r.scorer(final)
	if err != nil {
		return nil, err
	}
	tl, err := r.evalWith(ctx, eval, r.test)
	if err != nil {
		return nil, err
	}
	res.TestLoss, res.TestPPL = tl, math.Exp(tl)
	if o.GenEval > 0 {
		if err := r.genEval(ctx, final, decoders, res); err != nil {
			return nil, err
		}
	}
	res.Steps = r.opt.Steps
	res.Epochs = r.st.Epochs
	res.InitialDevLoss = r.st.InitialDevLoss
	res.BestDevLoss, res.BestEpoch = r.st.BestDevLoss, r.st.BestEpoch
	b, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return nil, err
	}
	if err := atomicfile.WriteBytesIn(r.out, ResultFile, append(b, '\n')); err != nil {
		return nil, fmt.Errorf("result: %w", err)
	}
	r.st.Done = true
	if err := r.checkpoint(); err != nil {
		return nil, err
	}
	return res, nil
}

// scorer is what the final test-set evaluation and GenEval run on: the
// Backend when it can take the best weights (model.ScoringBackend), else
// the host model final (nil decoders: the CPU KV cache). The done
// checkpoint must still hold the last step's parameters and moments, not
// the best weights, so the trained state is copied to the host before the
// best weights go to the device, and the Backend is detached from the
// trainer: from here on the host copy is the run's state and SyncHost has
// nothing to do. (Run still closes the Backend.)
func (r *run) scorer(final *model.Model) (func(model.Batch) (float32, error), model.DecoderFactory, error) {
	sb, ok := r.trainer.Backend.(model.ScoringBackend)
	if !ok {
		return final.Eval, nil, nil
	}
	if err := r.trainer.SyncHost(); err != nil {
		return nil, nil, err
	}
	r.trainer.Backend = nil
	if err := sb.LoadParams(final.Params); err != nil {
		return nil, nil, fmt.Errorf("accelerator: best model: %w", err)
	}
	return sb.Eval, sb.DecoderFactory(), nil
}

func (r *run) checkpoint() error {
	if err := r.trainer.SyncHost(); err != nil {
		return err
	}
	path := filepath.Join(r.opts.OutDir, CheckpointFile)
	st := r.opt.State()
	if len(st.M) != len(r.m.Params) { // no step taken yet
		st.M, st.V = make([]float32, len(r.m.Params)), make([]float32, len(r.m.Params))
	}
	if err := saveCheckpoint(r.out, CheckpointFile, &Checkpoint{State: r.st, Params: r.m.Params, Opt: st}); err != nil {
		return err
	}
	if r.hooks.OnCheckpoint != nil {
		r.hooks.OnCheckpoint(path, r.st)
	}
	return nil
}

// evalRows evaluates the model being trained (on the Backend, if any).
func (r *run) evalRows(ctx context.Context, rows []Row) (float64, error) {
	return r.evalWith(ctx, r.trainer.Eval, rows)
}

// evalWith is the mean loss per counted token over rows, each batch's loss
// from eval.
func (r *run) evalWith(ctx context.Context, eval func(model.Batch) (float32, error), rows []Row) (float64, error) {
	B := r.opts.BatchSize
	var sum float64
	n := 0
	for lo := 0; lo < len(rows); lo += B {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		b := batchOf(rows[lo:min(lo+B, len(rows))], r.T)
		c := countTargets(b.Targets)
		if c == 0 {
			continue
		}
		l, err := eval(b)
		if err != nil {
			return 0, err
		}
		sum += float64(l) * float64(c)
		n += c
	}
	if n == 0 {
		return 0, errors.New("eval: no token counts in the loss")
	}
	return sum / float64(n), nil
}

// genEval completes test prompts greedily with m, decoding with decoders
// (nil: m's own KV cache), and scores them against the held-out
// completions.
func (r *run) genEval(ctx context.Context, m *model.Model, decoders model.DecoderFactory, res *Result) error {
	var reqs []model.Request
	var refs [][]string
	limit := m.Config.NPositions - 1
	for _, ex := range r.split.Test {
		if ex.Completion == "" || len(reqs) >= r.opts.GenEval {
			continue
		}
		p := r.tok.Encode(ex.Prompt)
		if len(p) == 0 {
			p = []int32{r.tok.EOT()}
		}
		if len(p) > limit {
			p = p[len(p)-limit:]
		}
		seed := int64(0)
		reqs = append(reqs, model.Request{Prompt: p, Params: model.SamplingParams{MaxTokens: r.opts.GenMaxTokens, Temperature: 0, Seed: &seed}})
		refs = append(refs, []string{ex.Completion})
	}
	if len(reqs) == 0 {
		return nil
	}
	out, err := model.Generate(ctx, m, r.tok, reqs, model.GenerateOptions{NewDecoder: decoders})
	if err != nil {
		return fmt.Errorf("gen eval: %w", err)
	}
	hyps := make([]string, len(out))
	for i, c := range out {
		hyps[i] = strings.TrimSpace(c[0].Text)
	}
	bl, err := model.CorpusBLEU(hyps, refs, model.BLEUOptions{Smoothing: model.SmoothAddOne})
	if err != nil {
		return err
	}
	rl, err := model.CorpusROUGEL(hyps, refs)
	if err != nil {
		return err
	}
	res.BLEU, res.ROUGEL = &bl.Score, &rl.F1
	return nil
}

func (r *run) drawCurve() error {
	b, err := CurvePNG(r.st.StepLosses, r.st.Epochs)
	if err != nil {
		return err
	}
	if err := atomicfile.WriteBytesIn(r.out, CurveFile, b); err != nil {
		return fmt.Errorf("curve: %w", err)
	}
	return nil
}

func (r *run) readResult() (*Result, error) {
	b, err := r.out.ReadFile(ResultFile)
	if err != nil {
		return nil, fmt.Errorf("result: %w", err)
	}
	var res Result
	if err := json.Unmarshal(b, &res); err != nil {
		return nil, fmt.Errorf("result %s: %w", filepath.Join(r.opts.OutDir, ResultFile), err)
	}
	return &res, nil
}
