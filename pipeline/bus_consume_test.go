package pipeline

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// A consumer that received a message and died without acking it: the server
// redelivers it to the next consumer on the same durable after AckWait.
func TestBusRedeliveryAfterConsumerDies(t *testing.T) {
	srv := startTestNATS(t)
	b1 := connectTestBus(t, srv.URL())
	ctx := testContext(t)
	spec := ConsumerSpec{Stream: StreamFeedback, Durable: "recsys", AckWait: 500 * time.Millisecond, Logger: quietLogger()}

	ev := feedbackEvent{User: "u9", Item: "topic-3", Rating: 1}
	if err := b1.Publish(ctx, FeedbackSubject("rating"), "fb-dies", ev); err != nil {
		t.Fatalf("Publish: %v", err)
	}

	first := make(chan Delivery, 1)
	release := make(chan struct{})
	stop1, err := b1.Consume(ctx, spec, func(_ context.Context, d Delivery) error {
		first <- d
		<-release // the process "hangs" while its connection dies
		return nil
	})
	if err != nil {
		t.Fatalf("Consume 1: %v", err)
	}
	d1 := receive(t, first, "first delivery")
	b1.NC.Close() // the consumer's process is gone: no ack, no progress
	close(release)
	stop1()
	b1.Close()

	b2 := connectTestBus(t, srv.URL())
	second := make(chan Delivery, 1)
	stop2, err := b2.Consume(ctx, spec, func(_ context.Context, d Delivery) error {
		second <- d
		return nil
	})
	if err != nil {
		t.Fatalf("Consume 2: %v", err)
	}
	d2 := receive(t, second, "redelivery")
	stop2()

	if d1.NumDelivered != 1 || d2.NumDelivered != 2 || d2.StreamSeq != d1.StreamSeq || d2.MsgID != "fb-dies" || string(d2.Data) != string(d1.Data) {
		t.Fatalf("first %+v, redelivered %+v: want the same message, delivered twice", d1, d2)
	}
	if info := consumerInfo(t, b2, StreamFeedback, "recsys"); info.NumAckPending != 0 || info.AckFloor.Stream != d2.StreamSeq {
		t.Fatalf("after the redelivery was handled: ack pending %d, ack floor %d", info.NumAckPending, info.AckFloor.Stream)
	}
}

// watchDeadLetters subscribes (core NATS) to a dead-letter subject; the
// JetStream publish of a dead letter reaches core subscribers too.
func watchDeadLetters(t *testing.T, b *Bus, subject string) <-chan DeadLetter {
	t.Helper()
	ch := make(chan DeadLetter, 8)
	stop, err := b.SubscribeCore(subject, func(_ string, data []byte) {
		var dl DeadLetter
		if err := json.Unmarshal(data, &dl); err != nil {
			t.Errorf("dead letter %q: %v", data, err)
			return
		}
		ch <- dl
	})
	if err != nil {
		t.Fatalf("SubscribeCore: %v", err)
	}
	t.Cleanup(stop)
	if err := b.NC.Flush(); err != nil {
		t.Fatalf("Flush: %v", err)
	}
	return ch
}

