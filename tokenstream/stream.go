package tokenstream

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/tandem-ai/tandem/generation"
	"github.com/tandem-ai/tandem/limits"
	"github.com/tandem-ai/tandem/pipeline"
)

// Writer is the worker's end of one generation's stream: it publishes the
// messages with their sequence numbers and listens for the producer's
// cancel. A failed token publish is counted (Lost), not fatal: the reader
// sees the gap in the sequence.
type Writer struct {
	bus       *pipeline.Bus
	subject   string
	key       string // the generation's stream key
	seq, lost int
	cancelled atomic.Bool
	stop      func()
}

// StartWriter opens the worker's end of generation id's stream, sealed
// with key: it subscribes to the cancel subject, then sends the start
// message. The producer sends a cancel only after it saw the start (or
// deleted the task while still queued), and NATS keeps one connection's
// SUB and PUB in order, so no cancel is lost. A cancel sealed with key
// calls cancel; any other (anyone else on the bus: a JetStream consumer
// can deliver to any subject) is logged and ignored. Close stops
// listening.
func StartWriter(bus *pipeline.Bus, id, key string, cancel func(), logger *slog.Logger) (*Writer, error) {
	w := &Writer{bus: bus, subject: pipeline.GenTokensSubject(id), key: key}
	stop, err := bus.SubscribeCoreSealed(pipeline.GenCancelSubject(id), key, func(_ string, _ []byte, err error) {
		if err != nil {
			logger.Warn("interactive: forged cancel ignored", "id", id, "err", err)
			return
		}
		w.cancelled.Store(true)
		cancel()
	})
	if err != nil {
		return nil, err
	}
	w.stop = stop
	if err := w.End(Message{Type: TypeStart}); err != nil {
		stop()
		return nil, err
	}
	return w, nil
}

// Close stops listening for a cancel.
func (w *Writer) Close() { w.stop() }

// Cancelled reports whether the producer has cancelled the generation.
func (w *Writer) Cancelled() bool { return w.cancelled.Load() }

// Lost is the number of token messages that could not be published.
func (w *Writer) Lost() int { return w.lost }

// Send publishes m as the next message.
func (w *Writer) Send(m Message) error {
	m.Seq = w.seq
	w.seq++
	return w.bus.PublishCoreSealed(w.subject, w.key, m)
}

// End sends a message after which the stream may end (start, when the
// worker cannot go on without it, and done). If it cannot be sent, a small
// error message takes its sequence number (nothing was sent under it), so
// the reader is told at once instead of waiting out its timeout.
func (w *Writer) End(m Message) error {
	err := w.Send(m)
	if err != nil {
		w.seq--
		_ = w.Send(Message{Type: TypeError, Error: &Fault{Code: CodeFailed, Message: fmt.Sprintf("the worker could not send its %s message", m.Type)}})
	}
	return err
}

// Token sends one generated token of choice with the text it made final
// and, when the generation asked for them, its log probabilities.
func (w *Writer) Token(choice int, t int32, text string, lp *generation.LogprobEntry) {
	if w.Send(Message{Type: TypeToken, Choice: choice, Token: &t, Text: text, Logprobs: lp}) != nil {
		w.lost++
	}
}

// Job is the queue's side of one generation, as the producer's end of its
// stream needs it.
type Job struct {
	// Enqueue puts the job on the queue.
	Enqueue func(context.Context) error
	// Delete takes it off again; it fails once a worker has the job.
	Delete func() error
	// StartTimeout bounds the wait for the server to hold the subscription
	// and, once the job is enqueued, for a worker's start message.
	StartTimeout time.Duration
}

// Reader is the producer's end of one generation's stream (Begin).
type Reader struct {
	bus      *pipeline.Bus
	id       string
	job      Job
	logger   *slog.Logger
	stop     func()
	msgs     chan *nats.Msg
	dec      Decoder
	started  bool
	finished bool
	// startBy is when the start message is due (enqueue + StartTimeout);
	// Abandon waits for it no later than this, or startGrace from when it
	// is called, so a request that already waited out its start timeout
	// does not wait that long a second time.
	startBy time.Time
}

