package jobs

import (
	"context"
	"encoding/json"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/tandem-ai/tandem/finetune"
	"github.com/tandem-ai/tandem/model"
	"github.com/tandem-ai/tandem/pipeline"
)

// TestFinetuneProgressOnNATS runs a finetune job with a bus (an embedded
// nats-server) and checks that step and epoch events arrive on the run's
// progress subject, ending with the done status.
func TestFinetuneProgressOnNATS(t *testing.T) {
	srv, err := pipeline.StartEmbeddedNATS(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	bus, err := pipeline.ConnectBus(ctx, srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer bus.Close()

	var mu sync.Mutex
	var events []FinetuneStatus
	got := make(chan struct{}, 1)
	stop, err := bus.SubscribeCore(pipeline.FinetuneProgressSubject("run-1"), func(_ string, data []byte) {
		var st FinetuneStatus
		if json.Unmarshal(data, &st) == nil {
			mu.Lock()
			events = append(events, st)
			mu.Unlock()
			if st.State == "done" {
				got <- struct{}{}
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	if err := bus.NC.Flush(); err != nil {
		t.Fatal(err)
	}

	dir := t.TempDir()
	data := filepath.Join(dir, "corpus.txt")
	if err := finetune.WriteSyntheticCorpus(data, finetune.FormatText, 40, 2); err != nil {
		t.Fatal(err)
	}
	cfg := model.Config{NLayer: 1, NHead: 2, NEmbd: 32, NPositions: 32, VocabSize: 50257, LayerNormEpsilon: 1e-5}
	job := &pipeline.Job[FinetuneArgs]{ID: "run-1", Args: FinetuneArgs{InitConfig: &cfg, Data: data, Out: filepath.Join(dir, "out"),
		Epochs: 1, BatchSize: 4, SeqLen: 16, LR: 1e-2}}
	deps := rootedDeps(t, dir)
	deps.Bus = bus
	if err := (FinetuneWorker{Deps: deps}).Work(ctx, job); err != nil {
		t.Fatal(err)
	}
	select {
	case <-got:
	case <-ctx.Done():
		t.Fatal("no done event")
	}
	mu.Lock()
	defer mu.Unlock()
	var steps, epochs int
	for _, e := range events {
		if e.State == "training" && e.Step > 0 && e.TotalSteps > 0 {
			steps++
		}
		if len(e.Epochs) > 0 {
			epochs++
		}
	}
	last := events[len(events)-1]
	if steps == 0 || epochs == 0 || last.Result == nil || last.Result.TestPPL <= 0 {
		t.Fatalf("%d step events, %d with epochs, last %+v", steps, epochs, last)
	}
}
