package tokenstream

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/goleak"

	"github.com/tandem-ai/tandem/generation"
	"github.com/tandem-ai/tandem/pipeline"
)

// The tests close every bus and server they start: no goroutine may
// outlive them.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// testWait bounds the reader's waits: a failsafe against a hung test, not an
// assertion about speed.
const testWait = 30 * time.Second

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// startBus starts an embedded nats-server and connects n buses to it, all
// closed when the test ends.
func startBus(t *testing.T, n int) []*pipeline.Bus {
	t.Helper()
	ns, err := pipeline.StartEmbeddedNATS(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Shutdown)
	buses := make([]*pipeline.Bus, n)
	for i := range buses {
		if buses[i], err = pipeline.ConnectBus(context.Background(), ns.URL()); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(buses[i].Close)
	}
	return buses
}

// TestWriterTellsTheReaderWhenItsLastMessageFails sends a done message the
// bus refuses (larger than MaxEventBytes) through a real nats-server: the
// reader gets an error message in its place, in sequence, instead of
// nothing.
func TestWriterTellsTheReaderWhenItsLastMessageFails(t *testing.T) {
	bus := startBus(t, 1)[0]
	id, key := newID(), pipeline.NewSealKey()
	got := make(chan *nats.Msg, 4)
	stop, err := bus.SubscribeCoreChan(pipeline.GenTokensSubject(id), got)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	if err := bus.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	st, err := StartWriter(bus, id, key, func() {}, quiet)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	big := Message{Type: TypeDone, Text: strings.Repeat("x", pipeline.MaxEventBytes), Usage: &generation.Usage{}}
	if err := st.End(big); err == nil {
		t.Fatal("a done message over MaxEventBytes was sent")
	}
	rd := Decoder{Key: key}
	for _, want := range []string{TypeStart, TypeError} {
		m, err := rd.Decode(<-got)
		if err != nil || m.Type != want {
			t.Fatalf("message %+v (%v), want %s", m, err, want)
		}
		if want == TypeError && (m.Error.Code != CodeFailed || !strings.Contains(m.Error.Message, "done")) {
			t.Fatalf("error %+v, want %s naming the done message", m.Error, CodeFailed)
		}
	}
}

// TestReaderFollowsAWriterAndCancelsIt runs both ends on their own
// connections, as the producer and a worker do: the reader is subscribed
// before the job is enqueued, gets the start and the tokens in order, and
// when its client leaves after the start, its cancel reaches the writer,
// while a cancel without the stream key's seal does not.
func TestReaderFollowsAWriterAndCancelsIt(t *testing.T) {
	buses := startBus(t, 2)
	producer, worker := buses[0], buses[1]
	id, key := newID(), pipeline.NewSealKey()
	cancelled := make(chan struct{}) // closed twice, a panic, if the forged cancel counted
	var workerLog bytes.Buffer
	var w *Writer
	job := Job{StartTimeout: testWait, Delete: func() error { return errors.New("a worker has it") }, Enqueue: func(context.Context) error {
		var err error
		w, err = StartWriter(worker, id, key, func() { close(cancelled) }, slog.New(slog.NewTextHandler(&workerLog, nil)))
		if err != nil {
			return err
		}
		w.Token(1, 87, "x", nil)
		return nil
	}}
	r, err := Begin(context.Background(), producer, id, Decoder{Key: key, N: 2}, job, quiet)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close() // Begin has enqueued: the writer is there
	for _, want := range []Message{{Seq: 0, Type: TypeStart}, {Seq: 1, Type: TypeToken, Choice: 1, Text: "x"}} {
		m, err := r.Next(context.Background(), testWait)
		if err != nil || m.Seq != want.Seq || m.Type != want.Type || m.Choice != want.Choice || m.Text != want.Text {
			t.Fatalf("message %+v (%v), want %+v", m, err, want)
		}
	}
	// Someone else on the bus: ignored by the writer.
	if err := producer.PublishCore(pipeline.GenCancelSubject(id), struct{}{}); err != nil {
		t.Fatal(err)
	}
	gone, stop := context.WithCancel(context.Background())
	stop()
	if _, left, err := r.Follow(gone, testWait); !left || err != nil {
		t.Fatalf("Follow after the client left: gone %v, err %v", left, err)
	}
	<-cancelled
	// The writer handles its cancels in order: the forged one came first.
	if !w.Cancelled() || w.Lost() != 0 || !strings.Contains(workerLog.String(), "forged cancel ignored") {
		t.Fatalf("writer: cancelled %v, lost %d, log %q; want the forged cancel logged and the sealed one obeyed", w.Cancelled(), w.Lost(), workerLog.String())
	}
}

// TestReaderDeletesAQueuedJobInsteadOfCancelling: a generation abandoned
// while its job is still queued is taken off the queue, and nothing is
// sent on its cancel subject.
func TestReaderDeletesAQueuedJobInsteadOfCancelling(t *testing.T) {
	bus := startBus(t, 1)[0]
	id, key := newID(), pipeline.NewSealKey()
	cancels := make(chan []byte, 1)
	stop, err := bus.SubscribeCore(pipeline.GenCancelSubject(id), func(_ string, data []byte) { cancels <- data })
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	deleted := 0
	job := Job{StartTimeout: testWait, Enqueue: func(context.Context) error { return nil }, Delete: func() error { deleted++; return nil }}
	r, err := Begin(context.Background(), bus, id, Decoder{Key: key, N: 1}, job, quiet)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	r.Abandon()
	// A message this connection sends after the abandon arrives after any
	// cancel the abandon sent: NATS keeps one connection's messages in order.
	if err := bus.PublishCore(pipeline.GenCancelSubject(id), "marker"); err != nil {
		t.Fatal(err)
	}
	if got := <-cancels; string(got) != `"marker"` || deleted != 1 {
		t.Fatalf("first message on the cancel subject %s, deletes %d; want only the marker after one delete", got, deleted)
	}
}
