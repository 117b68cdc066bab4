package loop

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tandem-ai/tandem/feedback"
	"github.com/tandem-ai/tandem/pipeline"
	"github.com/tandem-ai/tandem/recsys"
)

// recorder is a Publisher that keeps what it publishes; fail makes its
// next publishes fail.
type recorder struct {
	mu   sync.Mutex
	sent []feedback.Event
	fail int
}

var errBusDown = errors.New("bus down")

func (r *recorder) publish(_ context.Context, ev feedback.Event) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fail > 0 {
		r.fail--
		return errBusDown
	}
	if err := ev.Check(""); err != nil || !ev.OnGeneration() {
		return fmt.Errorf("published a bad event %+v: %v", ev, err)
	}
	r.sent = append(r.sent, ev)
	return nil
}

// take returns what was published since the last take.
func (r *recorder) take() []feedback.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.sent
	r.sent = nil
	return out
}

// latestOf sums value - previous over the distinct events, as every
// consumer does: what the events say the rating is.
func latestOf(evs []feedback.Event) float64 {
	seen := map[string]bool{}
	sum := 0.0
	for _, ev := range evs {
		if !seen[ev.ID] {
			seen[ev.ID] = true
			sum += ev.Value - ev.Previous
		}
	}
	return sum
}

// storeWithGen is a Store holding testGen, on the test Redis.
func storeWithGen(t *testing.T) (*redis.Client, *Store) {
	t.Helper()
	rdb := redisClient(t)
	s := NewStore(rdb, StoreOptions{})
	if err := s.Save(context.Background(), testGen); err != nil {
		t.Fatal(err)
	}
	return rdb, s
}

func TestRerateSendsARevision(t *testing.T) {
	ctx := context.Background()
	rdb, s := storeWithGen(t)
	rec := &recorder{}
	var all []feedback.Event
	rate := func(v float64) (FeedbackSent, []feedback.Event) {
		t.Helper()
		got, err := s.SendFeedback(ctx, testGen.ID, Feedback{Action: feedback.ActionRate, Value: v}, rec.publish)
		if err != nil {
			t.Fatalf("rate %g: %v", v, err)
		}
		sent := rec.take()
		all = append(all, sent...)
		return got, sent
	}
	first, sent := rate(2)
	if len(sent) != 1 || sent[0].ID != "fb-rate-gen-1" || sent[0].Revision != 0 || sent[0].Previous != 0 || first.Unchanged || first.Event.ID != sent[0].ID {
		t.Fatalf("first rating: %+v, sent %+v", first, sent)
	}
	if again, sent := rate(2); !again.Unchanged || len(sent) != 0 || again.Event.ID != "fb-rate-gen-1" {
		t.Fatalf("the same rating again: %+v, sent %+v; want nothing sent", again, sent)
	}
	second, sent := rate(5)
	if len(sent) != 1 || second.Unchanged {
		t.Fatalf("re-rating: %+v, sent %+v", second, sent)
	}
	r1 := sent[0]
	if r1.ID != "fb-rate-gen-1.r1" || r1.Revision != 1 || r1.Value != 5 || r1.Previous != 2 || !r1.RatedAt.Equal(sent[0].RatedAt) ||
		!r1.RatedAt.Equal(all[0].Time) || r1.Item != "tpl-haiku" || r1.Type != recsys.EventRating || second.Event.ID != r1.ID {
		t.Fatalf("revision %+v, want fb-rate-gen-1.r1 replacing 2 by 5, rated at %v", r1, all[0].Time)
	}
	// What the recommender reads of it: value and previous.
	b, _ := r1.Encode()
	var rev recsys.Event
	if err := json.Unmarshal(b, &rev); err != nil || rev.Value != 5 || rev.Previous != 2 || rev.ID != r1.ID {
		t.Fatalf("as a recommender event: %+v, %v", rev, err)
	}
	if _, sent := rate(5); len(sent) != 0 {
		t.Fatalf("the same re-rating again sent %+v", sent)
	}
	if _, sent := rate(3); len(sent) != 1 || sent[0].ID != "fb-rate-gen-1.r2" || sent[0].Previous != 5 || sent[0].Value != 3 {
		t.Fatalf("second re-rating sent %+v", sent)
	}

	// A publish that fails leaves the revision to the next request, which
	// sends it before its own; a retry of the same value sends it too.
	rec.fail = 1
	if _, err := s.SendFeedback(ctx, testGen.ID, Feedback{Action: feedback.ActionRate, Value: 4}, rec.publish); !errors.Is(err, errBusDown) {
		t.Fatalf("rating with the bus down: %v", err)
	}
	if retry, sent := rate(4); retry.Unchanged || len(sent) != 1 || sent[0].ID != "fb-rate-gen-1.r3" || sent[0].Previous != 3 {
		t.Fatalf("retry after a failed publish: %+v, sent %+v", retry, sent)
	}
	rec.fail = 1
	if _, err := s.SendFeedback(ctx, testGen.ID, Feedback{Action: feedback.ActionRate, Value: 1}, rec.publish); !errors.Is(err, errBusDown) {
		t.Fatalf("rating with the bus down: %v", err)
	}
	last, sent := rate(2)
	ids := []string{}
	for _, ev := range sent {
		ids = append(ids, ev.ID)
	}
	if !slices.Equal(ids, []string{"fb-rate-gen-1.r4", "fb-rate-gen-1.r5"}) || sent[0].Value != 1 || sent[1].Previous != 1 || last.Event.ID != ids[1] {
		t.Fatalf("after a failed re-rating, another sent %v: %+v", ids, sent)
	}
	if got := latestOf(all); got != 2 {
		t.Fatalf("the events add up to %g, want the latest rating 2", got)
	}
	if n, _ := rdb.HLen(ctx, RatingKey(testGen.ID)).Result(); n != 4 {
		t.Fatalf("the rating hash holds %d fields, want value, rev, sent, first and no pending revision", n)
	}
}