// startGrace bounds Abandon's wait for the start of a job that left the
// queue: a worker subscribes and sends start as soon as it has the job, in
// milliseconds; this leaves room for a loaded machine.
const startGrace = 2 * time.Second

// ErrTimeout means the worker sent nothing for too long.
var ErrTimeout = errors.New("no message from the worker in time")

// Begin opens the producer's end of generation id's stream: it subscribes
// to the token subject, makes sure the server has the subscription, so
// that no worker can publish before it, then enqueues the job. dec checks
// every message (the stream key and the number of choices); a forged one
// is logged to logger.
func Begin(ctx context.Context, bus *pipeline.Bus, id string, dec Decoder, job Job, logger *slog.Logger) (*Reader, error) {
	// Room for every message a generation can send, so a slow client
	// never makes the subscription drop one.
	r := &Reader{bus: bus, id: id, job: job, logger: logger, msgs: make(chan *nats.Msg, max(dec.N, 1)*limits.InteractiveTokens+4), dec: dec}
	stop, err := bus.SubscribeCoreChan(pipeline.GenTokensSubject(id), r.msgs)
	if err != nil {
		return nil, fmt.Errorf("subscribe to the token stream: %w", err)
	}
	r.stop = stop
	fctx, cancel := context.WithTimeout(ctx, job.StartTimeout)
	defer cancel()
	if err := bus.Flush(fctx); err != nil {
		stop()
		return nil, fmt.Errorf("subscribe to the token stream: %w", err)
	}
	if err := job.Enqueue(ctx); err != nil {
		stop()
		return nil, err
	}
	r.startBy = time.Now().Add(job.StartTimeout)
	return r, nil
}

// Close unsubscribes.
func (r *Reader) Close() { r.stop() }

// Next returns the stream's next message, checked by the Decoder, waiting
// up to timeout for it.
func (r *Reader) Next(ctx context.Context, timeout time.Duration) (Message, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return Message{}, ctx.Err()
	case <-t.C:
		return Message{}, ErrTimeout
	case raw := <-r.msgs:
		m, err := r.dec.Decode(raw)
		switch {
		case errors.Is(err, pipeline.ErrForged):
			r.logger.Warn("interactive: forged message on the token stream refused; the request ends with an error", "id", r.id, "err", err)
		case err == nil && m.Type == TypeStart:
			r.started = true
		case err == nil && (m.Type == TypeDone || m.Type == TypeError):
			r.finished = true
		}
		return m, err
	}
}

// Follow is Next, but when ctx ends (gone: the client left) or the stream
// fails (err), the generation is abandoned first.
func (r *Reader) Follow(ctx context.Context, timeout time.Duration) (m Message, gone bool, err error) {
	m, err = r.Next(ctx, timeout)
	if ctx.Err() != nil {
		r.Abandon()
		return m, true, nil
	}
	if err != nil {
		r.Abandon()
	}
	return m, false, err
}

// Abandon stops a generation nobody waits for any more: it deletes the job
// if it is still queued; otherwise it waits for the worker's start message
// (until startBy, or startGrace when that has passed), after which the
// worker surely listens, and sends the cancel, sealed, so that it cannot
// be lost in between.
func (r *Reader) Abandon() {
	if r.finished {
		return
	}
	if !r.started {
		if r.job.Delete() == nil {
			return // never ran
		}
		// Running (or just finished): its start is on the way, if not here.
		wait := max(time.Until(r.startBy), min(startGrace, r.job.StartTimeout))
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		for !r.started && !r.finished {
			if _, err := r.Next(ctx, wait); err != nil {
				break
			}
		}
		if r.finished {
			return
		}
	}
	// Sealed like the stream, so the worker acts only on the producer's.
	if err := r.bus.PublishCoreSealed(pipeline.GenCancelSubject(r.id), r.dec.Key, struct{}{}); err != nil {
		r.logger.Warn("interactive: cancel not sent", "id", r.id, "err", err)
	}
	_ = r.bus.Flush(context.Background())
}
