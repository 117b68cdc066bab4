package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
)

func TestBusPublishConsumeRoundTrip(t *testing.T) {
	srv := startTestNATS(t)
	b := connectTestBus(t, srv.URL())
	ctx := testContext(t)

	want := map[string]feedbackEvent{}
	for i := range 3 {
		ev := feedbackEvent{User: fmt.Sprintf("u%d", i), Item: "tmpl-7", Rating: i + 3}
		id := fmt.Sprintf("fb-%d", i)
		want[id] = ev
		if err := b.Publish(ctx, FeedbackSubject("rating"), id, ev); err != nil {
			t.Fatalf("Publish %s: %v", id, err)
		}
	}

	got := make(chan Delivery, 3)
	stop, err := b.Consume(ctx, ConsumerSpec{
		Stream: StreamFeedback, Durable: "recsys", FilterSubject: SubjectFeedbackAll, Logger: quietLogger(),
	}, func(_ context.Context, d Delivery) error {
		got <- d
		return nil
	})
	if err != nil {
		t.Fatalf("Consume: %v", err)
	}
	for range 3 {
		d := receive(t, got, "a delivery")
		var ev feedbackEvent
		if err := d.Decode(&ev); err != nil {
			t.Fatalf("Decode: %v", err)
		}
		w, ok := want[d.MsgID]
		if !ok {
			t.Fatalf("unexpected msg id %q", d.MsgID)
		}
		if ev != w || d.Subject != "tandem.feedback.rating" || d.Stream != StreamFeedback || d.Consumer != "recsys" || d.NumDelivered != 1 {
			t.Fatalf("delivery %+v decoded %+v, want %+v on tandem.feedback.rating, first delivery", d, ev, w)
		}
		delete(want, d.MsgID)
	}
	stop()
	stop() // idempotent

	// The acks were confirmed before stop returned: nothing is pending.
	info := consumerInfo(t, b, StreamFeedback, "recsys")
	if info.NumAckPending != 0 || info.NumPending != 0 || info.AckFloor.Stream != 3 {
		t.Fatalf("after stop: ack pending %d, pending %d, ack floor %d; want 0, 0, 3",
			info.NumAckPending, info.NumPending, info.AckFloor.Stream)
	}
}

func TestBusDuplicateMsgIDStoredOnce(t *testing.T) {
	srv := startTestNATS(t)
	b := connectTestBus(t, srv.URL())
	ctx := testContext(t)
	ev := feedbackEvent{User: "u1", Item: "i1", Rating: 5}

	first, err := b.PublishAck(ctx, FeedbackSubject("rating"), "same-id", ev)
	if err != nil {
		t.Fatalf("first publish: %v", err)
	}
	second, err := b.PublishAck(ctx, FeedbackSubject("rating"), "same-id", ev)
	if err != nil {
		t.Fatalf("second publish: %v", err)
	}
	if first.Duplicate || !second.Duplicate || second.Sequence != first.Sequence {
		t.Fatalf("acks %+v then %+v: want the second to be a duplicate of the first", first, second)
	}
	if n := streamMsgs(t, b, StreamFeedback); n != 1 {
		t.Fatalf("stream holds %d messages, want 1", n)
	}
	// A different id is a different message.
	if err := b.Publish(ctx, FeedbackSubject("rating"), "other-id", ev); err != nil {
		t.Fatalf("third publish: %v", err)
	}
	if n := streamMsgs(t, b, StreamFeedback); n != 2 {
		t.Fatalf("stream holds %d messages, want 2", n)
	}
}