// TestRerateAfterAnOlderRating: a generation rated before ratings were
// kept beside the record (as the loop metrics counted it) is re-rated
// with a revision of that rating, not a resend of the first one.
func TestRerateAfterAnOlderRating(t *testing.T) {
	ctx := context.Background()
	rdb, s := storeWithGen(t)
	old, err := NewFeedbackEvent(testGen, Feedback{Action: feedback.ActionRate, Value: 4}, time.Now().Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewMetrics(rdb, MetricsOptions{}).Record(ctx, old, old.Time); err != nil {
		t.Fatal(err)
	}
	rec := &recorder{}
	if got, err := s.SendFeedback(ctx, testGen.ID, Feedback{Action: feedback.ActionRate, Value: 4}, rec.publish); err != nil || !got.Unchanged {
		t.Fatalf("the counted rating again: %+v, %v; want unchanged", got, err)
	}
	if _, err := s.SendFeedback(ctx, testGen.ID, Feedback{Action: feedback.ActionRate, Value: 1}, rec.publish); err != nil {
		t.Fatal(err)
	}
	sent := rec.take()
	if len(sent) != 1 || sent[0].ID != "fb-rate-gen-1.r1" || sent[0].Previous != 4 || !sent[0].RatedAt.Equal(old.Time.Truncate(time.Second)) {
		t.Fatalf("re-rating an older rating sent %+v", sent)
	}
}

// TestConcurrentReratesChainTheirRevisions re-rates one generation from
// many goroutines at once, publishing over an embedded nats-server to the
// real metrics consumer, with every event sent a second time as well:
// each revision gets its own number, each replaces the value of the one
// before, and the metrics end with one rating of the final value.
func TestConcurrentReratesChainTheirRevisions(t *testing.T) {
	ctx := context.Background()
	rdb, s := storeWithGen(t)
	m := NewMetrics(rdb, MetricsOptions{})
	bus := consumeOverNATS(t, m)
	rec := &recorder{}
	var lastSeq uint64
	var seqMu sync.Mutex
	publish := func(ctx context.Context, ev feedback.Event) error {
		if err := rec.publish(ctx, ev); err != nil {
			return err
		}
		body, err := ev.Encode()
		if err != nil {
			return err
		}
		// Twice under the event id (JetStream drops the second) and once
		// under another message id (the metrics drop it by the event id).
		for _, msgID := range []string{ev.ID, ev.ID, "again-" + ev.ID} {
			ack, err := bus.PublishAck(ctx, pipeline.FeedbackSubject(ev.Type), msgID, json.RawMessage(body))
			if err != nil {
				return err
			}
			seqMu.Lock()
			lastSeq = max(lastSeq, ack.Sequence)
			seqMu.Unlock()
		}
		return nil
	}
	if _, err := s.SendFeedback(ctx, testGen.ID, Feedback{Action: feedback.ActionRate, Value: 1}, publish); err != nil {
		t.Fatal(err)
	}
	const n = 24
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := s.SendFeedback(ctx, testGen.ID, Feedback{Action: feedback.ActionRate, Value: float64(2 + i%4)}, publish); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	sent := rec.take()
	byRev := map[int]feedback.Event{}
	for _, ev := range sent {
		if prev, ok := byRev[ev.Revision]; ok && (prev.ID != ev.ID || prev.Value != ev.Value || prev.Previous != ev.Previous) {
			t.Fatalf("revision %d published as %+v and as %+v", ev.Revision, prev, ev)
		}
		byRev[ev.Revision] = ev
	}
	final, err := rdb.HGet(ctx, RatingKey(testGen.ID), "value").Float64()
	if err != nil {
		t.Fatal(err)
	}
	for k := range len(byRev) {
		ev, ok := byRev[k]
		if !ok {
			t.Fatalf("revisions %v have a gap at %d", slices.Sorted(maps.Keys(byRev)), k)
		}
		if k > 0 && (ev.Previous != byRev[k-1].Value || ev.ID != feedback.RevisionID(testGen.ID, k)) {
			t.Fatalf("revision %d %+v does not replace revision %d's value %g", k, ev, k-1, byRev[k-1].Value)
		}
	}
	if last := byRev[len(byRev)-1]; last.Value != final || latestOf(sent) != final || len(byRev) < 2 {
		t.Fatalf("%d revisions, the last %+v, adding up to %g; the stored rating is %g", len(byRev), last, latestOf(sent), final)
	}
	waitCounted(t, bus, lastSeq)
	tot, err := m.Totals(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if a := tot.All; a.Events != 1 || a.Rate != 1 || !near(a.RatingSum, final) || !near(*a.MeanRating, final) {
		t.Fatalf("metrics after %d revisions: %+v, want one rating of %g", len(byRev)-1, a.Counts, final)
	}
	fbs, err := m.FeedbackOf(ctx, []string{testGen.ID})
	if err != nil || float64(fbs[0].Rating) != final {
		t.Fatalf("the generation's feedback shows rating %d (%v), want %g", fbs[0].Rating, err, final)
	}
}

// TestRatingRevisionsAreBounded re-rates one generation
// MaxRatingRevisions times; the next re-rating is refused, naming the
// value, and the rating stays.
func TestRatingRevisionsAreBounded(t *testing.T) {
	ctx := context.Background()
	_, s := storeWithGen(t)
	rec := &recorder{}
	for k := 0; k <= MaxRatingRevisions; k++ {
		if _, err := s.SendFeedback(ctx, testGen.ID, Feedback{Action: feedback.ActionRate, Value: float64(1 + k%2)}, rec.publish); err != nil {
			t.Fatalf("rating %d: %v", k, err)
		}
	}
	_, err := s.SendFeedback(ctx, testGen.ID, Feedback{Action: feedback.ActionRate, Value: 5}, rec.publish)
	if !errors.Is(err, feedback.ErrInvalid) || !strings.Contains(err.Error(), `"value"`) || !strings.Contains(err.Error(), "limit") {
		t.Fatalf("re-rating past MaxRatingRevisions: %v", err)
	}
	if got := latestOf(rec.take()); got != float64(1+MaxRatingRevisions%2) {
		t.Fatalf("the events add up to %g after the refusal", got)
	}
}

// TestLastRevisionIsPublishedPastTheBound: the last revision the bound
// allows, whose publish failed, still reaches the consumers when the next
// rating is one the bound refuses: the refusal publishes what is pending
// first, as every rating request does.
func TestLastRevisionIsPublishedPastTheBound(t *testing.T) {
	ctx := context.Background()
	_, s := storeWithGen(t)
	rec := &recorder{}
	var all []feedback.Event
	for k := 0; k <= MaxRatingRevisions; k++ {
		if k == MaxRatingRevisions {
			rec.fail = 1
		}
		_, err := s.SendFeedback(ctx, testGen.ID, Feedback{Action: feedback.ActionRate, Value: float64(1 + k%2)}, rec.publish)
		if k < MaxRatingRevisions && err != nil || k == MaxRatingRevisions && !errors.Is(err, errBusDown) {
			t.Fatalf("rating %d: %v", k, err)
		}
		all = append(all, rec.take()...)
	}
	_, err := s.SendFeedback(ctx, testGen.ID, Feedback{Action: feedback.ActionRate, Value: 5}, rec.publish)
	if !errors.Is(err, feedback.ErrInvalid) || !strings.Contains(err.Error(), `"value"`) {
		t.Fatalf("re-rating past MaxRatingRevisions: %v", err)
	}
	all = append(all, rec.take()...)
	if got, want := latestOf(all), float64(1+MaxRatingRevisions%2); got != want {
		t.Fatalf("the events add up to %g, want the last rating accepted, %g: its revision was never published", got, want)
	}
}

// TestMetricsCountARevisionAsTheSameRating: a revision moves the rating
// sum by the difference, in all-time and in the hour of the first rating,
// and counts no new rating; a resent revision counts once, and an older
// revision arriving late leaves the generation's latest rating shown.
func TestMetricsCountARevisionAsTheSameRating(t *testing.T) {
	rdb := redisClient(t)
	ctx := context.Background()
	m := NewMetrics(rdb, MetricsOptions{})
	h0 := time.Date(2026, 11, 29, 9, 10, 0, 0, time.UTC)
	h3 := h0.Add(3 * time.Hour)
	rating, err := NewFeedbackEvent(testGen, Feedback{Action: feedback.ActionRate, Value: 2}, h0)
	if err != nil {
		t.Fatal(err)
	}
	rev := func(k int, value, previous float64) feedback.Event {
		t.Helper()
		ev, err := revision(rating, k, value, previous, h3, h0)
		if err != nil {
			t.Fatal(err)
		}
		return ev
	}
	for _, step := range []struct {
		ev   feedback.Event
		want bool
	}{
		{rating, true}, {rev(2, 3, 5), true}, {rev(1, 5, 2), true}, {rev(1, 5, 2), false},
	} {
		if counted, err := m.Record(ctx, step.ev, step.ev.Time); err != nil || counted != step.want {
			t.Fatalf("Record(%s) = %v, %v; want %v", step.ev.ID, counted, err, step.want)
		}
	}
	v, err := m.Read(ctx, h3, 4)
	if err != nil {
		t.Fatal(err)
	}
	if a := v.Total.All; a.Events != 1 || a.Rate != 1 || !near(a.RatingSum, 3) || a.Decisions() != 0 {
		t.Fatalf("all time: %+v, want one rating of 3", a.Counts)
	}
	if a := v.Total.Template["tpl-haiku"]; a.Rate != 1 || !near(a.RatingSum, 3) {
		t.Fatalf("per template: %+v", a.Counts)
	}
	if b := v.Series[0].All; b.Rate != 1 || !near(*b.MeanRating, 3) {
		t.Fatalf("the first rating's hour: %+v", b.Counts)
	}
	if b := v.Series[3].All; b.Events != 0 || b.RatingSum != 0 {
		t.Fatalf("the revisions' hour: %+v; a revision counts where its rating did", b.Counts)
	}
	fbs, err := m.FeedbackOf(ctx, []string{testGen.ID})
	if err != nil || fbs[0].Rating != 3 {
		t.Fatalf("the generation shows rating %d (%v), want revision 2's 3", fbs[0].Rating, err)
	}
	// Malformed revisions are refused, naming the field.
	accept := event(t, "g9", "tpl-a", "m@1", Feedback{Action: feedback.ActionAccept})
	accept.Revision, accept.Previous, accept.RatedAt = 1, 2, h0
	noPrev := rev(1, 5, 2)
	noPrev.Previous = 0
	lonePrev := rating
	lonePrev.Previous = 3
	for field, ev := range map[string]feedback.Event{"revision": accept, "previous": noPrev, `"previous"`: lonePrev} {
		if _, err := m.Record(ctx, ev, h3); !errors.Is(err, feedback.ErrInvalid) || !strings.Contains(err.Error(), field) {
			t.Fatalf("%+v: %v, want an error naming %s", ev, err, field)
		}
	}
}
