package live

import (
	"context"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/tandem-ai/tandem/feedback"
	"github.com/tandem-ai/tandem/finetune"
	"github.com/tandem-ai/tandem/jobs"
	"github.com/tandem-ai/tandem/loop"
	"github.com/tandem-ai/tandem/pipeline"
	"github.com/tandem-ai/tandem/recsys"
)

// TestGenerationFeedbackClosesTheLoop sends feedback on recorded
// generations the way the producer does (loop.Store.SendFeedback over
// feedback.Publish) through an embedded nats-server to the real
// consumers: the user's recommendations move, accepted and edited texts
// reach the fine-tune dataset, and the loop metrics count, each exactly
// once however often the events are resent or redelivered.
func TestGenerationFeedbackClosesTheLoop(t *testing.T) {
	e := newFeedbackEnv(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ref := e.publishRebuild(t)
	before, ok, err := e.store.Get(ctx, "u1")
	if err != nil || !ok || len(before) < 2 {
		t.Fatalf("u1 before feedback: %v %v %v", before, ok, err)
	}
	gens := loop.NewStore(e.rdb, loop.StoreOptions{})
	for _, g := range []loop.Generation{
		{ID: "gen-liked", User: "u1", Template: before[0].Item, Model: "builtin:tiny", Prompt: "Write a tagline:", Text: "Dry in any weather."},
		{ID: "gen-disliked", User: "u1", Template: before[1].Item, Model: "builtin:tiny", Prompt: "Write a tagline:", Text: "Jacket jacket jacket."},
		{ID: "gen-free", User: "u1", Model: "builtin:tiny", Prompt: "Say hello:", Text: "hello hello world"},
	} {
		if err := gens.Save(ctx, g); err != nil {
			t.Fatal(err)
		}
	}
	_, metrics := e.startLoopConsumers(t)

	var sent [][]byte
	publish := e.publisher(&sent)
	given := []struct {
		gen string
		fb  loop.Feedback
	}{
		{"gen-liked", loop.Feedback{Action: feedback.ActionAccept}},
		{"gen-disliked", loop.Feedback{Action: feedback.ActionReject}},
		{"gen-free", loop.Feedback{Action: feedback.ActionEdit, EditedText: "hello world"}},
	}
	send := func() {
		t.Helper()
		for _, f := range given {
			if _, err := gens.SendFeedback(ctx, f.gen, f.fb, publish); err != nil {
				t.Fatal(err)
			}
		}
	}
	send()
	want := expectedAfter(t, ref, sent)
	var after []recsys.Scored
	waitFor(t, "u1's list to take the feedback", func() bool {
		l, _, err := e.store.Get(ctx, "u1")
		after = l
		return err == nil && sameList(l, want)
	})
	for _, s := range after[:min(len(after), 5)] {
		if s.Item == before[0].Item || s.Item == before[1].Item {
			t.Fatalf("u1 still gets %s after giving feedback on it: %v", s.Item, after)
		}
	}
	col, err := finetune.NewFeedbackCollector(e.rdb, "")
	if err != nil {
		t.Fatal(err)
	}
	counted := func() bool {
		tot, err := metrics.Totals(ctx)
		return err == nil && tot.All.Events == 3
	}
	waitFor(t, "the fine-tune samples and the metrics", func() bool {
		n, err := col.Count(ctx)
		return err == nil && n == 2 && counted()
	})

	// Resent (dropped by JetStream's duplicate window) and redelivered
	// under new message ids (dropped by the event ids): nothing changes.
	send()
	var last uint64
	for _, body := range sent {
		var ev recsys.Event
		if err := json.Unmarshal(body, &ev); err != nil {
			t.Fatal(err)
		}
		ack, err := e.bus.PublishAck(ctx, pipeline.FeedbackSubject(ev.Type), "redelivery-"+ev.ID, json.RawMessage(body))
		if err != nil {
			t.Fatal(err)
		}
		last = ack.Sequence
	}
	e.waitAcked(t, last)
	waitFor(t, "the metrics consumer to ack the redeliveries", func() bool {
		c, err := e.bus.JS.Consumer(ctx, pipeline.StreamFeedback, loop.MetricsDurable)
		if err != nil {
			return false
		}
		info, err := c.Info(ctx)
		return err == nil && info.AckFloor.Stream >= last
	})
	again, _, err := e.store.Get(ctx, "u1")
	if err != nil || !sameList(again, want) {
		t.Fatalf("u1 after redeliveries:\n got %v\nwant %v", again, want)
	}
	if n, _ := col.Count(ctx); n != 2 {
		t.Fatalf("%d fine-tune samples after redeliveries, want 2", n)
	}
	tot, err := metrics.Totals(ctx)
	if err != nil {
		t.Fatal(err)
	}
	a := tot.All
	if a.Events != 3 || a.Accept != 1 || a.Reject != 1 || a.Edit != 1 || math.Abs(*a.AcceptanceRate-2.0/3) > 1e-9 || math.Abs(*a.MeanEditDistance-1.0/3) > 1e-5 {
		t.Fatalf("metrics after redeliveries: %+v", a.Counts)
	}
	if tot.Template[before[0].Item].Accept != 1 || tot.Model["builtin:tiny"].Events != 3 {
		t.Fatalf("per template / model: %v %v", tot.Template, tot.Model)
	}
	fbs, err := metrics.FeedbackOf(ctx, []string{"gen-liked", "gen-disliked", "gen-free"})
	if err != nil || !fbs[0].Accepted || !fbs[1].Rejected || !fbs[2].Edited {
		t.Fatalf("feedback per generation: %+v %v", fbs, err)
	}
	// What the fine-tune dataset holds: the accepted text and the edit.
	path := filepath.Join(t.TempDir(), "samples.jsonl")
	if _, _, err := col.Export(ctx, path); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	wantSamples := `{"prompt":"Say hello:","completion":"hello world"}` + "\n" + `{"prompt":"Write a tagline:","completion":"Dry in any weather."}` + "\n"
	if string(b) != wantSamples {
		t.Fatalf("fine-tune samples:\n%s\nwant\n%s", b, wantSamples)
	}
}

// publisher is the producer's loop.Publisher (feedback.Publish) on the
// environment's bus, keeping each event's body in sent.
func (e *feedbackEnv) publisher(sent *[][]byte) loop.Publisher {
	return func(ctx context.Context, ev feedback.Event) error {
		body, err := ev.Encode()
		if err != nil {
			return err
		}
		*sent = append(*sent, body)
		_, err = feedback.Publish(ctx, e.bus, ev)
		return err
	}
}

// startLoopConsumers runs the scheduler's two FEEDBACK consumers, the
// recommender's and the loop metrics', until the test ends.
func (e *feedbackEnv) startLoopConsumers(t *testing.T) (*feedbackConsumer, *loop.Metrics) {
	t.Helper()
	ctx := context.Background()
	c, stopRecs, err := start(ctx, e.bus, e.options())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stopRecs)
	metrics := loop.NewMetrics(e.rdb, loop.MetricsOptions{})
	stopMetrics, err := loop.ConsumeMetrics(ctx, e.bus, metrics, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stopMetrics)
	return c, metrics
}

