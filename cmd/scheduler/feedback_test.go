package main

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"

	"github.com/tandem-ai/tandem/finetune"
	"github.com/tandem-ai/tandem/jobs"
	"github.com/tandem-ai/tandem/pipeline"
	"github.com/tandem-ai/tandem/recsys"
)

// testRedisDB is this package's own Redis database; only it is flushed.
const testRedisDB = 7

func testRedisAddr() string {
	if a := os.Getenv("TANDEM_TEST_REDIS_ADDR"); a != "" {
		return a
	}
	return "127.0.0.1:6379"
}

// feedbackEnv is an embedded nats-server, Redis DB 7 and an interaction
// file of synthetic behaviour.
type feedbackEnv struct {
	bus          *pipeline.Bus
	rdb          *redis.Client
	store        *recsys.RedisStore
	interactions string
}

func newFeedbackEnv(t *testing.T) *feedbackEnv {
	t.Helper()
	ctx := context.Background()
	rdb := redis.NewClient(&redis.Options{Addr: testRedisAddr(), DB: testRedisDB})
	if err := rdb.FlushDB(ctx).Err(); err != nil {
		t.Skipf("Redis at %s unavailable: %v", testRedisAddr(), err)
	}
	t.Cleanup(func() {
		_ = rdb.FlushDB(context.Background()).Err()
		_ = rdb.Close()
	})
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
	path := filepath.Join(t.TempDir(), "interactions.csv")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := recsys.WriteSynthCSV(f, recsys.SynthConfig{Users: 60, Items: 40, Interactions: 900, Groups: 3, Noise: 0.1, Seed: 3}); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return &feedbackEnv{bus: bus, rdb: rdb, store: recsys.NewRedisStore(rdb, recsys.RedisStoreOptions{}), interactions: path}
}

