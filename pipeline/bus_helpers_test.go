package pipeline

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"
)

// testWait bounds every wait in the bus tests. It is a failsafe against a
// hung test, not an assertion about speed.
const testWait = 30 * time.Second

// startTestNATS starts an embedded server on a fresh temp dir and shuts it
// down when the test ends; the test then fails if any goroutine it started
// (server, connections, consumers) is still running.
func startTestNATS(t *testing.T, opts ...EmbeddedOption) *EmbeddedNATS {
	t.Helper()
	checkNoLeaks(t)
	return startTestNATSAt(t, t.TempDir(), opts...)
}

// checkNoLeaks registers, as the test's last cleanup, a check that every
// goroutine started from now on has exited. Goroutines already running
// (other tests' leftovers, if any) are not this test's to answer for.
func checkNoLeaks(t *testing.T) {
	t.Helper()
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, ignore) })
}

func startTestNATSAt(t *testing.T, dir string, opts ...EmbeddedOption) *EmbeddedNATS {
	t.Helper()
	srv, err := StartEmbeddedNATS(dir, opts...)
	if err != nil {
		t.Fatalf("StartEmbeddedNATS: %v", err)
	}
	t.Cleanup(srv.Shutdown)
	return srv
}

// connectTestBus connects, creates the default streams and closes the bus
// when the test ends (before the server shuts down: cleanups run LIFO).
func connectTestBus(t *testing.T, url string, opts ...nats.Option) *Bus {
	t.Helper()
	ctx := testContext(t)
	b, err := ConnectBus(ctx, url, opts...)
	if err != nil {
		t.Fatalf("ConnectBus: %v", err)
	}
	t.Cleanup(b.Close)
	if err := b.EnsureStreams(ctx); err != nil {
		t.Fatalf("EnsureStreams: %v", err)
	}
	return b
}

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testWait)
	t.Cleanup(cancel)
	return ctx
}

// quietLogger keeps expected consumer warnings (retries, dead letters) out of
// the test output.
func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// receive waits for one value or fails the test.
func receive[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(testWait):
		t.Fatalf("timed out waiting for %s", what)
		var zero T
		return zero
	}
}

// eventually polls cond until it holds or the failsafe expires.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(testWait)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func streamMsgs(t *testing.T, b *Bus, stream string) uint64 {
	t.Helper()
	s, err := b.JS.Stream(testContext(t), stream)
	if err != nil {
		t.Fatalf("stream %s: %v", stream, err)
	}
	info, err := s.Info(testContext(t))
	if err != nil {
		t.Fatalf("stream %s info: %v", stream, err)
	}
	return info.State.Msgs
}

func consumerInfo(t *testing.T, b *Bus, stream, durable string) *jetstream.ConsumerInfo {
	t.Helper()
	c, err := b.JS.Consumer(testContext(t), stream, durable)
	if err != nil {
		t.Fatalf("consumer %s/%s: %v", stream, durable, err)
	}
	info, err := c.Info(testContext(t))
	if err != nil {
		t.Fatalf("consumer %s/%s info: %v", stream, durable, err)
	}
	return info
}

type feedbackEvent struct {
	User   string `json:"user"`
	Item   string `json:"item"`
	Rating int    `json:"rating"`
}