func TestBusDeadLetterAfterMaxDeliver(t *testing.T) {
	srv := startTestNATS(t)
	b := connectTestBus(t, srv.URL())
	ctx := testContext(t)
	dlq := watchDeadLetters(t, b, DeadLetterSubject("recsys"))

	ev := feedbackEvent{User: "u1", Item: "i1", Rating: 4}
	if err := b.Publish(ctx, FeedbackSubject("rating"), "fb-fails", ev); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	var calls atomic.Int32
	stop, err := b.Consume(ctx, ConsumerSpec{
		Stream: StreamFeedback, Durable: "recsys", MaxDeliver: 3,
		RetryBackoff: 10 * time.Millisecond, MaxRetryBackoff: 20 * time.Millisecond, Logger: quietLogger(),
	}, func(context.Context, Delivery) error {
		calls.Add(1)
		return errors.New("interaction store offline")
	})
	if err != nil {
		t.Fatalf("Consume: %v", err)
	}
	dl := receive(t, dlq, "dead letter")
	stop()

	var got feedbackEvent
	if err := json.Unmarshal(dl.Data, &got); err != nil {
		t.Fatalf("dead letter data %q: %v", dl.Data, err)
	}
	if dl.Cause != DeadLetterMaxDeliver || dl.Delivered != 3 || !strings.Contains(dl.Reason, "interaction store offline") ||
		dl.Stream != StreamFeedback || dl.Consumer != "recsys" || dl.Subject != "tandem.feedback.rating" ||
		dl.MsgID != "fb-fails" || got != ev || dl.StreamSeq != 1 || dl.FailedAt.IsZero() {
		t.Fatalf("dead letter %+v (data %+v)", dl, got)
	}
	if n := calls.Load(); n != 3 {
		t.Fatalf("handler called %d times, want MaxDeliver = 3", n)
	}
	if n := streamMsgs(t, b, StreamDeadLetter); n != 1 {
		t.Fatalf("DEADLETTER holds %d messages, want 1", n)
	}
	// Terminated: not pending, not to be redelivered.
	if info := consumerInfo(t, b, StreamFeedback, "recsys"); info.NumAckPending != 0 || info.NumRedelivered != 0 {
		t.Fatalf("after dead-lettering: ack pending %d, redelivered %d", info.NumAckPending, info.NumRedelivered)
	}
}

func TestBusBadEventDeadLetteredAtOnce(t *testing.T) {
	srv := startTestNATS(t)
	b := connectTestBus(t, srv.URL())
	ctx := testContext(t)
	dlq := watchDeadLetters(t, b, DeadLetterSubject("recsys"))

	// A well-formed event the handler rejects, and bytes that are not JSON
	// (published around Publish, as a foreign client could).
	if err := b.Publish(ctx, FeedbackSubject("rating"), "unknown-kind", map[string]string{"kind": "teleport"}); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	if _, err := b.JS.Publish(ctx, FeedbackSubject("rating"), []byte("\x00not json")); err != nil {
		t.Fatalf("raw publish: %v", err)
	}

	var calls atomic.Int32
	stop, err := b.Consume(ctx, ConsumerSpec{Stream: StreamFeedback, Durable: "recsys", Logger: quietLogger()},
		func(_ context.Context, d Delivery) error {
			calls.Add(1)
			var v map[string]string
			if err := d.Decode(&v); err != nil {
				return err // Decode already marks malformed JSON as a bad event
			}
			return BadEvent(errors.New("unknown feedback kind " + v["kind"]))
		})
	if err != nil {
		t.Fatalf("Consume: %v", err)
	}
	got := map[uint64]DeadLetter{}
	for range 2 {
		dl := receive(t, dlq, "dead letter")
		got[dl.StreamSeq] = dl
	}
	stop()

	if dl := got[1]; dl.Cause != DeadLetterBadEvent || dl.Delivered != 1 || !strings.Contains(dl.Reason, "unknown feedback kind teleport") ||
		string(dl.Data) != `{"kind":"teleport"}` || dl.MsgID != "unknown-kind" {
		t.Errorf("rejected event's dead letter: %+v", dl)
	}
	if dl := got[2]; dl.Cause != DeadLetterBadEvent || dl.Delivered != 1 || !strings.Contains(dl.Reason, "decode") ||
		dl.Data != nil || string(dl.DataBase64) != "\x00not json" || string(dl.Payload()) != "\x00not json" {
		t.Errorf("malformed event's dead letter: %+v", dl)
	}
	if n := calls.Load(); n != 2 {
		t.Fatalf("handler called %d times, want once per message", n)
	}
}

