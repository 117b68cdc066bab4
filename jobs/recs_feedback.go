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
// message names the field.
var ErrBadFeedback = errors.New("bad feedback event")

// DecodeFeedbackEvent decodes and checks one feedback event (the JSON shape
// of recsys.Event, plus any extra fields such as a generation's for the
// fine-tune collector) with the same rules the recommender applies, so a
// producer refuses what the consumer would dead-letter.
func DecodeFeedbackEvent(data []byte) (recsys.Event, error) {
	if len(data) > pipeline.MaxEventBytes {
		return recsys.Event{}, fmt.Errorf("%w: %d bytes, limit %d", ErrBadFeedback, len(data), pipeline.MaxEventBytes)
	}
	var ev recsys.Event
	if err := json.Unmarshal(data, &ev); err != nil {
		return ev, fmt.Errorf("%w: %w", ErrBadFeedback, err)
	}
	check := ev
	if ev.Item == "" && GenerationOnly(data) {
		check.Item = "-" // every other field keeps the recommender's rules
	}
	if err := CheckFeedbackEvent(check); err != nil {
		return ev, err
	}
	return ev, nil
}

// GenerationOnly reports whether an event without an item is feedback on
// a generation made from neither a template nor a topic: the recommender
// has no item to credit and skips it, while the fine-tune collector and
// the loop metrics use it (see loop.NewFeedbackEvent).
func GenerationOnly(data []byte) bool {
	_, ok, err := loop.DecodeFeedbackEvent(data)
	return ok && err == nil
}

// CheckFeedbackEvent validates ev against the default event weights and
// limits, by adding it to a throwaway store: one set of rules, the
// recommender's own.
func CheckFeedbackEvent(ev recsys.Event) error {
	st, err := recsys.NewStore(recsys.StoreConfig{})
	if err != nil {
		return err
	}
	if err := st.Add(ev); err != nil {
		return fmt.Errorf("%w: %w", ErrBadFeedback, err)
	}
	if pipeline.FeedbackSubject(ev.Type) == "" {
		return fmt.Errorf("%w: field \"event\": %q cannot be a subject token", ErrBadFeedback, ev.Type)
	}
	return nil
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
		ev.ID = NewEventID()
		var fields map[string]json.RawMessage
		if err := json.Unmarshal(data, &fields); err != nil {
			return ev, fmt.Errorf("%w: %w", ErrBadFeedback, err)
		}
		fields["id"], _ = json.Marshal(ev.ID)
		b, err := json.Marshal(fields)
		if err != nil {
			return ev, err
		}
		body = b
	}
	if bus == nil {
		return ev, errors.New("feedback: no NATS connection (set TANDEM_NATS_URL)")
	}
	if err := bus.Publish(ctx, pipeline.FeedbackSubject(ev.Type), ev.ID, body); err != nil {
		return ev, err
	}
	return ev, nil
}