func TestBusPublishRefusesBadInput(t *testing.T) {
	srv := startTestNATS(t)
	b := connectTestBus(t, srv.URL())
	ctx := testContext(t)

	big := strings.Repeat("x", MaxEventBytes)
	if err := b.Publish(ctx, FeedbackSubject("edit"), "big", map[string]string{"text": big}); !errors.Is(err, ErrEventTooLarge) {
		t.Fatalf("oversized Publish: got %v, want ErrEventTooLarge", err)
	} else if !strings.Contains(err.Error(), "MaxEventBytes") {
		t.Fatalf("oversized Publish error %q does not name the limit", err)
	}
	if err := b.PublishCore(GenTokensSubject("g1"), big); !errors.Is(err, ErrEventTooLarge) {
		t.Fatalf("oversized PublishCore: got %v, want ErrEventTooLarge", err)
	}
	// Just under the limit is accepted: the stream leaves room for headers.
	fits := strings.Repeat("y", MaxEventBytes-2) // the JSON string adds two quotes
	if err := b.Publish(ctx, FeedbackSubject("edit"), "fits", fits); err != nil {
		t.Fatalf("Publish at the limit: %v", err)
	}

	for _, subj := range []string{"", "tandem.feedback.*", "tandem.feedback.>", "tandem..x", "tandem.feed back", BatchProgressSubject("a.b")} {
		if err := b.Publish(ctx, subj, "id", 1); !errors.Is(err, ErrBadSubject) {
			t.Errorf("Publish(%q): got %v, want ErrBadSubject", subj, err)
		}
		if err := b.PublishCore(subj, 1); !errors.Is(err, ErrBadSubject) {
			t.Errorf("PublishCore(%q): got %v, want ErrBadSubject", subj, err)
		}
	}
	for _, id := range []string{"a\r\nNats-Expected-Stream: X", strings.Repeat("i", MaxMsgIDLen+1)} {
		if err := b.Publish(ctx, FeedbackSubject("edit"), id, 1); !errors.Is(err, ErrBadMsgID) {
			t.Errorf("Publish with msg id %q: got %v, want ErrBadMsgID", id, err)
		}
	}
	if err := b.Publish(ctx, FeedbackSubject("edit"), "ch", make(chan int)); err == nil {
		t.Error("Publish of an unencodable value succeeded")
	}
	if n := streamMsgs(t, b, StreamFeedback); n != 1 {
		t.Fatalf("stream holds %d messages, want only the one that fits", n)
	}
}

func TestBusCorePublishSubscribe(t *testing.T) {
	srv := startTestNATS(t)
	b := connectTestBus(t, srv.URL())

	type progress struct {
		Done  int `json:"done"`
		Total int `json:"total"`
	}
	type msg struct {
		subject string
		data    []byte
	}
	got := make(chan msg, 1)
	stop, err := b.SubscribeCore(SubjectBatchProgressAll, func(s string, d []byte) { got <- msg{s, d} })
	if err != nil {
		t.Fatalf("SubscribeCore: %v", err)
	}
	defer stop()
	if err := b.NC.Flush(); err != nil { // the subscription is registered on the server
		t.Fatalf("Flush: %v", err)
	}
	if err := b.PublishCore(BatchProgressSubject("b-42"), progress{Done: 3, Total: 10}); err != nil {
		t.Fatalf("PublishCore: %v", err)
	}
	m := receive(t, got, "progress message")
	var p progress
	if err := json.Unmarshal(m.data, &p); err != nil {
		t.Fatalf("progress payload %q: %v", m.data, err)
	}
	if m.subject != "tandem.batch.b-42.progress" || p != (progress{3, 10}) {
		t.Fatalf("got %s %+v", m.subject, p)
	}
	// Core subjects are not stored by any stream.
	for _, s := range []string{StreamFeedback, StreamEvents, StreamDeadLetter} {
		if n := streamMsgs(t, b, s); n != 0 {
			t.Fatalf("stream %s stored %d core messages", s, n)
		}
	}
}

