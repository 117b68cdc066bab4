package finetune

import (
	"context"
	"fmt"
	"path/filepath"
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

// TestRunOnBackend: a run whose steps and dev evaluations happen on a
// backend gives the same result as one on the host, checkpoints and the
// best model see the backend's weights, and the backend is closed.
func TestRunOnBackend(t *testing.T) {
	if raceBuild {
		t.Skip("training test runs without -race (go test ./finetune/)")
	}
	dir := t.TempDir()
	data := filepath.Join(dir, "corpus.txt")
	if err := WriteSyntheticCorpus(data, FormatText, 60, 1); err != nil {
		t.Fatal(err)
	}
	opts := func(out string) Options {
		return Options{InitConfig: tinyConfig(), Data: data, OutDir: filepath.Join(dir, out), Epochs: 2, BatchSize: 4, SeqLen: 16, LR: 1e-2, Seed: 3}
	}
	want, err := Run(context.Background(), opts("host"), Hooks{})
	if err != nil {
		t.Fatal(err)
	}
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
	for i := range want.Epochs {
		w, g := want.Epochs[i], got.Epochs[i]
		if fmt.Sprintf("%.6f %.6f", w.TrainLoss, w.DevLoss) != fmt.Sprintf("%.6f %.6f", g.TrainLoss, g.DevLoss) {
			t.Errorf("epoch %d: backend %+v, host %+v", i+1, g, w)
		}
	}
	if fmt.Sprintf("%.6f", want.TestLoss) != fmt.Sprintf("%.6f", got.TestLoss) {
		t.Errorf("test loss: backend %.6f, host %.6f (the best model saved must be the backend's)", got.TestLoss, want.TestLoss)
	}
}
