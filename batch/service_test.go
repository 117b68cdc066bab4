package batch

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tandem-ai/tandem/generation"
	"github.com/tandem-ai/tandem/jobs"
	"github.com/tandem-ai/tandem/pipeline"
)

func TestBatchCompletes(t *testing.T) {
	e := newTestEnv(t, envOptions{nats: true, artifacts: "local", workers: 1})
	ctx := context.Background()

	var mu sync.Mutex
	var progress []Progress
	stop, err := e.bus.SubscribeCore(pipeline.SubjectBatchProgressAll, func(_ string, data []byte) {
		var p Progress
		if json.Unmarshal(data, &p) == nil {
			mu.Lock()
			progress = append(progress, p)
			mu.Unlock()
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer stop()

	input, ids := openAIInput(70, 4)
	b, rep, err := e.svc.Create(ctx, strings.NewReader(input), CreateOptions{
		Model: "builtin:tiny", ChunkSize: 8, Metadata: map[string]string{"team": "docs"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Valid != 70 || b.Chunks != 9 || b.Status != StatusInProgress || b.RequestCounts.Total != 70 {
		t.Fatalf("created %+v, report %+v", b, rep)
	}
	end := e.waitTerminal(t, b.ID, 2*time.Minute)
	if end.Status != StatusCompleted || end.RequestCounts != (Counts{Total: 70, Completed: 70}) || end.ChunksDone != 9 {
		t.Fatalf("ended %+v", end)
	}
	for _, ts := range []int64{end.CreatedAt, end.InProgressAt, end.FinalizingAt, end.CompletedAt} {
		if ts == 0 {
			t.Fatalf("a timestamp is missing: %+v", end)
		}
	}
	if end.Metadata["team"] != "docs" {
		t.Fatalf("metadata = %v", end.Metadata)
	}
	out, errs := e.results(t, b.ID)
	if len(errs) != 0 || len(out) != 70 {
		t.Fatalf("%d output lines, %d error lines", len(out), len(errs))
	}
	for i, l := range out {
		if l.CustomID != ids[i] {
			t.Fatalf("output line %d is %s; want input order (%s)", i, l.CustomID, ids[i])
		}
		if l.Response == nil || l.Response.StatusCode != 200 || len(l.Response.Body.Choices) != 1 || l.Response.Body.Usage.CompletionTokens == 0 {
			t.Fatalf("output line %d: %+v", i, l)
		}
	}
	checkExactlyOnce(t, ids, out, errs)
	checkResultFiles(t, e.svc, end)

	// The merged files are on disk where the record says; chunk files are gone.
	if _, err := os.Stat(end.OutputFile); err != nil {
		t.Fatalf("output_file %q: %v", end.OutputFile, err)
	}
	waitUntil(t, "chunk artifacts to be removed", func() bool {
		keys, err := e.svc.Artifacts.List(ctx, batchPrefix(b.ID))
		return err == nil && len(keys) == 2
	})

	// The lifecycle event is on JetStream, in the documented envelope.
	ev := nextEvent(t, e.bus, "tandem.events.batch.>")
	if ev.Schema != EventSchema || ev.Type != EventBatchCompleted || ev.ID != "evt_"+b.ID+"_completed" || ev.Time.IsZero() {
		t.Fatalf("event = %+v", ev)
	}
	var data Batch
	if err := json.Unmarshal(ev.Data, &data); err != nil || data.ID != b.ID || data.RequestCounts.Completed != 70 ||
		data.OutputFileID != end.OutputFileID || data.ErrorFileID != end.ErrorFileID {
		t.Fatalf("event data = %s (%v)", ev.Data, err)
	}

	// Progress went out on core NATS, ending with the final status.
	waitUntil(t, "the final progress event", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(progress) > 0 && progress[len(progress)-1].Status == StatusCompleted
	})
	mu.Lock()
	if len(progress) < 3 {
		t.Errorf("only %d progress events", len(progress))
	}
	mu.Unlock()

	if got := testutil.ToFloat64(e.run.Metrics.rows.WithLabelValues("completed")); got != 70 {
		t.Errorf("tandem_batch_rows_total{outcome=completed} = %v", got)
	}
	if got := testutil.ToFloat64(e.run.Metrics.finished.WithLabelValues("completed")); got != 1 {
		t.Errorf("tandem_batches_finished_total{status=completed} = %v", got)
	}

	// Listing pages, newest first.
	b2, _, err := e.svc.Create(ctx, strings.NewReader(input), CreateOptions{Model: "builtin:tiny", ChunkSize: 64})
	if err != nil {
		t.Fatal(err)
	}
	page, more, err := e.svc.List(ctx, "", 1)
	if err != nil || len(page) != 1 || !more || page[0].ID != b2.ID {
		t.Fatalf("first page: %v more=%v err=%v", page, more, err)
	}
	page, more, err = e.svc.List(ctx, page[0].ID, 10)
	if err != nil || len(page) != 1 || more || page[0].ID != b.ID {
		t.Fatalf("second page: %v more=%v err=%v", page, more, err)
	}
	e.waitTerminal(t, b2.ID, 2*time.Minute)
}

func nextEvent(t testing.TB, bus *pipeline.Bus, filter string) Event {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := bus.JS.OrderedConsumer(ctx, pipeline.StreamEvents, jetstream.OrderedConsumerConfig{FilterSubjects: []string{filter}})
	if err != nil {
		t.Fatal(err)
	}
	msg, err := c.Next(jetstream.FetchMaxWait(10 * time.Second))
	if err != nil {
		t.Fatalf("no event on %s: %v", filter, err)
	}
	var ev Event
	if err := json.Unmarshal(msg.Data(), &ev); err != nil {
		t.Fatal(err)
	}
	return ev
}

func waitUntil(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestInvalidInputEnqueuesNothing(t *testing.T) {
	e := newTestEnv(t, envOptions{})
	ctx := context.Background()
	input := `{"custom_id":"a","body":{"prompt":"x"}}` + "\n" +
		`{"custom_id":"a","body":{"prompt":"x"}}` + "\n" +
		`{"custom_id":"b","body":{"prompt":"x","top_p":7}}` + "\n" +
		`{"custom_id":"c","body":{"prompt":"` + strings.Repeat("x", generation.MaxLineBytes) + `"}}` + "\n"
	_, rep, err := e.svc.Create(ctx, strings.NewReader(input), CreateOptions{Model: "builtin:tiny"})
	var verr *ValidationError
	if !errors.As(err, &verr) {
		t.Fatalf("Create: %v; want a ValidationError", err)
	}
	if rep.Invalid != 3 || len(rep.Problems) != 3 || rep.Problems[0].Line != 2 || rep.Problems[1].Line != 3 || rep.Problems[2].Line != 4 {
		t.Fatalf("report = %+v", rep)
	}
	if rep.Problems[2].Code != "line_too_long" {
		t.Fatalf("oversized line: %+v", rep.Problems[2])
	}
	e.checkNothingStored(t, "a refused input")
}

func TestSkipInvalidReportsThemInErrors(t *testing.T) {
	e := newTestEnv(t, envOptions{workers: 1})
	ctx := context.Background()
	lines := []string{
		`{"custom_id":"ok1","body":{"prompt":"one","max_tokens":3}}`,
		`{"custom_id":"bad1","body":{"prompt":"x","temperature":5}}`,
		`{"custom_id":"ok2","body":{"prompt":"two","max_tokens":3}}`,
		`{broken`,
		`{"custom_id":"ok3","body":{"prompt":"three","max_tokens":3}}`,
		`{"custom_id":"bad2","body":{"prompt":"x","n":99}}`,
	}
	b, rep, err := e.svc.Create(ctx, strings.NewReader(strings.Join(lines, "\n")), CreateOptions{Model: "builtin:tiny", ChunkSize: 2, SkipInvalid: true})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Invalid != 3 || b.Skipped != 3 || b.RequestCounts.Total != 6 {
		t.Fatalf("report %+v batch %+v", rep, b)
	}
	end := e.waitTerminal(t, b.ID, time.Minute)
	if end.Status != StatusCompleted || end.RequestCounts != (Counts{Total: 6, Completed: 3, Failed: 3}) {
		t.Fatalf("ended %+v", end)
	}
	out, errs := e.results(t, b.ID)
	if len(out) != 3 || len(errs) != 3 {
		t.Fatalf("out %d errs %d", len(out), len(errs))
	}
	wantLines := []int{2, 4, 6}
	for i, l := range errs {
		if l.Error == nil || l.Error.Line != wantLines[i] {
			t.Fatalf("error line %d: %+v; want input line %d", i, l, wantLines[i])
		}
	}
	if errs[0].CustomID != "bad1" || errs[2].CustomID != "bad2" {
		t.Fatalf("errors = %+v", errs)
	}
}

func TestCancelMidBatch(t *testing.T) {
	e := newTestEnv(t, envOptions{nats: true, workers: 1})
	ctx := context.Background()
	input, ids := openAIInput(200, 48)
	b, _, err := e.svc.Create(ctx, strings.NewReader(input), CreateOptions{Model: "builtin:tiny", ChunkSize: 4, BatchSize: 2})
	if err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "a few chunks to count", func() bool {
		got, err := e.svc.Get(ctx, b.ID)
		return err == nil && got.ChunksDone >= 3
	})
	c, err := e.svc.Cancel(ctx, b.ID)
	if err != nil {
		t.Fatal(err)
	}
	if c.Status != StatusCancelling || c.CancellingAt == 0 {
		t.Fatalf("after cancel: %+v", c)
	}
	if again, err := e.svc.Cancel(ctx, b.ID); err != nil || again.Status.Terminal() && again.Status != StatusCancelled {
		t.Fatalf("second cancel: %+v, %v", again, err)
	}
	end := e.waitTerminal(t, b.ID, time.Minute)
	if end.Status != StatusCancelled || end.CancelledAt == 0 {
		t.Fatalf("ended %+v", end)
	}
	out, errs := e.results(t, b.ID)
	checkExactlyOnce(t, ids, out, errs)
	if end.RequestCounts.Completed != len(out) || end.RequestCounts.Failed != len(errs) || end.RequestCounts.Total != 200 {
		t.Fatalf("counts %+v vs %d output and %d error lines", end.RequestCounts, len(out), len(errs))
	}
	if len(out) < 12 || len(errs) == 0 {
		t.Fatalf("want partial results: %d done, %d not", len(out), len(errs))
	}
	checkResultFiles(t, e.svc, end)
	for _, l := range errs {
		if l.Error == nil || l.Error.Code != "batch_cancelled" {
			t.Fatalf("error line %+v; want batch_cancelled", l)
		}
	}
	if ev := nextEvent(t, e.bus, "tandem.events.batch.cancelled"); ev.Type != EventBatchCancelled {
		t.Fatalf("event %+v", ev)
	}
	// A finished batch cannot be cancelled.
	if _, err := e.svc.Cancel(ctx, b.ID); err != nil {
		t.Fatalf("cancel of a cancelled batch: %v", err)
	}
}

func TestExpiryReportsUnfinishedRows(t *testing.T) {
	defer func(old time.Duration) { minCompletionWindow = old }(minCompletionWindow)
	minCompletionWindow = time.Second
	e := newTestEnv(t, envOptions{nats: true})
	ctx := context.Background()
	input, ids := openAIInput(10, 4)
	b, _, err := e.svc.Create(ctx, strings.NewReader(input), CreateOptions{Model: "builtin:tiny", ChunkSize: 3, CompletionWindow: "1s"})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond) // no worker yet: the window closes with nothing done
	e.startWorker(t, envOptions{})
	end := e.waitTerminal(t, b.ID, time.Minute)
	if end.Status != StatusExpired || end.ExpiredAt == 0 || end.RequestCounts != (Counts{Total: 10, Failed: 10}) {
		t.Fatalf("ended %+v", end)
	}
	out, errs := e.results(t, b.ID)
	checkExactlyOnce(t, ids, out, errs)
	for _, l := range errs {
		if l.Error.Code != "batch_expired" {
			t.Fatalf("error line %+v", l)
		}
	}
	checkResultFiles(t, e.svc, end)
	if ev := nextEvent(t, e.bus, "tandem.events.batch.expired"); ev.Type != EventBatchExpired {
		t.Fatalf("event %+v", ev)
	}
}

func TestTemplateBatchWithPostProcessing(t *testing.T) {
	e := newTestEnv(t, envOptions{workers: 1})
	ctx := context.Background()
	csv := "custom_id,topic,max_tokens,seed\n"
	var ids []string
	for i := range 12 {
		id := fmt.Sprintf("t%02d", i)
		ids = append(ids, id)
		csv += fmt.Sprintf("%s,topic number %d,12,%d\n", id, i, i)
	}
	b, _, err := e.svc.Create(ctx, strings.NewReader(csv), CreateOptions{
		Model: "builtin:tiny", Template: "Write a short note about {{.topic}}:", Format: FormatCSV, ChunkSize: 5,
		PostProcess: PostProcess{Trim: true, MaxChars: 10},
	})
	if err != nil {
		t.Fatal(err)
	}
	if b.InputKind != InputTemplate || b.PostProcess.MaxChars != 10 {
		t.Fatalf("batch %+v", b)
	}
	end := e.waitTerminal(t, b.ID, time.Minute)
	if end.Status != StatusCompleted {
		t.Fatalf("ended %+v", end)
	}
	out, errs := e.results(t, b.ID)
	checkExactlyOnce(t, ids, out, errs)
	for _, l := range out {
		text := l.Response.Body.Choices[0].Text
		if len([]rune(text)) > 10 || strings.TrimSpace(text) != text {
			t.Fatalf("text %q not post-processed", text)
		}
	}
}

func TestUnloadableModelFailsTheBatch(t *testing.T) {
	e := newTestEnv(t, envOptions{workers: 1})
	input, ids := openAIInput(5, 2)
	b, _, err := e.svc.Create(context.Background(), strings.NewReader(input), CreateOptions{Model: t.TempDir() + "/no-such-model"})
	if err != nil {
		t.Fatal(err)
	}
	end := e.waitTerminal(t, b.ID, time.Minute)
	if end.Status != StatusFailed || end.FailedAt == 0 || end.RequestCounts != (Counts{Total: 5, Failed: 5}) {
		t.Fatalf("ended %+v", end)
	}
	out, errs := e.results(t, b.ID)
	checkExactlyOnce(t, ids, out, errs)
	if errs[0].Error.Code != "model_unavailable" {
		t.Fatalf("error %+v", errs[0])
	}
	checkResultFiles(t, e.svc, end)
}

func TestNATSArtifactStore(t *testing.T) {
	e := newTestEnv(t, envOptions{nats: true, artifacts: "nats:test-batches", workers: 1})
	input, ids := openAIInput(9, 3)
	b, _, err := e.svc.Create(context.Background(), strings.NewReader(input), CreateOptions{Model: "builtin:tiny", ChunkSize: 4})
	if err != nil {
		t.Fatal(err)
	}
	end := e.waitTerminal(t, b.ID, time.Minute)
	if end.Status != StatusCompleted || !strings.HasPrefix(end.OutputFile, "nats-object://test-batches/") {
		t.Fatalf("ended %+v", end)
	}
	out, errs := e.results(t, b.ID)
	checkExactlyOnce(t, ids, out, errs)
}

func TestCreateOptionsChecks(t *testing.T) {
	e := newTestEnv(t, envOptions{})
	input, _ := openAIInput(2, 2)
	meta := map[string]string{}
	for i := range 17 {
		meta[fmt.Sprint(i)] = "v"
	}
	for name, o := range map[string]CreateOptions{
		"no model":         {},
		"unknown builtin":  {Model: "builtin:nope"},
		"window":           {Model: "builtin:tiny", CompletionWindow: "soon"},
		"window too long":  {Model: "builtin:tiny", CompletionWindow: (MaxCompletionWindow + time.Hour).String()},
		"window too short": {Model: "builtin:tiny", CompletionWindow: (MinCompletionWindow - time.Second).String()},
		"chunk size":       {Model: "builtin:tiny", ChunkSize: MaxChunkSize + 1},
		"batch size":       {Model: "builtin:tiny", BatchSize: jobs.MaxBatchSize + 1},
		"metadata pairs":   {Model: "builtin:tiny", Metadata: meta},
		"metadata value":   {Model: "builtin:tiny", Metadata: map[string]string{"k": strings.Repeat("v", 513)}},
		"postprocess":      {Model: "builtin:tiny", PostProcess: PostProcess{MaxChars: -1}},
	} {
		if _, _, err := e.svc.Create(context.Background(), strings.NewReader(input), o); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := e.svc.Get(context.Background(), "batch_nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("get of a missing batch: %v", err)
	}
	if _, err := e.svc.Get(context.Background(), "../../x"); !errors.Is(err, ErrNotFound) {
		t.Errorf("get of a malformed id: %v", err)
	}
}
