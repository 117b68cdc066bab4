package live

import (
	"context"
	"encoding/json"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tandem-ai/tandem/finetune"
	"github.com/tandem-ai/tandem/loop"
	"github.com/tandem-ai/tandem/pipeline"
	"github.com/tandem-ai/tandem/recsys"
)

// publishRaw publishes body as it is on tandem.feedback.<subjectType> with
// Nats-Msg-Id msgID, as any bus client can, past every producer check.
func (e *feedbackEnv) publishRaw(t *testing.T, subjectType, msgID, body string) uint64 {
	t.Helper()
	m := nats.NewMsg(pipeline.FeedbackSubject(subjectType))
	m.Header.Set(jetstream.MsgIDHeader, msgID)
	m.Data = []byte(body)
	ack, err := e.bus.JS.PublishMsg(context.Background(), m)
	if err != nil {
		t.Fatalf("publish %s: %v", msgID, err)
	}
	return ack.Sequence
}

// waitBothAcked waits until the recommender's and the loop metrics'
// consumers have settled stream sequence seq.
func (e *feedbackEnv) waitBothAcked(t *testing.T, seq uint64) {
	t.Helper()
	for _, durable := range []string{FeedbackDurable, loop.MetricsDurable} {
		waitFor(t, durable+" to settle seq", func() bool {
			c, err := e.bus.JS.Consumer(context.Background(), pipeline.StreamFeedback, durable)
			if err != nil {
				return false
			}
			info, err := c.Info(context.Background())
			return err == nil && info.AckFloor.Stream >= seq
		})
	}
}

