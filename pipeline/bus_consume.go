package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tandem-ai/tandem/limits"
)

// ConsumerSpec describes a durable pull consumer. Zero fields take the
// defaults noted; out-of-range values are refused with the field's name.
type ConsumerSpec struct {
	Stream        string // required, e.g. StreamFeedback
	Durable       string // required; survives restarts, shared by replicas
	FilterSubject string // optional; wildcards allowed

	AckWait       time.Duration // redelivery after this long without ack; default 30s
	MaxDeliver    int           // failed deliveries before dead-lettering; default 5, at most 100 (the server allows 3 more, see deadLetterSlack)
	MaxAckPending int           // unacked messages in flight across replicas; default 1000
	Concurrency   int           // handlers running at once in this process; default 1, at most 256

	// DeadLetterSubject receives the envelope of a message given up on;
	// default DeadLetterSubject(Durable). A stream must store it.
	DeadLetterSubject string

	// RetryBackoff is the Nak delay after the first failure, doubling per
	// delivery up to MaxRetryBackoff; defaults 1s and 1m.
	RetryBackoff    time.Duration
	MaxRetryBackoff time.Duration

	// HandlerTimeout bounds one handler call (its context is cancelled);
	// default 5m. While a handler runs, the consumer tells the server it is
	// still working, so AckWait need not cover slow handlers.
	HandlerTimeout time.Duration

	Logger *slog.Logger // default slog.Default()
}

// Consumer limits and defaults.
const (
	defaultAckWait        = 30 * time.Second
	defaultMaxDeliver     = 5
	maxMaxDeliver         = limits.ConsumerMaxDeliver
	defaultMaxAckPending  = 1000
	maxConcurrency        = limits.ConsumerConcurrency
	defaultRetryBackoff   = time.Second
	defaultMaxBackoff     = time.Minute
	defaultHandlerTimeout = 5 * time.Minute
	minAckWait            = limits.MinConsumerAckWait
	maxConsumerDuration   = limits.ConsumerDuration
	ackTimeout            = 5 * time.Second

	// deadLetterSlack lets the server redeliver a few times past MaxDeliver,
	// so a message whose dead-letter publish failed is retried rather than
	// stranded, and a process that crashed on the last delivery still gets
	// to dead-letter it.
	deadLetterSlack = 3
)

func (s ConsumerSpec) withDefaults() (ConsumerSpec, error) {
	if err := ValidateID(s.Stream); err != nil {
		return s, fmt.Errorf("ConsumerSpec.Stream: %w", err)
	}
	if err := ValidateID(s.Durable); err != nil {
		return s, fmt.Errorf("ConsumerSpec.Durable: %w", err)
	}
	if s.FilterSubject != "" {
		if err := validateSubject(s.FilterSubject, true); err != nil {
			return s, fmt.Errorf("ConsumerSpec.FilterSubject: %w", err)
		}
	}
	if s.DeadLetterSubject == "" {
		s.DeadLetterSubject = DeadLetterSubject(s.Durable)
	}
	if err := validateSubject(s.DeadLetterSubject, false); err != nil {
		return s, fmt.Errorf("ConsumerSpec.DeadLetterSubject: %w", err)
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&s.AckWait, defaultAckWait)
	def(&s.RetryBackoff, defaultRetryBackoff)
	def(&s.MaxRetryBackoff, defaultMaxBackoff)
	def(&s.HandlerTimeout, defaultHandlerTimeout)
	if s.MaxDeliver == 0 {
		s.MaxDeliver = defaultMaxDeliver
	}
	if s.Concurrency == 0 {
		s.Concurrency = 1
	}
	if s.MaxAckPending == 0 {
		s.MaxAckPending = max(defaultMaxAckPending, s.Concurrency)
	}
	if s.Logger == nil {
		s.Logger = slog.Default()
	}
	switch {
	case s.AckWait < minAckWait:
		return s, fmt.Errorf("ConsumerSpec.AckWait %v is below %v", s.AckWait, minAckWait)
	case s.MaxDeliver < 1 || s.MaxDeliver > maxMaxDeliver:
		return s, fmt.Errorf("ConsumerSpec.MaxDeliver %d must be within [1, %d]", s.MaxDeliver, maxMaxDeliver)
	case s.Concurrency < 1 || s.Concurrency > maxConcurrency:
		return s, fmt.Errorf("ConsumerSpec.Concurrency %d must be within [1, %d]", s.Concurrency, maxConcurrency)
	case s.MaxAckPending < s.Concurrency:
		return s, fmt.Errorf("ConsumerSpec.MaxAckPending %d is below Concurrency %d", s.MaxAckPending, s.Concurrency)
	case s.RetryBackoff < 0 || s.MaxRetryBackoff < s.RetryBackoff:
		return s, fmt.Errorf("ConsumerSpec.RetryBackoff %v / MaxRetryBackoff %v: need 0 <= RetryBackoff <= MaxRetryBackoff", s.RetryBackoff, s.MaxRetryBackoff)
	case s.HandlerTimeout < 0:
		return s, fmt.Errorf("ConsumerSpec.HandlerTimeout %v is negative", s.HandlerTimeout)
	case s.AckWait > maxConsumerDuration || s.MaxRetryBackoff > maxConsumerDuration || s.HandlerTimeout > maxConsumerDuration:
		return s, fmt.Errorf("ConsumerSpec: AckWait, MaxRetryBackoff and HandlerTimeout must be at most %v", maxConsumerDuration)
	}
	return s, nil
}

