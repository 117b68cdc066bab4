package pipeline

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Publish stores v, JSON-encoded, on the JetStream stream that owns subject
// and waits for the server's acknowledgement. A non-empty msgID becomes the
// Nats-Msg-Id header: the stream keeps one copy per id within
// DuplicateWindow, so retrying a publish is harmless. v is encoded with
// encoding/json (a json.RawMessage passes through; a []byte would become a
// base64 string).
func (b *Bus) Publish(ctx context.Context, subject, msgID string, v any) error {
	_, err := b.PublishAck(ctx, subject, msgID, v)
	return err
}

// PublishAck is Publish returning the server's acknowledgement: the stream,
// its sequence, and whether the message was a duplicate.
func (b *Bus) PublishAck(ctx context.Context, subject, msgID string, v any) (*jetstream.PubAck, error) {
	if err := validateSubject(subject, false); err != nil {
		return nil, err
	}
	data, err := encodeEvent(v)
	if err != nil {
		return nil, fmt.Errorf("pipeline: publish %s: %w", subject, err)
	}
	return b.publishRaw(ctx, subject, msgID, data)
}

// publishRaw publishes bytes already encoded and size-checked by the caller.
func (b *Bus) publishRaw(ctx context.Context, subject, msgID string, data []byte) (*jetstream.PubAck, error) {
	if err := validateMsgID(msgID); err != nil {
		return nil, err
	}
	if b.isClosed() {
		return nil, ErrBusClosed
	}
	msg := nats.NewMsg(subject)
	msg.Data = data
	if msgID != "" {
		msg.Header.Set(jetstream.MsgIDHeader, msgID)
	}
	ack, err := b.JS.PublishMsg(ctx, msg)
	if err != nil {
		return nil, fmt.Errorf("pipeline: publish %s (msg id %q): %w", subject, msgID, err)
	}
	return ack, nil
}

// PublishCore sends v, JSON-encoded, on core NATS: fire-and-forget, not
// stored, delivered only to current subscribers. For progress and token
// streams, where a lost update is replaced by the next one.
func (b *Bus) PublishCore(subject string, v any) error {
	if err := validateSubject(subject, false); err != nil {
		return err
	}
	data, err := encodeEvent(v)
	if err != nil {
		return fmt.Errorf("pipeline: publish %s: %w", subject, err)
	}
	if b.isClosed() {
		return ErrBusClosed
	}
	if err := b.NC.Publish(subject, data); err != nil {
		return fmt.Errorf("pipeline: publish %s: %w", subject, err)
	}
	return nil
}

// SubscribeCore delivers core-NATS messages on subject (wildcards allowed) to
// h, one at a time in arrival order. stop unsubscribes; messages already
// queued are dropped.
func (b *Bus) SubscribeCore(subject string, h func(subject string, data []byte)) (stop func(), err error) {
	if h == nil {
		return nil, fmt.Errorf("pipeline: subscribe %s: handler is nil", subject)
	}
	return b.subscribeCore(subject, func() (*nats.Subscription, error) {
		return b.NC.Subscribe(subject, func(m *nats.Msg) { h(m.Subject, m.Data) })
	})
}

// SubscribeCoreChan is SubscribeCore delivering whole messages (CheckSeal
// reads their headers) into ch, for a reader that waits with a timeout;
// one that finds ch full is dropped.
func (b *Bus) SubscribeCoreChan(subject string, ch chan *nats.Msg) (stop func(), err error) {
	return b.subscribeCore(subject, func() (*nats.Subscription, error) { return b.NC.ChanSubscribe(subject, ch) })
}

// subscribeCore checks subject and the Bus, then subscribes.
func (b *Bus) subscribeCore(subject string, subscribe func() (*nats.Subscription, error)) (stop func(), err error) {
	if err := validateSubject(subject, true); err != nil {
		return nil, err
	}
	if b.isClosed() {
		return nil, ErrBusClosed
	}
	sub, err := subscribe()
	if err != nil {
		return nil, fmt.Errorf("pipeline: subscribe %s: %w", subject, err)
	}
	return func() { _ = sub.Unsubscribe() }, nil
}

// Flush waits until the server has processed what was sent (subscriptions
// too), within ctx's deadline or, without one, nats.Conn.Flush's 10 s.
func (b *Bus) Flush(ctx context.Context) error {
	if _, ok := ctx.Deadline(); !ok {
		return b.NC.Flush()
	}
	return b.NC.FlushWithContext(ctx)
}

func encodeEvent(v any) ([]byte, error) {
	data, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("encode event: %w", err)
	}
	if len(data) > MaxEventBytes {
		return nil, fmt.Errorf("%w: %d bytes encoded, limit MaxEventBytes = %d; put bulk data in the artifact store and send its key",
			ErrEventTooLarge, len(data), MaxEventBytes)
	}
	return data, nil
}

// validateMsgID keeps header values single-line and bounded: a CR or LF in a
// header value would corrupt the NATS protocol frame.
func validateMsgID(id string) error {
	if len(id) > MaxMsgIDLen {
		return fmt.Errorf("%w: %d bytes, limit %d", ErrBadMsgID, len(id), MaxMsgIDLen)
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; c < ' ' || c == 0x7f {
			return fmt.Errorf("%w: control byte %#x at %d", ErrBadMsgID, c, i)
		}
	}
	return nil
}
