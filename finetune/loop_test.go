package finetune

import (
	"context"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/tandem-ai/tandem/model"
)

// tinyConfig is a model small enough to train in seconds; the vocabulary
// must stay GPT-2's because the data is tokenized with GPT-2 BPE.
func tinyConfig() *model.Config {
	return &model.Config{NLayer: 2, NHead: 2, NEmbd: 64, NPositions: 64, VocabSize: 50257, LayerNormEpsilon: 1e-5}
}

func TestRunLossFalls(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "corpus.txt")
	if raceBuild {
		// The race detector makes the pure-Go optimizer and loss kernels over
		// a 50257-token vocabulary about 5 s a step on a shared machine; the
		// training loop has no goroutines of its own for it to check.
		t.Skip("training test runs without -race (go test ./finetune/)")
	}
	// -short: a smaller corpus, shorter rows and a higher learning rate show
	// the same fall in a few seconds.
	lines, epochs, batch, seq, lr := 300, 3, 8, 32, 3e-3
	if testing.Short() {
		lines, epochs, batch, seq, lr = 80, 2, 4, 16, 1e-2
	}
	if err := WriteSyntheticCorpus(data, FormatText, lines, 1); err != nil {
		t.Fatal(err)
	}
	var steps int
	opts := Options{InitConfig: tinyConfig(), Data: data, OutDir: filepath.Join(dir, "out"),
		Epochs: epochs, BatchSize: batch, SeqLen: seq, LR: lr, Seed: 7}
	res, err := Run(context.Background(), opts, Hooks{OnStep: func(StepEvent) { steps++ }})
	if err != nil {
		t.Fatal(err)
	}
	if steps == 0 || res.Steps != steps {
		t.Fatalf("steps: hooks saw %d, result says %d", steps, res.Steps)
	}
	if len(res.Epochs) != epochs {
		t.Fatalf("epochs: %+v", res.Epochs)
	}
	first, last := res.Epochs[0], res.Epochs[len(res.Epochs)-1]
	t.Logf("initial dev loss %.3f; epochs %+v; test %.3f ppl %.1f", res.InitialDevLoss, res.Epochs, res.TestLoss, res.TestPPL)
	if !(last.TrainLoss < first.TrainLoss) {
		t.Errorf("train loss did not fall: %.3f -> %.3f", first.TrainLoss, last.TrainLoss)
	}
	startPPL := math.Exp(res.InitialDevLoss)
	if !(last.DevPPL < startPPL/20) {
		t.Errorf("dev perplexity %.1f is not well below its start %.1f", last.DevPPL, startPPL)
	}
	if !(res.TestPPL < startPPL/20) {
		t.Errorf("test perplexity %.1f is not well below the start %.1f", res.TestPPL, startPPL)
	}
	// The output is a model directory that generation can load.
	m, err := model.LoadDir(opts.OutDir)
	if err != nil {
		t.Fatal(err)
	}
	if m.Config != *tinyConfig() {
		t.Fatalf("config %+v", m.Config)
	}
	for _, f := range []string{CurveFile, ResultFile, CheckpointFile} {
		if _, err := os.Stat(filepath.Join(opts.OutDir, f)); err != nil {
			t.Error(err)
		}
	}
	// A second Run over a finished directory returns the stored result.
	again, err := Run(context.Background(), opts, Hooks{OnStep: func(StepEvent) { t.Error("a finished run trained again") }})
	if err != nil {
		t.Fatal(err)
	}
	if again.TestLoss != res.TestLoss {
		t.Fatalf("stored result differs: %v vs %v", again.TestLoss, res.TestLoss)
	}
}