// Delivery is one JetStream message handed to a HandlerFunc.
type Delivery struct {
	Stream       string
	Consumer     string
	Subject      string
	MsgID        string // Nats-Msg-Id, "" if the publisher set none
	Data         []byte
	Header       nats.Header
	NumDelivered uint64 // 1 on first delivery
	StreamSeq    uint64
	ConsumerSeq  uint64
	Published    time.Time // when the stream stored it
}

// Decode unmarshals the JSON payload into v. Malformed JSON is a BadEvent:
// retrying cannot fix it.
func (d Delivery) Decode(v any) error {
	if err := json.Unmarshal(d.Data, v); err != nil {
		return BadEvent(fmt.Errorf("decode %s seq %d: %w", d.Subject, d.StreamSeq, err))
	}
	return nil
}

// HandlerFunc processes one delivery. nil acks it. An error wrapped by
// BadEvent dead-letters it at once. Any other error retries it after a
// backoff, and dead-letters it once MaxDeliver deliveries have failed.
// Handlers must be idempotent: delivery is at least once.
type HandlerFunc func(ctx context.Context, d Delivery) error

// consumerRun is one Consume call: a message iterator and its workers.
type consumerRun struct {
	bus  *Bus
	spec ConsumerSpec
	h    HandlerFunc
	ctx  context.Context
	iter jetstream.MessagesContext

	workers     sync.WaitGroup
	drainOnce   sync.Once
	stoppedOnce sync.Once
	stopped     chan struct{} // closed after the workers exit
	watcherDone chan struct{} // closed when the ctx watcher exits
}

// Consume creates or updates the durable consumer and runs h on its messages
// until stop is called, ctx is cancelled or the Bus closes. stop stops
// fetching, lets buffered and in-flight messages finish, and returns when
// every handler has returned. The handlers' context derives from ctx.
func (b *Bus) Consume(ctx context.Context, spec ConsumerSpec, h HandlerFunc) (stop func(), err error) {
	if h == nil {
		return nil, errors.New("pipeline: Consume: handler is nil")
	}
	spec, err = spec.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("pipeline: Consume: %w", err)
	}
	if b.isClosed() {
		return nil, ErrBusClosed
	}
	// A dead letter nobody stores is lost; find out now, not at the first failure.
	if _, err := b.JS.StreamNameBySubject(ctx, spec.DeadLetterSubject); err != nil {
		return nil, fmt.Errorf("pipeline: Consume %s: no stream stores dead-letter subject %s (run EnsureStreams): %w",
			spec.Durable, spec.DeadLetterSubject, err)
	}
	cons, err := b.JS.CreateOrUpdateConsumer(ctx, spec.Stream, jetstream.ConsumerConfig{
		Durable:       spec.Durable,
		Description:   "tandem consumer " + spec.Durable,
		FilterSubject: spec.FilterSubject,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       spec.AckWait,
		MaxDeliver:    spec.MaxDeliver + deadLetterSlack,
		MaxAckPending: spec.MaxAckPending,
		ReplayPolicy:  jetstream.ReplayInstantPolicy,
	})
	if err != nil {
		return nil, fmt.Errorf("pipeline: Consume: create consumer %s on %s: %w", spec.Durable, spec.Stream, err)
	}
	// A small prefetch: a buffered message's AckWait is already running, so a
	// deep buffer behind slow handlers would cause needless redeliveries.
	iter, err := cons.Messages(
		jetstream.PullMaxMessages(2*spec.Concurrency),
		jetstream.WithMessagesErrOnMissingHeartbeat(false),
	)
	if err != nil {
		return nil, fmt.Errorf("pipeline: Consume %s: %w", spec.Durable, err)
	}
	r := &consumerRun{
		bus: b, spec: spec, h: h, ctx: ctx, iter: iter,
		stopped:     make(chan struct{}),
		watcherDone: make(chan struct{}),
	}
	if err := b.register(r); err != nil {
		iter.Stop()
		return nil, err
	}
	for range spec.Concurrency {
		r.workers.Add(1)
		go r.work()
	}
	go r.watch()
	return r.stop, nil
}

