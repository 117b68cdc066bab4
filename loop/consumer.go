package loop

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/tandem-ai/tandem/feedback"
	"github.com/tandem-ai/tandem/pipeline"
)

// MetricsDurable is the JetStream consumer the loop metrics read the
// FEEDBACK stream through, beside the recommender's own; its dead letters
// go to pipeline.DeadLetterSubject(MetricsDurable).
const MetricsDurable = "loop-metrics"

// maxClockSkew is how far after its stream timestamp an event's own time
// may lie before the stream's time is used instead.
const maxClockSkew = 5 * time.Minute

// ConsumeMetrics counts every generation feedback event of the FEEDBACK
// stream into m, through the durable consumer MetricsDurable. Every event
// passes the intake (Intake.AcceptDelivery) first, as in the recommender's
// consumer, and is dead-lettered if refused; valid events that are not
// generation feedback are acknowledged and skipped. Each event
// counts once (Metrics.Record), however often it is delivered. stop
// drains the consumer; close the bus after it.
func ConsumeMetrics(ctx context.Context, bus *pipeline.Bus, m *Metrics, logger *slog.Logger) (stop func(), err error) {
	if bus == nil || m == nil {
		return nil, errors.New("loop metrics consumer: needs a bus and Metrics")
	}
	if logger == nil {
		logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	intake := NewIntake(m.rdb)
	stop, err = bus.Consume(ctx, pipeline.ConsumerSpec{
		Stream:        pipeline.StreamFeedback,
		Durable:       MetricsDurable,
		FilterSubject: pipeline.SubjectFeedbackAll,
		Concurrency:   4, // Record is atomic per event, so order does not matter
		Logger:        logger,
	}, func(ctx context.Context, d pipeline.Delivery) error {
		return handleMetrics(ctx, intake, m, d, logger)
	})
	if err != nil {
		return nil, fmt.Errorf("loop metrics consumer: %w", err)
	}
	logger.Info("loop metrics consumer started", "durable", MetricsDurable)
	return stop, nil
}

// handleMetrics counts one delivery. Every event passes the intake first,
// as in the recommender's consumer, so both dead-letter the same events:
// the metrics' own refusals come after it.
func handleMetrics(ctx context.Context, intake *Intake, m *Metrics, d pipeline.Delivery, logger *slog.Logger) error {
	ev, err := intake.AcceptDelivery(ctx, d)
	if Refused(err) {
		return pipeline.BadEvent(err)
	}
	if err != nil {
		return err
	}
	if !ev.OnGeneration() {
		return nil // a plain recommender event
	}
	// The event's own time places it in its hour, unless it claims to be
	// from the future or from before the stream could have kept it.
	at := ev.Time
	if at.IsZero() || (!d.Published.IsZero() && (at.After(d.Published.Add(maxClockSkew)) || at.Before(d.Published.Add(-DefaultSeenTTL)))) {
		at = d.Published
	}
	if at.IsZero() {
		at = time.Now()
	}
	counted, err := m.Record(ctx, ev, at)
	if errors.Is(err, feedback.ErrInvalid) {
		return pipeline.BadEvent(err)
	}
	if err != nil {
		return err
	}
	if counted {
		logger.Debug("loop feedback counted", "id", ev.ID, "generation", ev.GenerationID, "action", ev.Action)
	}
	return nil
}
