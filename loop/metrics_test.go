package loop

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"

	"github.com/tandem-ai/tandem/feedback"
	"github.com/tandem-ai/tandem/pipeline"
	"github.com/tandem-ai/tandem/recsys"
)

func near(a, b float64) bool { return math.Abs(a-b) < 1e-9 }

// testGeneration is the generation event's feedback is on; saveGeneration
// records it, as the producer does before anyone can give feedback.
func testGeneration(gen, tpl, mdl string) Generation {
	return Generation{ID: gen, User: "u1", Template: tpl, Model: mdl, Prompt: "p", Text: "the quick brown fox"}
}

func saveGeneration(t *testing.T, rdb redis.UniversalClient, gen, tpl, mdl string) {
	t.Helper()
	if err := NewStore(rdb, StoreOptions{}).Save(context.Background(), testGeneration(gen, tpl, mdl)); err != nil {
		t.Fatal(err)
	}
}

// event builds the feedback event for action on a generation of template
// tpl by model mdl.
func event(t *testing.T, gen, tpl, mdl string, fb Feedback) feedback.Event {
	t.Helper()
	ev, err := NewFeedbackEvent(testGeneration(gen, tpl, mdl), fb, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

func TestMetricsRecordOnceAndRead(t *testing.T) {
	rdb := redisClient(t)
	ctx := context.Background()
	m := NewMetrics(rdb, MetricsOptions{MaxNames: 2})
	h0 := time.Date(2026, 11, 29, 9, 10, 0, 0, time.UTC)
	h1 := h0.Add(time.Hour)
	record := func(ev feedback.Event, at time.Time, want bool) {
		t.Helper()
		counted, err := m.Record(ctx, ev, at)
		if err != nil || counted != want {
			t.Fatalf("Record(%s) = %v, %v; want counted=%v", ev.ID, counted, err, want)
		}
	}
	record(event(t, "g1", "tpl-a", "m@1", Feedback{Action: feedback.ActionAccept}), h0, true)
	record(event(t, "g1", "tpl-a", "m@1", Feedback{Action: feedback.ActionAccept}), h0, false) // resend
	record(event(t, "g2", "tpl-a", "m@1", Feedback{Action: feedback.ActionReject}), h0, true)
	record(event(t, "g2", "tpl-a", "m@1", Feedback{Action: feedback.ActionRate, Value: 2}), h0, true)
	record(event(t, "g3", "tpl-b", "m@2", Feedback{Action: feedback.ActionEdit, EditedText: "the quick red fox"}), h1, true)
	record(event(t, "g3", "tpl-b", "m@2", Feedback{Action: feedback.ActionRate, Value: 5}), h1, true)
	record(event(t, "g4", "tpl-c", "m@2", Feedback{Action: feedback.ActionRegenerate}), h1, true) // third template: over MaxNames

	v, err := m.Read(ctx, h1.Add(10*time.Minute), 3)
	if err != nil {
		t.Fatal(err)
	}
	if len(v.Series) != 3 || !v.Series[1].Start.Equal(h0.Truncate(time.Hour)) || !v.To.Equal(h1.Truncate(time.Hour).Add(time.Hour)) {
		t.Fatalf("series of %d buckets from %v to %v", len(v.Series), v.From, v.To)
	}
	all := v.Total.All
	if all.Events != 6 || all.Accept != 1 || all.Reject != 1 || all.Edit != 1 || all.Regenerate != 1 || all.Rate != 2 {
		t.Fatalf("totals %+v", all.Counts)
	}
	// (1 accept + 1 edit) / 4 decisions; ratings 2 and 5; one edit of 1 word in 4.
	if !near(*all.AcceptanceRate, 0.5) || !near(*all.MeanRating, 3.5) || !near(*all.MeanEditDistance, 0.25) {
		t.Fatalf("ratios %v %v %v", *all.AcceptanceRate, *all.MeanRating, *all.MeanEditDistance)
	}
	if b := v.Series[1].All; b.Events != 3 || !near(*b.AcceptanceRate, 0.5) || b.MeanEditDistance != nil {
		t.Fatalf("hour 0: %+v", b)
	}
	if b := v.Series[0].All; b.Events != 0 || b.AcceptanceRate != nil {
		t.Fatalf("empty hour: %+v", b)
	}
	if a := v.Total.Template["tpl-a"]; a.Events != 3 || !near(*a.AcceptanceRate, 0.5) || !near(*a.MeanRating, 2) {
		t.Fatalf("tpl-a: %+v", a)
	}
	if _, ok := v.Total.Template["tpl-c"]; ok || v.Total.Template[OtherName].Regenerate != 1 {
		t.Fatalf("a third template past MaxNames=2 must count as %s: %v", OtherName, v.Total.Template)
	}
	if m2 := v.Total.Model["m@2"]; m2.Events != 3 || !near(*m2.AcceptanceRate, 0.5) {
		t.Fatalf("model m@2: %+v", m2)
	}
	fbs, err := m.FeedbackOf(ctx, []string{"g1", "g2", "g3", "none"})
	if err != nil {
		t.Fatal(err)
	}
	if !fbs[0].Accepted || !fbs[1].Rejected || fbs[1].Rating != 2 || !fbs[2].Edited || !near(fbs[2].EditDistance, 0.25) || fbs[3].Any() {
		t.Fatalf("FeedbackOf = %+v", fbs)
	}
	if !fbs[2].Last.Equal(h1.Truncate(time.Second)) {
		t.Fatalf("last feedback on g3 at %v, want %v", fbs[2].Last, h1)
	}

	// Prometheus reads the same totals.
	reg := prometheus.NewRegistry()
	reg.MustRegister(NewCollector(m))
	want := `
# HELP tandem_loop_acceptance_ratio (accepts + edits) / (accepts + edits + rejects + regenerations), all time.
# TYPE tandem_loop_acceptance_ratio gauge
tandem_loop_acceptance_ratio{name="_other",scope="template"} 0
tandem_loop_acceptance_ratio{name="all",scope="all"} 0.5
tandem_loop_acceptance_ratio{name="m@1",scope="model"} 0.5
tandem_loop_acceptance_ratio{name="m@2",scope="model"} 0.5
tandem_loop_acceptance_ratio{name="tpl-a",scope="template"} 0.5
tandem_loop_acceptance_ratio{name="tpl-b",scope="template"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "tandem_loop_acceptance_ratio"); err != nil {
		t.Fatal(err)
	}
	if n := testutil.CollectAndCount(NewCollector(m), "tandem_loop_feedback_total"); n != 6*5 {
		t.Fatalf("%d feedback_total series, want 6 names x 5 actions", n)
	}
}

// consumeOverNATS starts an embedded nats-server with the streams and the
// metrics consumer counting into m, until the test ends.
func consumeOverNATS(t *testing.T, m *Metrics) *pipeline.Bus {
	t.Helper()
	ctx := context.Background()
	ns, err := pipeline.StartEmbeddedNATS(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Shutdown)
	bus, err := pipeline.ConnectBus(ctx, ns.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(bus.Close)
	if err := bus.EnsureStreams(ctx); err != nil {
		t.Fatal(err)
	}
	stop, err := ConsumeMetrics(ctx, bus, m, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop) // before the bus closes: cleanups run last first
	return bus
}

// waitCounted waits until the metrics consumer has acknowledged stream
// sequence seq.
func waitCounted(t *testing.T, bus *pipeline.Bus, seq uint64) {
	t.Helper()
	waitFor(t, "the consumer to ack everything", func() bool {
		c, err := bus.JS.Consumer(context.Background(), pipeline.StreamFeedback, MetricsDurable)
		if err != nil {
			return false
		}
		info, err := c.Info(context.Background())
		return err == nil && info.AckFloor.Stream >= seq
	})
}

func TestMetricsConsumerCountsEachEventOnce(t *testing.T) {
	rdb := redisClient(t)
	ctx := context.Background()
	m := NewMetrics(rdb, MetricsOptions{})
	bus := consumeOverNATS(t, m)

	saveGeneration(t, rdb, "g1", "tpl-a", "m@1")
	publish := func(msgID string, body []byte) uint64 {
		t.Helper()
		var ev recsys.Event
		_ = json.Unmarshal(body, &ev)
		msg := nats.NewMsg(pipeline.FeedbackSubject(cmp.Or(ev.Type, "accepted")))
		if msgID != "" {
			msg.Header.Set(jetstream.MsgIDHeader, msgID)
		}
		msg.Data = body
		ack, err := bus.JS.PublishMsg(ctx, msg)
		if err != nil {
			t.Fatal(err)
		}
		return ack.Sequence
	}
	accept, _ := event(t, "g1", "tpl-a", "m@1", Feedback{Action: feedback.ActionAccept}).Encode()
	rate, _ := event(t, "g1", "tpl-a", "m@1", Feedback{Action: feedback.ActionRate, Value: 4}).Encode()
	publish("fb-accept-g1", accept)
	publish("fb-accept-g1", accept)   // dropped by JetStream
	publish("another-msg-id", accept) // stored again, dropped by the event id
	publish("fb-rate-g1", rate)
	publish("", []byte(`{"user":"u1","item":"i1","event":"click"}`)) // not generation feedback
	publish("bad", []byte(`{"generation_id":"g9","action":"like"}`)) // dead-lettered
	last := publish("", rate)                                        // no msg id: the event id still dedupes

	waitCounted(t, bus, last)
	tot, err := m.Totals(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if tot.All.Events != 2 || tot.All.Accept != 1 || tot.All.Rate != 1 || !near(*tot.All.MeanRating, 4) {
		t.Fatalf("totals after duplicates: %+v", tot.All.Counts)
	}
	// The bad event is in the dead-letter stream with its reason.
	dl, err := bus.JS.OrderedConsumer(ctx, pipeline.StreamDeadLetter, jetstream.OrderedConsumerConfig{FilterSubjects: []string{pipeline.DeadLetterSubject(MetricsDurable)}})
	if err != nil {
		t.Fatal(err)
	}
	msg, err := dl.Next(jetstream.FetchMaxWait(10 * time.Second))
	if err != nil {
		t.Fatal(err)
	}
	var letter pipeline.DeadLetter
	if err := json.Unmarshal(msg.Data(), &letter); err != nil || letter.MsgID != "bad" || !strings.Contains(letter.Reason, "action") {
		t.Fatalf("dead letter %+v (%v)", letter, err)
	}
}

// waitFor polls cond until it holds, failing after 30 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestResendWithinTheDedupeHorizonCountsOnceEverywhere sends one accept
// to the real interaction log and the real metrics, as the scheduler's two
// consumers do, then again "on day 3" (both markers aged three days): a
// generation takes feedback for DefaultRecordTTL, so neither may count the
// resend; before they shared a horizon the log forgot ids after 48 hours.
func TestResendWithinTheDedupeHorizonCountsOnceEverywhere(t *testing.T) {
	if DefaultSeenTTL != recsys.FeedbackDedupeHorizon || DefaultRecordTTL > recsys.FeedbackDedupeHorizon {
		t.Fatalf("metrics remember ids %v, the log %v; generations take feedback for %v", DefaultSeenTTL, recsys.FeedbackDedupeHorizon, DefaultRecordTTL)
	}
	for _, s := range pipeline.DefaultStreams() {
		if s.Name == pipeline.StreamFeedback && s.MaxAge > recsys.FeedbackDedupeHorizon {
			t.Fatalf("stream %s keeps messages %v, longer than the dedupe horizon %v", s.Name, s.MaxAge, recsys.FeedbackDedupeHorizon)
		}
	}
	rdb := redisClient(t)
	ctx := context.Background()
	log := recsys.NewInteractionLog(rdb, recsys.InteractionLogOptions{})
	m := NewMetrics(rdb, MetricsOptions{})
	ev := event(t, "g1", "tpl-a", "m@1", Feedback{Action: feedback.ActionAccept})
	b, err := ev.Encode()
	if err != nil {
		t.Fatal(err)
	}
	var rev recsys.Event // what the recommender's consumer reads of it
	if err := json.Unmarshal(b, &rev); err != nil {
		t.Fatal(err)
	}
	send := func() (logged, counted bool) {
		t.Helper()
		_, logged, err := log.Append(ctx, rev)
		if err != nil {
			t.Fatal(err)
		}
		if counted, err = m.Record(ctx, ev, time.Now()); err != nil {
			t.Fatal(err)
		}
		return logged, counted
	}
	if logged, counted := send(); !logged || !counted {
		t.Fatalf("first send: logged %v, counted %v", logged, counted)
	}
	const age = 3 * 24 * time.Hour
	for _, key := range []string{recsys.KeyLoggedPrefix + ev.ID, seenKey(ev.ID)} {
		ttl, err := rdb.PTTL(ctx, key).Result()
		if err != nil {
			t.Fatal(err)
		}
		if ttl < DefaultRecordTTL {
			t.Errorf("%s is remembered for %v, less than a generation takes feedback (%v)", key, ttl, DefaultRecordTTL)
		}
		if err := rdb.PExpire(ctx, key, ttl-age).Err(); err != nil {
			t.Fatal(err)
		}
	}
	if logged, counted := send(); logged || counted {
		t.Fatalf("resend on day 3: logged %v, counted %v; want neither", logged, counted)
	}
	if n, err := log.Len(ctx); err != nil || n != 1 {
		t.Fatalf("log holds %d entries (%v), want 1", n, err)
	}
}

// hourReads is a go-redis hook that records the commands a pipeline sends
// for hourly metric hashes.
type hourReads struct {
	mu   sync.Mutex
	cmds []string
}

func (h *hourReads) DialHook(next redis.DialHook) redis.DialHook          { return next }
func (h *hourReads) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }
func (h *hourReads) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h.mu.Lock()
		for _, c := range cmds {
			if args := c.Args(); len(args) > 1 {
				if key, _ := args[1].(string); strings.HasPrefix(key, pipeline.Key("loop", "metrics", "hour")) {
					h.cmds = append(h.cmds, c.Name())
				}
			}
		}
		h.mu.Unlock()
		return next(ctx, cmds)
	}
}

// TestReadOverallMatchesReadOnTheOverallCounters: the dashboard's read
// gives each hour the same overall counters as the full read, from HMGET
// of those fields alone rather than whole hourly hashes.
func TestReadOverallMatchesReadOnTheOverallCounters(t *testing.T) {
	rdb := redisClient(t)
	ctx := context.Background()
	hooked := redis.NewClient(rdb.Options())
	defer hooked.Close()
	reads := &hourReads{}
	hooked.AddHook(reads)
	m := NewMetrics(hooked, MetricsOptions{})
	h0 := time.Date(2026, 11, 29, 9, 10, 0, 0, time.UTC)
	for i, fb := range []Feedback{{Action: feedback.ActionAccept}, {Action: feedback.ActionRate, Value: 4}, {Action: feedback.ActionEdit, EditedText: "the slow brown fox"}, {Action: feedback.ActionReject}} {
		ev := event(t, fmt.Sprintf("g%d", i), fmt.Sprintf("tpl-%d", i%2), "m@1", fb)
		if _, err := m.Record(ctx, ev, h0.Add(time.Duration(i)*40*time.Minute)); err != nil {
			t.Fatal(err)
		}
	}
	now := h0.Add(3 * time.Hour)
	full, err := m.Read(ctx, now, 5)
	if err != nil {
		t.Fatal(err)
	}
	reads.cmds = nil
	overall, err := m.ReadOverall(ctx, now, 5)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(overall.Total, full.Total) || !overall.From.Equal(full.From) || !overall.To.Equal(full.To) || len(overall.Series) != len(full.Series) {
		t.Fatalf("overall read %+v, full read %+v", overall, full)
	}
	events := int64(0)
	for i, b := range overall.Series {
		if !reflect.DeepEqual(b.All, full.Series[i].All) || !b.Start.Equal(full.Series[i].Start) {
			t.Fatalf("hour %d: overall %+v, full %+v", i, b.All, full.Series[i].All)
		}
		if len(b.Template)+len(b.Topic)+len(b.Model) != 0 {
			t.Fatalf("hour %d: per-name counters %+v in the overall read", i, b.Breakdown)
		}
		events += b.All.Events
	}
	if events != 4 {
		t.Fatalf("the series counts %d events, want 4", events)
	}
	if len(reads.cmds) != 5 || slices.ContainsFunc(reads.cmds, func(c string) bool { return c != "hmget" }) {
		t.Fatalf("hourly commands of the overall read: %v, want 5 hmget", reads.cmds)
	}
}
