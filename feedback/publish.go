package feedback

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"

	"github.com/tandem-ai/tandem/pipeline"
)

// Publish checks ev (Check) and publishes it to
// pipeline.FeedbackSubject(its type) with Nats-Msg-Id = its id, so
// JetStream drops a resend within its window and the consumers drop a
// later redelivery. An event without an id gets a random one (rand.Text). It returns
// the event as published. Every feedback event Tandem publishes goes
// through it; callers that take events from others pass them through the
// intake (loop.Intake) first.
func Publish(ctx context.Context, bus *pipeline.Bus, ev Event) (Event, error) {
	if err := ev.Check(""); err != nil {
		return ev, err
	}
	if ev.ID == "" {
		ev.ID = rand.Text()
	}
	body, err := ev.Encode()
	if err != nil {
		return ev, err
	}
	if bus == nil {
		return ev, errors.New("feedback: no NATS connection (set TANDEM_NATS_URL)")
	}
	return ev, bus.Publish(ctx, pipeline.FeedbackSubject(ev.Type), ev.ID, json.RawMessage(body))
}