// publishRebuild serves the file's lists, as the nightly job would.
func (e *feedbackEnv) publishRebuild(t *testing.T) *recsys.Model {
	t.Helper()
	m, err := jobs.LoadRecsModel(context.Background(), e.interactions, jobs.RecsConfig(0))
	if err != nil {
		t.Fatal(err)
	}
	all, err := m.All(recsys.RecOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := e.store.Publish(context.Background(), all); err != nil {
		t.Fatal(err)
	}
	return m
}

// waitFor polls cond until it holds or the deadline passes.
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

// waitAcked waits until the consumer has acknowledged stream sequence seq.
func (e *feedbackEnv) waitAcked(t *testing.T, seq uint64) {
	t.Helper()
	waitFor(t, "the consumer to ack the message", func() bool {
		c, err := e.bus.JS.Consumer(context.Background(), pipeline.StreamFeedback, FeedbackDurable)
		if err != nil {
			return false
		}
		info, err := c.Info(context.Background())
		return err == nil && info.AckFloor.Stream >= seq
	})
}

func sameList(a, b []recsys.Scored) bool {
	return slices.EqualFunc(a, b, func(x, y recsys.Scored) bool {
		return x.Item == y.Item && math.Abs(x.Score-y.Score) <= 1e-9*math.Max(1, math.Abs(x.Score))
	})
}

func TestFeedbackUpdatesRedisOnce(t *testing.T) {
	e := newFeedbackEnv(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ref := e.publishRebuild(t)
	before, ok, err := e.store.Get(ctx, "u1")
	if err != nil || !ok || len(before) == 0 {
		t.Fatalf("u1 before feedback: %v %v %v", before, ok, err)
	}
	c, stop, err := runFeedback(ctx, e.bus, feedbackOptions{Interactions: e.interactions, Redis: e.rdb})
	if err != nil {
		t.Fatal(err)
	}
	defer stop()

	// Buying the top recommendation makes it seen, so it must leave the list.
	target := before[0].Item
	body, _ := json.Marshal(recsys.Event{ID: "ev-1", User: "u1", Item: target, Type: recsys.EventPurchase, Value: 1})
	ev, err := jobs.PublishFeedback(ctx, e.bus, body)
	if err != nil {
		t.Fatal(err)
	}
	var after []recsys.Scored
	waitFor(t, "u1's list to change in Redis", func() bool {
		l, ok, err := e.store.Get(ctx, "u1")
		if err != nil || !ok {
			return false
		}
		after = l
		return !slices.ContainsFunc(l, func(s recsys.Scored) bool { return s.Item == target })
	})
	if _, err := ref.Apply(ev); err != nil {
		t.Fatal(err)
	}
	want, err := ref.Recommend("u1", recsys.RecOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !sameList(after, want) {
		t.Fatalf("u1 after one event:\n got %v\nwant %v", after, want)
	}

	// The same event again: JetStream drops the same Nats-Msg-Id, and under
	// a new one the model drops the event id. Either way, applied once.
	if _, err := jobs.PublishFeedback(ctx, e.bus, body); err != nil {
		t.Fatal(err)
	}
	ack, err := e.bus.PublishAck(ctx, pipeline.FeedbackSubject(recsys.EventPurchase), "other-msg-id", json.RawMessage(body))
	if err != nil {
		t.Fatal(err)
	}
	e.waitAcked(t, ack.Sequence)
	again, _, err := e.store.Get(ctx, "u1")
	if err != nil {
		t.Fatal(err)
	}
	if !sameList(again, want) {
		t.Fatalf("u1 after a duplicate:\n got %v\nwant %v", again, want)
	}
	got, err := c.model.Recommend("u1", recsys.RecOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !sameList(got, want) {
		t.Fatalf("live model after a duplicate:\n got %v\nwant %v", got, want)
	}

	// A message without any id is deduplicated by its stream sequence, and a
	// new user (cold start) gets a list too.
	cold := []byte(`{"user":"newcomer","item":"i3","event":"click"}`)
	if _, err := e.bus.PublishAck(ctx, pipeline.FeedbackSubject("click"), "", json.RawMessage(cold)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the new user's list", func() bool {
		_, ok, err := e.store.Get(ctx, "newcomer")
		return err == nil && ok
	})
}

func TestFeedbackBadEventsDeadLettered(t *testing.T) {
	e := newFeedbackEnv(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	_, stop, err := runFeedback(ctx, e.bus, feedbackOptions{Interactions: e.interactions, Redis: e.rdb})
	if err != nil {
		t.Fatal(err)
	}
	defer stop()

	// The producer refuses them, naming the field...
	for body, field := range map[string]string{
		`{"user":"u1","item":"i1","event":"teleport"}`:          `"event"`,
		`{"item":"i1","event":"click"}`:                         `"user"`,
		`{"user":"u1","item":"i1","event":"click","value":"x"}`: `value`,
	} {
		_, err := jobs.PublishFeedback(ctx, e.bus, []byte(body))
		if !errors.Is(err, jobs.ErrBadFeedback) || !strings.Contains(err.Error(), field) {
			t.Errorf("PublishFeedback(%s) = %v, want ErrBadFeedback naming %s", body, err, field)
		}
	}
	// ...and the consumer dead-letters them when they arrive anyway.
	bad := map[string]string{
		"bad-type": `{"user":"u1","item":"i1","event":"teleport"}`,
		"no-user":  `{"item":"i1","event":"click"}`,
		"not-json": `{"user":`,
	}
	for id, body := range bad {
		// Raw bytes: Bus.Publish would refuse to encode the invalid JSON.
		m := nats.NewMsg(pipeline.FeedbackSubject("click"))
		m.Header.Set(jetstream.MsgIDHeader, id)
		m.Data = []byte(body)
		if _, err := e.bus.JS.PublishMsg(ctx, m); err != nil {
			t.Fatal(err)
		}
	}

	cons, err := e.bus.JS.OrderedConsumer(ctx, pipeline.StreamDeadLetter, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{pipeline.DeadLetterSubject(FeedbackDurable)},
	})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]pipeline.DeadLetter{}
	waitFor(t, "three dead letters", func() bool {
		batch, err := cons.Fetch(3, jetstream.FetchMaxWait(200*time.Millisecond))
		if err != nil {
			return false
		}
		for m := range batch.Messages() {
			var dl pipeline.DeadLetter
			if err := json.Unmarshal(m.Data(), &dl); err != nil {
				t.Fatalf("dead letter: %v", err)
			}
			got[dl.MsgID] = dl
		}
		return len(got) >= len(bad)
	})
	for id, want := range map[string]string{"bad-type": "teleport", "no-user": `"user"`, "not-json": "JSON"} {
		dl, ok := got[id]
		switch {
		case !ok:
			t.Errorf("no dead letter for %s", id)
		case dl.Cause != pipeline.DeadLetterBadEvent || !strings.Contains(dl.Reason, want):
			t.Errorf("dead letter %s: cause %q reason %q, want %q naming %s", id, dl.Cause, dl.Reason, pipeline.DeadLetterBadEvent, want)
		}
	}
}

func TestFeedbackCollectsGenerations(t *testing.T) {
	e := newFeedbackEnv(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	_, stop, err := runFeedback(ctx, e.bus, feedbackOptions{Redis: e.rdb}) // no initial data
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	body := []byte(`{"user":"u9","item":"tpl-1","event":"edited","kind":"template",
		"generation_id":"gen-1","prompt":"Say hi","completion":"hello","edited_text":"Hi!"}`)
	if _, err := jobs.PublishFeedback(ctx, e.bus, body); err != nil {
		t.Fatal(err)
	}
	col, err := finetune.NewFeedbackCollector(e.rdb, "")
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the generation sample", func() bool {
		n, err := col.Count(ctx)
		return err == nil && n == 1
	})
	waitFor(t, "u9's list", func() bool {
		_, ok, err := e.store.Get(ctx, "u9")
		return err == nil && ok
	})
}