// deadLetters returns the reasons of the dead letters of durable, by
// message id.
func (e *feedbackEnv) deadLetters(t *testing.T, durable string) map[string]string {
	t.Helper()
	ctx := context.Background()
	cons, err := e.bus.JS.OrderedConsumer(ctx, pipeline.StreamDeadLetter, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{pipeline.DeadLetterSubject(durable)},
	})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for {
		batch, err := cons.Fetch(100, jetstream.FetchMaxWait(300*time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for m := range batch.Messages() {
			var dl pipeline.DeadLetter
			if err := json.Unmarshal(m.Data(), &dl); err != nil {
				t.Fatal(err)
			}
			if dl.Cause != pipeline.DeadLetterBadEvent {
				t.Errorf("%s: dead letter %s has cause %q", durable, dl.MsgID, dl.Cause)
			}
			out[dl.MsgID] = dl.Reason
			n++
		}
		if n == 0 {
			return out
		}
	}
}

// TestFeedbackConsumersRefuseAlike (issue 22, findings 3 and 7): events
// published straight onto the bus, past the producer, are held to the
// same rules as the API's. Feedback on a generation that does not exist or
// is another user's, values off their type's scale, an oversized event, an
// event on another type's subject and a reused id with other content are
// dead-lettered by the recommender's consumer and the loop metrics' alike,
// with the same reason; the fine-tune sample of an edit takes its prompt,
// completion and collection from the generation's record, not the event.
func TestFeedbackConsumersRefuseAlike(t *testing.T) {
	e := newFeedbackEnv(t)
	ctx := context.Background()
	gens := loop.NewStore(e.rdb, loop.StoreOptions{})
	if err := gens.Save(ctx, loop.Generation{ID: "gen-1", User: "u1", Template: "tpl-1", Model: "builtin:tiny", Prompt: "Say hi", Text: "hello"}); err != nil {
		t.Fatal(err)
	}
	c, metrics := e.startLoopConsumers(t)

	pad := func(prefix string, n int) string { return prefix + strings.Repeat("x", n-len(prefix)-2) + `"}` }
	bad := []struct{ subject, id, body, reason string }{
		{"accepted", "forged-gen",
			`{"id":"fb-accept-gen-nope","user":"u1","event":"accepted","generation_id":"gen-nope","action":"accept","prompt":"p","completion":"c","model":"evil"}`,
			"generation not found: gen-nope"},
		{"edited", "other-user",
			`{"id":"fb-edit-gen-1","user":"u2","item":"tpl-1","kind":"template","event":"edited","generation_id":"gen-1","action":"edit","edited_text":"pwned","prompt":"x","completion":"y"}`,
			`generation gen-1 is not "u2"'s; only its own user may give feedback on it`},
		{"rating", "rating-99", `{"id":"rating-99","user":"u1","item":"i1","event":"rating","value":99}`, `field "value": 99 is out of range for event "rating": want [1, 5]`},
		{"rating", "rating-1e9", `{"id":"rating-1e9","user":"u1","item":"i1","event":"rating","value":1e9}`, `field "value": 1e+09 is out of range`},
		{"rating", "rating-neg", `{"id":"rating-neg","user":"u1","item":"i1","event":"rating","value":-1e6}`, `field "value": -1e+06 is out of range`},
		{"click", "oversized", pad(`{"id":"oversized","user":"u1","item":"i1","event":"click","pad":"`, 66000), "the event is 66000 bytes, limit 65536"},
		{"click", "wrong-subject", `{"id":"wrong-subject","user":"u1","item":"i1","event":"rating","value":4}`,
			`field "event": "rating" arrived on subject "tandem.feedback.click"; an event of that type goes on "tandem.feedback.rating"`},
	}
	var last uint64
	for _, b := range bad {
		last = e.publishRaw(t, b.subject, b.id, b.body)
	}
	// An edit of u1's own generation, with forged texts and model, and a
	// plain click: both accepted by both consumers.
	e.publishRaw(t, "edited", "own-edit", `{"id":"fb-edit-gen-1","user":"u1","item":"tpl-1","kind":"template","event":"edited",
		"generation_id":"gen-1","action":"edit","edited_text":"Hi!","prompt":"forged","completion":"forged","model":"evil"}`)
	last = e.publishRaw(t, "click", "click-1", `{"id":"click-1","user":"u1","item":"i1","event":"click"}`)
	e.waitBothAcked(t, last)
	// The same id with other content, under another message id so that
	// JetStream's duplicate window does not drop it first.
	last = e.publishRaw(t, "click", "click-1-again", `{"id":"click-1","user":"u1","item":"i2","event":"click"}`)
	bad = append(bad, struct{ subject, id, body, reason string }{"", "click-1-again", "", `event id "click-1" was used before for other content`})
	e.waitBothAcked(t, last)
	c.caughtUp(t)

	recs, met := e.deadLetters(t, FeedbackDurable), e.deadLetters(t, loop.MetricsDurable)
	for _, b := range bad {
		if r := recs[b.id]; !strings.Contains(r, b.reason) {
			t.Errorf("%s: the recommender's dead letter says %q, want %q", b.id, r, b.reason)
		}
		if recs[b.id] != met[b.id] {
			t.Errorf("%s: the consumers disagree:\n recsys:       %q\n loop-metrics: %q", b.id, recs[b.id], met[b.id])
		}
	}
	if len(recs) != len(bad) || len(met) != len(bad) {
		t.Errorf("dead letters: recsys %v, loop-metrics %v; want %d each", slices.Sorted(maps.Keys(recs)), slices.Sorted(maps.Keys(met)), len(bad))
	}

	// Only the two good events reached the recommender, and only the
	// edit the metrics.
	if n, err := c.log.Len(ctx); err != nil || n != 2 {
		t.Errorf("interaction log holds %d entries (%v), want 2", n, err)
	}
	live, _ := c.live.model()
	if v, ok := live.Value("u1", "i1"); ok && v > recsys.DefaultEventWeights()[recsys.EventClick]+100 {
		t.Errorf("H[u1][i1] = %g: an out-of-range value was applied", v)
	}
	if tot, err := metrics.Totals(ctx); err != nil || tot.All.Events != 1 || tot.All.Edit != 1 {
		t.Errorf("metrics: %+v (%v), want the one edit", tot.All.Counts, err)
	}
	for name, want := range map[string]int{finetune.DefaultCollection: 1, "evil": 0} {
		col, err := finetune.NewFeedbackCollector(e.rdb, name)
		if err != nil {
			t.Fatal(err)
		}
		if n, err := col.Count(ctx); err != nil || n != want {
			t.Errorf("collection %s: %d samples (%v), want %d", name, n, err, want)
		}
	}
	got, err := e.rdb.HGet(ctx, "tandem:finetune:feedback:default:samples", "gen-1").Result()
	if want := `{"prompt":"Say hi","completion":"Hi!"}`; err != nil || got != want {
		t.Errorf("sample of gen-1: %s (%v), want %s", got, err, want)
	}
}