func TestBusConsumeRefusesBadSpec(t *testing.T) {
	srv := startTestNATS(t)
	b := connectTestBus(t, srv.URL())
	ctx := testContext(t)
	nop := func(context.Context, Delivery) error { return nil }

	cases := []struct {
		spec  ConsumerSpec
		field string
	}{
		{ConsumerSpec{Stream: StreamFeedback}, "Durable"},
		{ConsumerSpec{Durable: "x"}, "Stream"},
		{ConsumerSpec{Stream: StreamFeedback, Durable: "a.b"}, "Durable"},
		{ConsumerSpec{Stream: StreamFeedback, Durable: ">"}, "Durable"},
		{ConsumerSpec{Stream: StreamFeedback, Durable: "x", FilterSubject: "a.>.b"}, "FilterSubject"},
		{ConsumerSpec{Stream: StreamFeedback, Durable: "x", MaxDeliver: maxMaxDeliver + 1}, "MaxDeliver"},
		{ConsumerSpec{Stream: StreamFeedback, Durable: "x", AckWait: minAckWait - 1}, "AckWait"},
		{ConsumerSpec{Stream: StreamFeedback, Durable: "x", AckWait: maxConsumerDuration + 1}, "AckWait"},
		{ConsumerSpec{Stream: StreamFeedback, Durable: "x", HandlerTimeout: maxConsumerDuration + 1}, "HandlerTimeout"},
		{ConsumerSpec{Stream: StreamFeedback, Durable: "x", Concurrency: -1}, "Concurrency"},
		{ConsumerSpec{Stream: StreamFeedback, Durable: "x", Concurrency: maxConcurrency + 1}, "Concurrency"},
		{ConsumerSpec{Stream: StreamFeedback, Durable: "x", Concurrency: 8, MaxAckPending: 2}, "MaxAckPending"},
		{ConsumerSpec{Stream: StreamFeedback, Durable: "x", DeadLetterSubject: "tandem.dlq.*"}, "DeadLetterSubject"},
		// Not stored by any stream: the dead letters would vanish.
		{ConsumerSpec{Stream: StreamFeedback, Durable: "x", DeadLetterSubject: "nowhere.dlq"}, "nowhere.dlq"},
	}
	for _, c := range cases {
		stop, err := b.Consume(ctx, c.spec, nop)
		if err == nil {
			stop()
			t.Errorf("Consume(%+v) succeeded", c.spec)
			continue
		}
		if !strings.Contains(err.Error(), c.field) {
			t.Errorf("Consume(%+v) error %q does not name %s", c.spec, err, c.field)
		}
	}
	if _, err := b.Consume(ctx, ConsumerSpec{Stream: "NOSUCH", Durable: "x"}, nop); err == nil {
		t.Error("Consume on a missing stream succeeded")
	}
	if _, err := b.Consume(ctx, ConsumerSpec{Stream: StreamFeedback, Durable: "x"}, nil); err == nil {
		t.Error("Consume with a nil handler succeeded")
	}

	b.Close()
	if _, err := b.Consume(ctx, ConsumerSpec{Stream: StreamFeedback, Durable: "x"}, nop); !errors.Is(err, ErrBusClosed) {
		t.Errorf("Consume after Close: got %v, want ErrBusClosed", err)
	}
	if err := b.Publish(ctx, FeedbackSubject("rating"), "id", 1); !errors.Is(err, ErrBusClosed) {
		t.Errorf("Publish after Close: got %v, want ErrBusClosed", err)
	}
}

func TestBusCloseStopsConsumersAndWaitsForHandlers(t *testing.T) {
	srv := startTestNATS(t)
	b := connectTestBus(t, srv.URL())
	ctx := testContext(t)

	var mu sync.Mutex
	inHandler, finished := false, false
	started := make(chan struct{})
	release := make(chan struct{})
	_, err := b.Consume(ctx, ConsumerSpec{Stream: StreamEvents, Durable: "events", Logger: quietLogger()},
		func(context.Context, Delivery) error {
			mu.Lock()
			inHandler = true
			mu.Unlock()
			close(started)
			<-release
			mu.Lock()
			finished = true
			mu.Unlock()
			return nil
		})
	if err != nil {
		t.Fatalf("Consume: %v", err)
	}
	if err := b.Publish(ctx, EventSubject("batch.completed"), "b1-done", map[string]string{"batch": "b1"}); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	receive(t, started, "handler start")
	closed := make(chan struct{})
	go func() { b.Close(); close(closed) }()
	// Close has begun while the handler is still blocked; it must wait for it.
	eventually(t, "Close to begin", b.isClosed)
	close(release)
	receive(t, closed, "Close")
	mu.Lock()
	defer mu.Unlock()
	if !inHandler || !finished {
		t.Fatalf("Close returned before the in-flight handler finished")
	}
	if !b.NC.IsClosed() {
		t.Fatalf("connection still open after Close")
	}
}

func TestBusConnectErrors(t *testing.T) {
	ctx := testContext(t)
	if _, err := ConnectBus(ctx, ""); err == nil {
		t.Fatal("ConnectBus with an empty URL succeeded")
	}
	srv := startTestNATS(t, WithEmbeddedUser("tandem", "s3cret-pw"))
	u := strings.Replace(srv.URL(), "nats://", "nats://tandem:wrong-pw@", 1)
	_, err := ConnectBus(ctx, u)
	if err == nil {
		t.Fatal("ConnectBus with a wrong password succeeded")
	}
	if strings.Contains(err.Error(), "wrong-pw") {
		t.Fatalf("error leaks the password: %v", err)
	}
}
