package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/tandem-ai/tandem/batch"
)

// The batch that keeps the worker's engine busy while u1 streams: sized
// to last a few seconds on a laptop CPU with builtin:tiny. Chunks of 8
// rows make its progress move in steps of 8; the worker runs two at once.
const (
	demoBusyRows   = 96
	demoBusyTokens = 40
	demoBusyChunk  = 8
)

// demoPeopleFirst shows the generation engine serving a person first: u1
// streams one reply with the worker idle, then the same request while an
// OpenAI Batch (POST /v1/batches) runs on the same worker and the same
// model, and the figures of both go side by side with the batch's
// progress. Timings are printed, never checked; a failed stream or batch
// fails the demo. It needs `producer serve` (demoLoopMetrics).
func demoPeopleFirst(ctx context.Context, d *demo) error {
	step("people first: u1 streams while a batch runs on the same worker and model")
	reply := func() (demoStream, error) {
		return d.stream(ctx, map[string]any{"model": demoChatModel, "user": "u1", "prompt": "Write a haiku about a night train:",
			"max_tokens": 64, "temperature": 0.8, "seed": 3}, io.Discard)
	}
	idle, err := reply()
	if err != nil {
		return err
	}
	fmt.Printf("   worker idle:      %s\n", idle)

	var input strings.Builder
	enc := json.NewEncoder(&input)
	for i := range demoBusyRows {
		line := map[string]any{"custom_id": fmt.Sprintf("busy-%d", i+1), "method": "POST", "url": "/v1/completions",
			"body": map[string]any{"prompt": "Write a tweet about " + demoTopics[i%len(demoTopics)] + ":", "max_tokens": demoBusyTokens, "temperature": 0.8, "seed": i}}
		if err := enc.Encode(line); err != nil {
			return err
		}
	}
	var b batch.Batch
	if err := callJSON(ctx, http.MethodPost, d.api+"/v1/batches", map[string]any{"model": demoChatModel, "input": input.String(), "chunk_size": demoBusyChunk}, &b); err != nil {
		return err
	}
	start := time.Now()
	fmt.Printf("   POST /v1/batches -> %s: %d rows of %d tokens on %s, in chunks of %d\n", b.ID, demoBusyRows, demoBusyTokens, demoChatModel, demoBusyChunk)
	// The stream starts once the first chunk has counted: the engine is busy.
	if b, err = d.awaitBatch(ctx, b.ID, func(b batch.Batch) bool { return b.RequestCounts.Done() > 0 }); err != nil {
		return err
	}
	before := b.RequestCounts.Done()
	busy, err := reply()
	if err != nil {
		return err
	}
	if err := getJSON(ctx, d.api+"/v1/batches/"+b.ID, &b); err != nil {
		return err
	}
	fmt.Printf("   during the batch: %s; batch rows done %d/%d when it started, %d/%d when it ended\n",
		busy, before, demoBusyRows, b.RequestCounts.Done(), demoBusyRows)
	switch {
	case before == demoBusyRows:
		fmt.Println("   (the batch had ended before the stream started: this machine outran the demo's sizing)")
	case idle.tokens > 0 && busy.tokens > 0:
		fmt.Printf("   first token %.1fx the idle one: the engine admits people first (when every slot is taken, a batch row pauses and resumes with the same text)\n",
			busy.first.Seconds()/idle.first.Seconds())
	}
	if b, err = d.awaitBatch(ctx, b.ID, nil); err != nil {
		return err
	}
	c := b.RequestCounts
	if b.Status != batch.StatusCompleted || c.Completed != demoBusyRows {
		return fmt.Errorf("batch %s ended %s with %d of %d rows completed, %d failed (see %s)", b.ID, b.Status, c.Completed, demoBusyRows, c.Failed, d.logPath("worker"))
	}
	fmt.Printf("   batch %s completed: %d/%d rows in %.1f s\n", b.ID, c.Completed, c.Total, time.Since(start).Seconds())
	return nil
}

// awaitBatch polls GET /v1/batches/{id} until done (when not nil) says so
// or the batch has ended, for 2 minutes at most, and returns the last view.
func (d *demo) awaitBatch(ctx context.Context, id string, done func(batch.Batch) bool) (batch.Batch, error) {
	deadline := time.Now().Add(2 * time.Minute)
	for {
		var b batch.Batch
		if err := getJSON(ctx, d.api+"/v1/batches/"+id, &b); err != nil {
			return b, err
		}
		if (done != nil && done(b)) || b.Status.Terminal() {
			return b, nil
		}
		if time.Now().After(deadline) {
			return b, fmt.Errorf("batch %s still %s with %d of %d rows done after 2 minutes (see %s)", id, b.Status, b.RequestCounts.Done(), b.RequestCounts.Total, d.logPath("worker"))
		}
		if err := sleepCtx(ctx, 100*time.Millisecond); err != nil {
			return b, err
		}
	}
}