// watch drains the iterator when ctx ends, so cancelling ctx stops consuming
// without a call to stop.
func (r *consumerRun) watch() {
	defer close(r.watcherDone)
	select {
	case <-r.ctx.Done():
		r.drain()
	case <-r.stopped:
	}
}

func (r *consumerRun) drain() { r.drainOnce.Do(r.iter.Drain) }

func (r *consumerRun) stop() {
	r.drain()
	r.workers.Wait()
	r.stoppedOnce.Do(func() { close(r.stopped) })
	<-r.watcherDone
	r.bus.unregister(r)
}

func (r *consumerRun) work() {
	defer r.workers.Done()
	for {
		msg, err := r.iter.Next()
		if err != nil {
			if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				return
			}
			// Transient (reconnect, leadership change): the iterator keeps
			// pulling; a terminal error closes it and the next call returns.
			r.spec.Logger.Warn("nats consumer: next message", "durable", r.spec.Durable, "err", err)
			continue
		}
		r.handle(msg)
	}
}

// handle runs the handler on one message and settles it: ack, retry later,
// or dead-letter.
func (r *consumerRun) handle(msg jetstream.Msg) {
	meta, err := msg.Metadata()
	if err != nil {
		// Not a JetStream delivery; nothing to retry.
		r.spec.Logger.Error("nats consumer: message without metadata", "durable", r.spec.Durable, "err", err)
		_ = msg.Term()
		return
	}
	d := Delivery{
		Stream:       meta.Stream,
		Consumer:     meta.Consumer,
		Subject:      msg.Subject(),
		MsgID:        msg.Headers().Get(jetstream.MsgIDHeader),
		Data:         msg.Data(),
		Header:       msg.Headers(),
		NumDelivered: meta.NumDelivered,
		StreamSeq:    meta.Sequence.Stream,
		ConsumerSeq:  meta.Sequence.Consumer,
		Published:    meta.Timestamp,
	}
	herr := r.call(msg, d)
	log := r.spec.Logger.With("durable", r.spec.Durable, "subject", d.Subject, "stream_seq", d.StreamSeq, "delivered", d.NumDelivered)
	switch {
	case herr == nil:
		// A confirmed ack: once stop returns, the server has recorded every
		// success, so a restart does not replay handled messages.
		ctx, cancel := context.WithTimeout(context.WithoutCancel(r.ctx), ackTimeout)
		err := msg.DoubleAck(ctx)
		cancel()
		if err != nil {
			log.Warn("nats consumer: ack failed; the message will be redelivered", "err", err)
		}
	case IsBadEvent(herr):
		r.deadLetter(msg, d, herr, DeadLetterBadEvent, log)
	case r.ctx.Err() != nil:
		// Shutting down: the failure may be ours, not the message's.
		_ = msg.Nak()
	case d.NumDelivered >= uint64(r.spec.MaxDeliver):
		r.deadLetter(msg, d, herr, DeadLetterMaxDeliver, log)
	default:
		delay := r.backoff(d.NumDelivered)
		log.Info("nats consumer: handler failed; retrying", "err", herr, "retry_in", delay)
		if err := msg.NakWithDelay(delay); err != nil {
			log.Warn("nats consumer: nak failed; redelivery after AckWait", "err", err)
		}
	}
}

// call runs the handler with a timeout, turns a panic into an error, and
// keeps the message's ack deadline moving while the handler works.
func (r *consumerRun) call(msg jetstream.Msg, d Delivery) (err error) {
	ctx, cancel := context.WithTimeout(r.ctx, r.spec.HandlerTimeout)
	defer cancel()
	keepAliveDone := make(chan struct{})
	go func() {
		defer close(keepAliveDone)
		t := time.NewTicker(r.spec.AckWait / 2)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				_ = msg.InProgress() // a failure means the connection is gone; redelivery follows
			}
		}
	}()
	defer func() {
		cancel()
		<-keepAliveDone
	}()
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("handler panic: %v\n%s", p, debug.Stack())
		}
	}()
	return r.h(ctx, d)
}

// backoff returns the Nak delay after the n-th delivery failed.
func (r *consumerRun) backoff(n uint64) time.Duration {
	d := r.spec.RetryBackoff
	for i := uint64(1); i < n && d < r.spec.MaxRetryBackoff; i++ {
		d *= 2
	}
	return min(d, r.spec.MaxRetryBackoff)
}
