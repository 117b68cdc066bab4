package finetune

import (
	"context"
	"fmt"
	"math"
	"path/filepath"
	"slices"
	"testing"

	"github.com/tandem-ai/tandem/model"
)

// copyBackend trains its own copy of the model with the CPU kernels, the
// way a GPU backend keeps the device's copy, so the run only sees the
// host model through SyncHost.
type copyBackend struct {
	inner        *model.Trainer
	syncs, close int
}

func (b *copyBackend) Step(t *model.Trainer, batches []model.Batch) (model.StepResult, error) {
	b.inner.Opt.Steps = t.Opt.Steps
	b.inner.MaxGradNorm, b.inner.Warmup, b.inner.TotalSteps, b.inner.MinLR = t.MaxGradNorm, t.Warmup, t.TotalSteps, t.MinLR
	b.inner.Opt.LR, b.inner.Opt.WeightDecay = t.Opt.LR, t.Opt.WeightDecay
	r, err := b.inner.Step(batches...)
	t.Opt.Steps = b.inner.Opt.Steps
	return r, err
}

func (b *copyBackend) Eval(batch model.Batch) (float32, error) { return b.inner.Model.Eval(batch) }

func (b *copyBackend) SyncHost(t *model.Trainer) error {
	b.syncs++
	copy(t.Model.Params, b.inner.Model.Params)
	t.Opt.M = append(t.Opt.M[:0], b.inner.Opt.M...)
	t.Opt.V = append(t.Opt.V[:0], b.inner.Opt.V...)
	return nil
}

func (b *copyBackend) Close() error { b.close++; return nil }

// scoringBackend is a copyBackend that also implements
// model.ScoringBackend, as gpu.Trainer does, and records what the run asks
// of it.
type scoringBackend struct {
	*copyBackend
	calls    []string  // "sync" and "load", in order
	loaded   bool      // LoadParams has run
	lossSum  float64   // Σ loss × counted tokens of the evaluations since
	tokens   int       // and their counted tokens
	decoders int       // Decoders made
	decodes  int       // Decode calls
	params   []float32 // what LoadParams got
}

var _ model.ScoringBackend = (*scoringBackend)(nil)

func (b *scoringBackend) SyncHost(t *model.Trainer) error {
	b.calls = append(b.calls, "sync")
	return b.copyBackend.SyncHost(t)
}

func (b *scoringBackend) LoadParams(params []float32) error {
	if len(params) != len(b.inner.Model.Params) {
		return fmt.Errorf("load: %d params, want %d", len(params), len(b.inner.Model.Params))
	}
	b.calls = append(b.calls, "load")
	b.loaded = true
	b.params = append([]float32(nil), params...)
	copy(b.inner.Model.Params, params)
	return nil
}

func (b *scoringBackend) Eval(batch model.Batch) (float32, error) {
	l, err := b.copyBackend.Eval(batch)
	if b.loaded && err == nil {
		c := countTargets(batch.Targets)
		b.lossSum += float64(l) * float64(c)
		b.tokens += c
	}
	return l, err
}

func (b *scoringBackend) DecoderFactory() model.DecoderFactory {
	return func(batch, maxLen int) (model.Decoder, error) {
		c, err := b.inner.Model.NewKVCache(batch, maxLen)
		if err != nil {
			return nil, err
		}
		b.decoders++
		return &countingDecoder{b: b, c: c}, nil
	}
}

// countingDecoder decodes with the scoringBackend's model and counts.
type countingDecoder struct {
	b *scoringBackend
	c *model.KVCache
}

func (d *countingDecoder) Decode(tokens [][]int32) ([][]float32, error) {
	d.b.decodes++
	return d.b.inner.Model.Decode(d.c, tokens)
}

func (d *countingDecoder) ResetRow(i int) { d.c.ResetRow(i) }

