package jobs

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/tandem-ai/tandem/loop"
	"github.com/tandem-ai/tandem/pipeline"
	"github.com/tandem-ai/tandem/recsys"
)

// ErrBadFeedback marks a feedback event refused before publishing; the
// message names the field. It is loop.ErrBadFeedback: the intake's.
var ErrBadFeedback = loop.ErrBadFeedback

// DecodeFeedbackEvent decodes and checks one feedback event (the JSON shape
// of recsys.Event, plus a generation's fields for feedback on one) with the
// part of the intake that needs no Redis (loop.CheckValues): the same rules
// every consumer applies, so a client refuses what the consumers would
// dead-letter. Whether a generation exists and is its user's is checked
// where Redis is at hand (loop.Intake).
func DecodeFeedbackEvent(data []byte) (recsys.Event, error) {
	ce, err := loop.CheckValues("", data)
	return ce.Event, err
}

// NewEventID returns a random 128-bit hex id for an event without one.
func NewEventID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
	return hex.EncodeToString(b[:])
}

// PublishFeedback checks one feedback event (JSON) and publishes it to
// FeedbackSubject(event type) with Nats-Msg-Id = its id, so JetStream drops
// a resend within its window and the recommender drops a later redelivery.
// An event without an id gets a random one, written into the body. Extra
// fields are kept. It returns the event as published.
func PublishFeedback(ctx context.Context, bus *pipeline.Bus, data []byte) (recsys.Event, error) {
	ev, err := DecodeFeedbackEvent(data)
	if err != nil {
		return ev, err
	}
	body := json.RawMessage(bytes.TrimSpace(data))
	if ev.ID == "" {
		if body, ev.ID, err = WithEventID(data); err != nil {
			return ev, err
		}
	}
	if bus == nil {
		return ev, errors.New("feedback: no NATS connection (set TANDEM_NATS_URL)")
	}
	if err := bus.Publish(ctx, pipeline.FeedbackSubject(ev.Type), ev.ID, body); err != nil {
		return ev, err
	}
	return ev, nil
}

// WithEventID returns the event data with a random id (NewEventID) written
// into it, and the id; fields are kept.
func WithEventID(data []byte) ([]byte, string, error) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(data, &fields); err != nil {
		return nil, "", fmt.Errorf("%w: %w", ErrBadFeedback, err)
	}
	id := NewEventID()
	fields["id"], _ = json.Marshal(id)
	b, err := json.Marshal(fields)
	return b, id, err
}