func TestBusHandlerPanicIsAFailure(t *testing.T) {
	srv := startTestNATS(t)
	b := connectTestBus(t, srv.URL())
	ctx := testContext(t)
	dlq := watchDeadLetters(t, b, DeadLetterSubject("gather"))

	if err := b.Publish(ctx, EventSubject("model.published"), "m1", map[string]int{"version": 2}); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	stop, err := b.Consume(ctx, ConsumerSpec{Stream: StreamEvents, Durable: "gather", MaxDeliver: 1, Logger: quietLogger()},
		func(context.Context, Delivery) error { panic("nil map in handler") })
	if err != nil {
		t.Fatalf("Consume: %v", err)
	}
	dl := receive(t, dlq, "dead letter")
	stop()
	if dl.Cause != DeadLetterMaxDeliver || !strings.Contains(dl.Reason, "panic: nil map in handler") {
		t.Fatalf("dead letter %+v", dl)
	}
	if len(dl.Reason) > MaxDeadLetterReason+len("…") {
		t.Fatalf("reason is %d bytes, limit %d", len(dl.Reason), MaxDeadLetterReason)
	}
}

// A failing delivery is retried after a backoff and succeeds on a later try.
func TestBusRetryThenSucceed(t *testing.T) {
	srv := startTestNATS(t)
	b := connectTestBus(t, srv.URL())
	ctx := testContext(t)

	if err := b.Publish(ctx, FeedbackSubject("edit"), "e1", map[string]string{"text": "hello"}); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	done := make(chan uint64, 1)
	stop, err := b.Consume(ctx, ConsumerSpec{
		Stream: StreamFeedback, Durable: "edits", RetryBackoff: 10 * time.Millisecond, Logger: quietLogger(),
	}, func(_ context.Context, d Delivery) error {
		if d.NumDelivered < 3 {
			return errors.New("transient")
		}
		done <- d.NumDelivered
		return nil
	})
	if err != nil {
		t.Fatalf("Consume: %v", err)
	}
	if n := receive(t, done, "successful delivery"); n != 3 {
		t.Fatalf("succeeded on delivery %d, want 3", n)
	}
	stop()
	if n := streamMsgs(t, b, StreamDeadLetter); n != 0 {
		t.Fatalf("DEADLETTER holds %d messages, want 0", n)
	}
	if info := consumerInfo(t, b, StreamFeedback, "edits"); info.NumAckPending != 0 || info.AckFloor.Stream != 1 {
		t.Fatalf("ack pending %d, ack floor %d", info.NumAckPending, info.AckFloor.Stream)
	}
}

// Cancelling Consume's context stops consuming; stop still returns.
func TestBusConsumeStopsOnContextCancel(t *testing.T) {
	srv := startTestNATS(t)
	b := connectTestBus(t, srv.URL())
	ctx, cancel := context.WithCancel(testContext(t))

	got := make(chan struct{}, 4)
	stop, err := b.Consume(ctx, ConsumerSpec{Stream: StreamEvents, Durable: "ev", Concurrency: 4, Logger: quietLogger()},
		func(context.Context, Delivery) error { got <- struct{}{}; return nil })
	if err != nil {
		t.Fatalf("Consume: %v", err)
	}
	if err := b.Publish(testContext(t), EventSubject("batch.started"), "s1", 1); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	receive(t, got, "delivery")
	cancel()
	stopped := make(chan struct{})
	go func() { stop(); close(stopped) }()
	receive(t, stopped, "stop after cancel")
}

// The envelope of the largest message a stream stores, not JSON (so it is
// base64, 4/3 larger), with the longest names, id and reason, fits
// maxDeadLetterBytes: dead-lettering never fails for size.
func TestDeadLetterOfLargestEventFits(t *testing.T) {
	data := bytes.Repeat([]byte{0xff}, MaxEventBytes+headerAllowance)
	long := strings.Repeat("x", MaxTokenLen)
	dl := DeadLetter{
		Stream: long, Consumer: long, Subject: "tandem.feedback." + long, MsgID: strings.Repeat("m", MaxMsgIDLen),
		StreamSeq: ^uint64(0), Delivered: ^uint64(0), Cause: DeadLetterMaxDeliver,
		Reason:     truncateUTF8(strings.Repeat("é", MaxDeadLetterReason), MaxDeadLetterReason),
		FailedAt:   time.Now().UTC(),
		DataBase64: data,
	}
	b, err := json.Marshal(dl)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) > maxDeadLetterBytes {
		t.Fatalf("the largest dead letter is %d bytes; maxDeadLetterBytes is %d", len(b), maxDeadLetterBytes)
	}
}
