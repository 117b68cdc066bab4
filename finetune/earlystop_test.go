package finetune

import (
	"context"
	"errors"
	"testing"
)

// TestEarlyStopHoldsAcrossAResume: a run that stopped early and then died
// in finish (here: cancelled during the final test evaluation) resumes
// into finish, not into more epochs, and ends as the uninterrupted run
// did.
func TestEarlyStopHoldsAcrossAResume(t *testing.T) {
	if raceBuild {
		t.Skip("training test runs without -race (go test ./finetune/)")
	}
	base := overshootingRun(t)
	opts := func(out string) Options {
		o := base(out)
		o.Epochs, o.Patience = 8, 1
		return o
	}
	want, err := Run(context.Background(), opts("whole"), Hooks{})
	if err != nil {
		t.Fatal(err)
	}
	if !want.StoppedEarly {
		t.Fatalf("the test needs a run that stops early: %+v", want.Epochs)
	}

	// The same run, cancelled once it has decided to stop: the epoch whose
	// dev loss is not the best is the last one, and finish sees ctx done.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	_, err = Run(ctx, opts("resumed"), Hooks{OnEpoch: func(s EpochStats) {
		if s.Epoch == len(want.Epochs) {
			cancel()
		}
	}})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("interrupted run: %v, want context.Canceled", err)
	}
	got, err := Run(context.Background(), opts("resumed"), Hooks{OnStep: func(StepEvent) {
		t.Error("a run that had stopped early trained again after resuming")
	}})
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Epochs) != len(want.Epochs) || !got.StoppedEarly || got.Steps != want.Steps || got.TestLoss != want.TestLoss {
		t.Fatalf("resumed: %d epochs, stopped early %v, %d steps, test loss %v; uninterrupted: %d, %v, %d, %v",
			len(got.Epochs), got.StoppedEarly, got.Steps, got.TestLoss, len(want.Epochs), want.StoppedEarly, want.Steps, want.TestLoss)
	}
}