// TestRunOnBackend: a run whose steps and dev evaluations happen on a
// backend gives the same result as one on the host, checkpoints and the
// best model see the backend's weights, and the backend is closed. A
// backend that is also a model.ScoringBackend scores the best weights
// itself (test loss and GenEval) with the same numbers, and the run still
// saves the best weights as its model and the last step's state in its
// done checkpoint.
func TestRunOnBackend(t *testing.T) {
	if raceBuild {
		t.Skip("training test runs without -race (go test ./finetune/)")
	}
	// Epoch 4's dev loss is worse than epoch 3's, so the best weights and
	// the last step's differ.
	base := overshootingRun(t)
	opts := func(out string) Options {
		o := base(out)
		o.Epochs, o.GenEval, o.GenMaxTokens = 4, 6, 6
		return o
	}
	want, err := Run(context.Background(), opts("host"), Hooks{})
	if err != nil {
		t.Fatal(err)
	}
	if want.BestEpoch >= len(want.Epochs) || want.BLEU == nil || *want.ROUGEL == 0 {
		t.Fatalf("the test needs a best epoch before the last and some overlap in GenEval: %+v", want)
	}
	same := func(what string, got, want float64) {
		t.Helper()
		if math.Abs(got-want) > 1e-6 {
			t.Errorf("%s: %.9f, host %.9f", what, got, want)
		}
	}
	compare := func(name string, got *Result) {
		t.Helper()
		if len(got.Epochs) != len(want.Epochs) || got.BestEpoch != want.BestEpoch {
			t.Fatalf("%s: epochs %+v (best %d), host %+v (best %d)", name, got.Epochs, got.BestEpoch, want.Epochs, want.BestEpoch)
		}
		for i := range want.Epochs {
			same(fmt.Sprintf("%s: epoch %d train loss", name, i+1), got.Epochs[i].TrainLoss, want.Epochs[i].TrainLoss)
			same(fmt.Sprintf("%s: epoch %d dev loss", name, i+1), got.Epochs[i].DevLoss, want.Epochs[i].DevLoss)
		}
		same(name+": test loss (the best model scored must be the backend's)", got.TestLoss, want.TestLoss)
		if got.BLEU == nil || got.ROUGEL == nil {
			t.Fatalf("%s: no GenEval scores", name)
		}
		same(name+": BLEU", *got.BLEU, *want.BLEU)
		same(name+": ROUGE-L", *got.ROUGEL, *want.ROUGEL)
		sameFiles(t, name, got.OutDir, want.OutDir)
	}

	// A plain TrainBackend: the final scoring runs on the host.
	var b *copyBackend
	got, err := Run(context.Background(), opts("backend"), Hooks{Backend: func(m *model.Model) (model.TrainBackend, error) {
		b = &copyBackend{inner: &model.Trainer{Model: m.Clone(), Opt: model.NewAdamW(0, 0)}}
		return b, nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	if b == nil || b.close != 1 || b.syncs < 2 {
		t.Fatalf("backend: %+v", b)
	}
	compare("backend", got)

	// A ScoringBackend: the test loss and GenEval come from it.
	var sb *scoringBackend
	got, err = Run(context.Background(), opts("scoring"), Hooks{Backend: func(m *model.Model) (model.TrainBackend, error) {
		sb = &scoringBackend{copyBackend: &copyBackend{inner: &model.Trainer{Model: m.Clone(), Opt: model.NewAdamW(0, 0)}}}
		return sb, nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	if sb == nil || sb.close != 1 {
		t.Fatalf("scoring backend: %+v", sb)
	}
	// The trained state reaches the host before the best weights replace
	// it on the backend, and is not synchronised again afterwards.
	if n := len(sb.calls); n < 2 || sb.calls[n-2] != "sync" || sb.calls[n-1] != "load" || slices.Index(sb.calls, "load") != n-1 {
		t.Fatalf("backend calls %v, want syncs then one load last", sb.calls)
	}
	best, err := model.LoadDir(filepath.Join(got.OutDir, BestDir))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(sb.params, best.Params) {
		t.Error("LoadParams did not get the best model's weights")
	}
	if sb.tokens == 0 || got.TestLoss != sb.lossSum/float64(sb.tokens) {
		t.Errorf("test loss %v is not the backend's (%v over %d tokens)", got.TestLoss, sb.lossSum, sb.tokens)
	}
	if sb.decoders == 0 || sb.decodes == 0 {
		t.Errorf("GenEval did not decode on the backend: %d decoders, %d decode calls", sb.decoders, sb.decodes)
	}
	compare("scoring backend", got)
}

// overshootingRun writes a small corpus and returns the options of runs
// on it, by output directory: a constant learning rate high enough that
// some epoch's dev loss is worse than the one before it.
func overshootingRun(t *testing.T) func(out string) Options {
	t.Helper()
	dir := t.TempDir()
	data := filepath.Join(dir, "corpus.jsonl")
	if err := WriteSyntheticCorpus(data, FormatJSONL, 32, 1); err != nil {
		t.Fatal(err)
	}
	return func(out string) Options {
		return Options{InitConfig: tinyConfig(), Data: data, OutDir: filepath.Join(dir, out), BatchSize: 4, SeqLen: 16,
			LR: 3e-2, Schedule: ScheduleConstant, Warmup: -1, DevFrac: 0.25, TestFrac: 0.25, Seed: 3}
	}
}

// sameFiles checks that run directory got saved the same model (the best
// weights) and done checkpoint (the last step's parameters and moments)
// as run directory want.
func sameFiles(t *testing.T, name, got, want string) {
	t.Helper()
	load := func(dir string) (*model.Model, *model.Model, *Checkpoint) {
		m, err := model.LoadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		best, err := model.LoadDir(filepath.Join(dir, BestDir))
		if err != nil {
			t.Fatal(err)
		}
		ck, err := LoadCheckpoint(filepath.Join(dir, CheckpointFile))
		if err != nil {
			t.Fatal(err)
		}
		return m, best, ck
	}
	gm, gbest, gck := load(got)
	wm, _, wck := load(want)
	if !slices.Equal(gm.Params, gbest.Params) {
		t.Errorf("%s: the saved model is not the best one", name)
	}
	if !closeSlices(gm.Params, wm.Params) {
		t.Errorf("%s: saved model differs from the host run's", name)
	}
	if !gck.State.Done || gck.Opt.Step != wck.Opt.Step {
		t.Errorf("%s: done checkpoint: done %v, step %d; host step %d", name, gck.State.Done, gck.Opt.Step, wck.Opt.Step)
	}
	if !closeSlices(gck.Params, wck.Params) || !closeSlices(gck.Opt.M, wck.Opt.M) || !closeSlices(gck.Opt.V, wck.Opt.V) {
		t.Errorf("%s: done checkpoint's parameters or moments differ from the host run's", name)
	}
	if slices.Equal(gck.Params, gm.Params) {
		t.Errorf("%s: done checkpoint holds the best weights, not the last step's", name)
	}
}

// closeSlices reports whether a and b have the same length and elements
// within float32 rounding of each other.
func closeSlices(a, b []float32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if math.Abs(float64(a[i])-float64(b[i])) > 1e-6*(1+math.Abs(float64(b[i]))) {
			return false
		}
	}
	return true
}