// expectedAfter applies the recommender events among sent, once each, to
// the reference model and returns u1's list.
func expectedAfter(t *testing.T, ref *recsys.Model, sent [][]byte) []recsys.Scored {
	t.Helper()
	for _, body := range sent {
		var ev recsys.Event
		if err := json.Unmarshal(body, &ev); err != nil {
			t.Fatal(err)
		}
		if ev.Item == "" {
			continue // no template or topic: not for the recommender
		}
		if _, err := ref.Apply(ev); err != nil {
			t.Fatal(err)
		}
	}
	want, err := ref.Recommend("u1", recsys.RecOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if slices.ContainsFunc(want, func(s recsys.Scored) bool { return s.Item == "" }) {
		t.Fatal("an empty item in the reference list")
	}
	return want
}

// TestFeedbackRerateCountsTheLatestRating rates a generation 2, then 5,
// the way the producer does, through an embedded nats-server to the real
// consumers, with the revision redelivered under another message id: the
// live recommender, the nightly rebuild that replays the log, the model
// reloaded from its snapshot and the loop metrics all hold what a single
// rating of 5 gives.
func TestFeedbackRerateCountsTheLatestRating(t *testing.T) {
	e := newFeedbackEnv(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	gens := loop.NewStore(e.rdb, loop.StoreOptions{})
	gen := loop.Generation{ID: "gen-rated", User: "u1", Template: "tpl-rated", Model: "builtin:tiny", Prompt: "Write a tagline:", Text: "Dry in any weather."}
	if err := gens.Save(ctx, gen); err != nil {
		t.Fatal(err)
	}
	c, metrics := e.startLoopConsumers(t)
	e.startWorkers(t)

	var sent [][]byte
	publish := e.publisher(&sent)
	for _, v := range []float64{2, 2, 5} { // the second 2 publishes nothing
		if _, err := gens.SendFeedback(ctx, gen.ID, loop.Feedback{Action: feedback.ActionRate, Value: v}, publish); err != nil {
			t.Fatal(err)
		}
	}
	if len(sent) != 2 {
		t.Fatalf("%d events published for ratings 2, 2, 5; want the rating and one revision", len(sent))
	}
	ack, err := e.bus.PublishAck(ctx, pipeline.FeedbackSubject(recsys.EventRating), "redelivery", json.RawMessage(sent[1]))
	if err != nil {
		t.Fatal(err)
	}
	e.waitAcked(t, ack.Sequence)
	waitFor(t, "the metrics consumer", func() bool {
		cons, err := e.bus.JS.Consumer(ctx, pipeline.StreamFeedback, loop.MetricsDurable)
		if err != nil {
			return false
		}
		info, err := cons.Info(ctx)
		return err == nil && info.AckFloor.Stream >= ack.Sequence
	})
	c.caughtUp(t)

	// What a single rating of 5 gives, with the live model's settings and
	// with the rebuild's.
	single := []recsys.Event{{ID: "once", User: "u1", Item: "tpl-rated", Type: recsys.EventRating, Value: 5, ItemKind: "template"}}
	users := []string{"u1", "u2", "u3", "u7"}
	items := []string{"tpl-rated", "i1", "i3", "i5"}
	checkLive := func(what string, ref *recsys.Model) {
		t.Helper()
		live, _ := c.live.model()
		if v, ok := live.Value("u1", "tpl-rated"); !ok || v != 5 {
			t.Fatalf("%s: H[u1][tpl-rated] = %g (%v), want 5", what, v, ok)
		}
		sameModels(t, what, live, ref, users, items)
	}
	// Before the rebuild the live model is the file's, weights frozen, with
	// the events applied.
	ref, err := jobs.LoadRecsModel(ctx, e.interactions, jobs.RecsLiveConfig(0))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ref.Apply(single[0]); err != nil {
		t.Fatal(err)
	}
	checkLive("live model", ref)
	if n, err := c.log.Len(ctx); err != nil || n != 2 {
		t.Fatalf("the log holds %d entries (%v), want the rating and its revision", n, err)
	}
	tot, err := metrics.Totals(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if a := tot.All; a.Events != 1 || a.Rate != 1 || a.RatingSum != 5 || *a.MeanRating != 5 {
		t.Fatalf("metrics: %+v, want one rating of 5", a.Counts)
	}
	if a := tot.Template["tpl-rated"]; a.Rate != 1 || a.RatingSum != 5 {
		t.Fatalf("metrics of tpl-rated: %+v, want one rating of 5", a.Counts)
	}
	if fbs, err := metrics.FeedbackOf(ctx, []string{gen.ID}); err != nil || fbs[0].Rating != 5 {
		t.Fatalf("the generation's feedback: %+v %v", fbs, err)
	}
	// The fine-tune dataset takes accepts and edits only: no rating.
	if col, err := finetune.NewFeedbackCollector(e.rdb, ""); err != nil {
		t.Fatal(err)
	} else if n, err := col.Count(ctx); err != nil || n != 0 {
		t.Fatalf("%d fine-tune samples (%v) from ratings, want none", n, err)
	}

	// The nightly rebuild replays the log into its snapshot and serves
	// every user what a rebuild with the single rating serves.
	e.nightlyTicker(t)(time.Date(2030, 1, 2, 2, 0, 0, 0, time.UTC))
	base := e.waitBase(t, "")
	snap, err := jobs.LoadRecsData(ctx, e.arts, base.Snapshot, "")
	if err != nil {
		t.Fatal(err)
	}
	if v, ok := snap.Value("u1", "tpl-rated"); !ok || v != 5 {
		t.Fatalf("the snapshot holds H[u1][tpl-rated] = %g (%v), want 5", v, ok)
	}
	all, err := referenceModel(t, e.interactions, single, jobs.RecsConfig(0)).All(recsys.RecOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for u, want := range all {
		got, _, err := e.store.Get(ctx, u)
		if err != nil || !sameList(got, want) {
			t.Fatalf("served list of %s after the rebuild (%v):\n got %v\nwant %v", u, err, got, want)
		}
	}
	waitReloaded(t, c, base)
	checkLive("live model reloaded from the snapshot", referenceModel(t, e.interactions, single, jobs.RecsLiveConfig(0)))
}
