package batch

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tandem-ai/tandem/jobs"
	"github.com/tandem-ai/tandem/pipeline"
)

func newRecord(id string, chunks int) *Batch {
	return &Batch{ID: id, Model: "builtin:tiny", InputKind: InputOpenAI, CompletionWindow: "24h", Status: StatusInProgress,
		RequestCounts: Counts{Total: chunks * 2}, Chunks: chunks, ChunkSize: 2, BatchSize: 2,
		CreatedAt: time.Now().Unix(), ExpiresAt: time.Now().Add(time.Hour).Unix(), Metadata: map[string]string{"k": "v"}}
}

// Counting a chunk is idempotent, even when many runs of the same chunk
// race, and stops once the batch is sealed.
func TestChunkCountsOnce(t *testing.T) {
	e := newTestEnv(t, envOptions{})
	ctx := context.Background()
	st := e.svc.Store
	if err := st.Create(ctx, newRecord("batch_counts", 3)); err != nil {
		t.Fatal(err)
	}
	if err := st.Create(ctx, newRecord("batch_counts", 3)); !errors.Is(err, ErrConflict) {
		t.Fatalf("second create: %v", err)
	}
	var wg sync.WaitGroup
	counted := make(chan int, 20)
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := st.ChunkDone(ctx, "batch_counts", 0, fmt.Sprintf("key-%d", i), 1, 1)
			if err != nil {
				t.Error(err)
				return
			}
			if r.Counted {
				counted <- i
			} else if !r.Duplicate {
				t.Errorf("run %d neither counted nor duplicate: %+v", i, r)
			}
		}()
	}
	wg.Wait()
	close(counted)
	var winners []int
	for i := range counted {
		winners = append(winners, i)
	}
	if len(winners) != 1 {
		t.Fatalf("%d runs counted chunk 0; want 1", len(winners))
	}
	b, err := st.Get(ctx, "batch_counts")
	if err != nil {
		t.Fatal(err)
	}
	if b.RequestCounts.Completed != 1 || b.RequestCounts.Failed != 1 || b.ChunksDone != 1 {
		t.Fatalf("after 20 runs of one chunk: %+v", b)
	}
	outs, _ := st.ChunkOutputs(ctx, "batch_counts")
	if outs[0] != fmt.Sprintf("key-%d", winners[0]) {
		t.Fatalf("recorded output %q; want the winner's", outs[0])
	}

	// Not ready: chunks left, no cancel, no expiry.
	if s, err := st.Seal(ctx, "batch_counts", false); err != nil || s.Sealed || s.NotReady != StatusInProgress {
		t.Fatalf("early seal: %+v, %v", s, err)
	}
	// Expiry seals; the final status is decided once.
	if s, err := st.Seal(ctx, "batch_counts", true); err != nil || !s.Sealed || s.Final != StatusExpired {
		t.Fatalf("expiry seal: %+v, %v", s, err)
	}
	if s, err := st.Seal(ctx, "batch_counts", false); err != nil || !s.Sealed || s.Final != StatusExpired {
		t.Fatalf("resealing: %+v, %v", s, err)
	}
	r, err := st.ChunkDone(ctx, "batch_counts", 1, "late", 2, 0)
	if err != nil || r.Counted || r.Duplicate {
		t.Fatalf("a chunk after the seal: %+v, %v; want refused", r, err)
	}
	if err := st.Finish(ctx, "batch_counts", StatusExpired, Counts{Total: 6, Completed: 1, Failed: 5}, "o", "e"); err != nil {
		t.Fatal(err)
	}
	if err := st.Finish(ctx, "batch_counts", StatusExpired, Counts{}, "o", "e"); !errors.Is(err, ErrConflict) {
		t.Fatalf("second finish: %v", err)
	}
	b, _ = st.Get(ctx, "batch_counts")
	if b.Status != StatusExpired || b.ExpiredAt == 0 || b.RequestCounts.Failed != 5 || b.Metadata["k"] != "v" {
		t.Fatalf("finished record %+v", b)
	}
	if s, _ := st.Seal(ctx, "batch_counts", false); s.Terminal != StatusExpired {
		t.Fatalf("seal of an ended batch: %+v", s)
	}
	if err := st.Transition(ctx, "batch_counts", StatusCancelling, StatusInProgress); !errors.Is(err, ErrConflict) {
		t.Fatalf("cancel of an ended batch: %v", err)
	}
	if err := st.Transition(ctx, "batch_nobody", StatusCancelling, StatusInProgress); !errors.Is(err, ErrNotFound) {
		t.Fatalf("transition of a missing batch: %v", err)
	}
}

// A chunk run again after it counted (a crash between counting and the
// task's acknowledgement) changes nothing and still owes the finalisation.
func TestChunkRerunIsHarmless(t *testing.T) {
	e := newTestEnv(t, envOptions{})
	ctx := context.Background()
	input, ids := openAIInput(6, 3)
	b, _, err := e.svc.Create(ctx, strings.NewReader(input), CreateOptions{Model: "builtin:tiny", ChunkSize: 3})
	if err != nil {
		t.Fatal(err)
	}
	deps := jobs.NewDeps(quietLogger())
	r := &Runner{Service: e.svc, Models: deps.Models}
	run := func(chunk int) {
		t.Helper()
		job := &pipeline.Job[ChunkArgs]{Args: ChunkArgs{BatchID: b.ID, Chunk: chunk}}
		if err := r.RunChunk(ctx, job); err != nil {
			t.Fatal(err)
		}
	}
	run(0)
	run(0)
	run(1)
	run(1)
	got, _ := e.svc.Get(ctx, b.ID)
	if got.RequestCounts.Completed != 6 || got.ChunksDone != 2 {
		t.Fatalf("after re-runs: %+v", got)
	}
	// The last chunk enqueued the finalisation; run it here.
	fin := &pipeline.Job[FinalizeArgs]{Args: FinalizeArgs{BatchID: b.ID}}
	if err := r.Finalize(ctx, fin); err != nil {
		t.Fatal(err)
	}
	if err := r.Finalize(ctx, fin); err != nil {
		t.Fatalf("second finalisation: %v", err)
	}
	end, _ := e.svc.Get(ctx, b.ID)
	if end.Status != StatusCompleted || end.RequestCounts != (Counts{Total: 6, Completed: 6}) {
		t.Fatalf("ended %+v", end)
	}
	out, errs := e.results(t, b.ID)
	checkExactlyOnce(t, ids, out, errs)
	// Run out of range, or of a missing batch: permanent errors.
	if err := r.RunChunk(ctx, &pipeline.Job[ChunkArgs]{Args: ChunkArgs{BatchID: b.ID, Chunk: 7}}); !pipeline.IsPermanent(err) {
		t.Fatalf("chunk out of range: %v", err)
	}
	if err := r.RunChunk(ctx, &pipeline.Job[ChunkArgs]{Args: ChunkArgs{BatchID: "batch_gone", Chunk: 0}}); !pipeline.IsPermanent(err) {
		t.Fatalf("missing batch: %v", err)
	}
	// A chunk of an ended batch is skipped.
	if err := r.RunChunk(ctx, &pipeline.Job[ChunkArgs]{Args: ChunkArgs{BatchID: b.ID, Chunk: 0}}); err != nil {
		t.Fatalf("chunk of an ended batch: %v", err)
	}
}
