package batch

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tandem-ai/tandem/pipeline"
)

// EventSchema versions the lifecycle event envelope. A change that breaks
// readers gets a new version; adding fields to data does not.
const EventSchema = "tandem.event/v1"

// Event is the envelope of every lifecycle event, on NATS JetStream
// (subject tandem.events.<type>) and in webhook bodies alike. docs/EVENTS.md
// documents it.
type Event struct {
	Schema string          `json:"schema"` // EventSchema
	Type   string          `json:"type"`   // e.g. "batch.completed"
	ID     string          `json:"id"`     // unique per event; the same on redelivery
	Time   time.Time       `json:"time"`   // when it happened (RFC 3339, UTC)
	Data   json.RawMessage `json:"data"`   // per type; for batch.* the batch object
}

// Batch lifecycle event types: one per final status.
const (
	EventBatchCompleted = "batch.completed"
	EventBatchFailed    = "batch.failed"
	EventBatchCancelled = "batch.cancelled"
	EventBatchExpired   = "batch.expired"
)

// batchEvent builds the event for a finished batch. Its id derives from the
// batch and status, so announcing twice gives the same id, and JetStream
// (Nats-Msg-Id) and the webhook task ids drop the repeat.
func batchEvent(b *Batch) (Event, error) {
	data, err := json.Marshal(b)
	if err != nil {
		return Event{}, err
	}
	at := b.CompletedAt
	switch b.Status {
	case StatusFailed:
		at = b.FailedAt
	case StatusCancelled:
		at = b.CancelledAt
	case StatusExpired:
		at = b.ExpiredAt
	}
	return Event{
		Schema: EventSchema,
		Type:   "batch." + string(b.Status),
		ID:     "evt_" + b.ID + "_" + string(b.Status),
		Time:   time.Unix(at, 0).UTC(),
		Data:   data,
	}, nil
}

// Progress is a batch's progress, published on core NATS at
// pipeline.BatchProgressSubject(id) whenever a chunk counts or the status
// changes. Progress is ephemeral: a lost update is replaced by the next.
type Progress struct {
	BatchID       string    `json:"batch_id"`
	Status        Status    `json:"status"`
	RequestCounts Counts    `json:"request_counts"`
	ChunksDone    int       `json:"chunks_done"`
	Chunks        int       `json:"chunks"`
	Time          time.Time `json:"time"`
}

// publishProgress sends p when a bus is present; progress is best effort.
func publishProgress(bus *pipeline.Bus, p Progress) {
	if bus == nil {
		return
	}
	_ = bus.PublishCore(pipeline.BatchProgressSubject(p.BatchID), p)
}

// publishEvent stores ev on the EVENTS stream. When the stream does not
// exist yet (a worker that started before any scheduler), it creates the
// default streams once and tries again.
func publishEvent(ctx context.Context, bus *pipeline.Bus, ev Event) error {
	subject := pipeline.EventSubject(ev.Type)
	err := bus.Publish(ctx, subject, ev.ID, ev)
	if errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, jetstream.ErrStreamNotFound) {
		if eerr := bus.EnsureStreams(ctx); eerr != nil {
			return fmt.Errorf("publish %s: %w (creating streams: %v)", subject, err, eerr)
		}
		err = bus.Publish(ctx, subject, ev.ID, ev)
	}
	return err
}
