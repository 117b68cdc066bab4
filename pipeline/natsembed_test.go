package pipeline

import (
	"context"
	"fmt"
	"strings"
	"testing"
)

// Streams, messages and a durable consumer's ack state survive a restart of
// the server on the same store directory.
func TestEmbeddedNATSRestartKeepsStreams(t *testing.T) {
	checkNoLeaks(t)
	dir := t.TempDir()
	ctx := testContext(t)
	spec := ConsumerSpec{Stream: StreamFeedback, Durable: "recsys", Logger: quietLogger()}

	srv := startTestNATSAt(t, dir)
	b, err := ConnectBus(ctx, srv.URL())
	if err != nil {
		t.Fatalf("ConnectBus: %v", err)
	}
	if err := b.EnsureStreams(ctx); err != nil {
		t.Fatalf("EnsureStreams: %v", err)
	}
	publish := func(b *Bus, i int) {
		t.Helper()
		if err := b.Publish(ctx, FeedbackSubject("rating"), fmt.Sprintf("r%d", i), feedbackEvent{User: "u", Rating: i}); err != nil {
			t.Fatalf("Publish %d: %v", i, err)
		}
	}
	publish(b, 1)
	publish(b, 2)
	// Consume and ack the first two before the restart.
	got := make(chan Delivery, 3)
	stop, err := b.Consume(ctx, spec, func(_ context.Context, d Delivery) error { got <- d; return nil })
	if err != nil {
		t.Fatalf("Consume: %v", err)
	}
	receive(t, got, "delivery 1")
	receive(t, got, "delivery 2")
	stop()
	publish(b, 3)
	b.Close()
	srv.Shutdown()

	srv2 := startTestNATSAt(t, dir)
	b2 := connectTestBus(t, srv2.URL()) // EnsureStreams again: an update, not a reset
	if n := streamMsgs(t, b2, StreamFeedback); n != 3 {
		t.Fatalf("after restart FEEDBACK holds %d messages, want 3", n)
	}
	st, err := b2.JS.Stream(ctx, StreamFeedback)
	if err != nil {
		t.Fatalf("Stream: %v", err)
	}
	raw, err := st.GetMsg(ctx, 2)
	if err != nil {
		t.Fatalf("GetMsg 2: %v", err)
	}
	if string(raw.Data) != `{"user":"u","item":"","rating":2}` {
		t.Fatalf("message 2 after restart: %s", raw.Data)
	}
	// The durable remembers its acks: the first delivery now is message 3.
	stop2, err := b2.Consume(ctx, spec, func(_ context.Context, d Delivery) error { got <- d; return nil })
	if err != nil {
		t.Fatalf("Consume after restart: %v", err)
	}
	d := receive(t, got, "delivery after restart")
	stop2()
	if d.StreamSeq != 3 || d.NumDelivered != 1 || d.MsgID != "r3" {
		t.Fatalf("first delivery after restart: seq %d, delivered %d, id %q; want seq 3, first delivery, r3", d.StreamSeq, d.NumDelivered, d.MsgID)
	}
	// The dedupe window also survives: re-publishing r3 is a duplicate.
	ack, err := b2.PublishAck(ctx, FeedbackSubject("rating"), "r3", feedbackEvent{User: "u", Rating: 3})
	if err != nil || !ack.Duplicate {
		t.Fatalf("re-publish of r3 after restart: ack %+v, err %v; want a duplicate", ack, err)
	}
}

func TestEmbeddedNATSRejectsBadOptions(t *testing.T) {
	cases := []struct {
		dir  string
		opts []EmbeddedOption
		want string
	}{
		{"", nil, "storeDir"},
		{t.TempDir(), []EmbeddedOption{WithEmbeddedUser("u", "")}, "password"},
		{t.TempDir(), []EmbeddedOption{WithEmbeddedPort(70000)}, "port"},
		{t.TempDir(), []EmbeddedOption{WithEmbeddedMaxStore(0)}, "max store"},
		{t.TempDir(), []EmbeddedOption{WithEmbeddedUser("u", "p"), WithEmbeddedNKeyUser("UABC")}, "not both"},
	}
	for _, c := range cases {
		srv, err := StartEmbeddedNATS(c.dir, c.opts...)
		if err == nil {
			srv.Shutdown()
			t.Errorf("StartEmbeddedNATS(%q) succeeded, want error about %s", c.dir, c.want)
			continue
		}
		if !strings.Contains(err.Error(), c.want) {
			t.Errorf("StartEmbeddedNATS(%q) error %q does not mention %s", c.dir, err, c.want)
		}
	}
}
