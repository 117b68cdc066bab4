package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"sync"

	"github.com/redis/go-redis/v9"

	"github.com/tandem-ai/tandem/finetune"
	"github.com/tandem-ai/tandem/jobs"
	"github.com/tandem-ai/tandem/limits"
	"github.com/tandem-ai/tandem/pipeline"
	"github.com/tandem-ai/tandem/recsys"
)

// FeedbackDurable is the JetStream consumer the recommender reads feedback
// through; its dead letters go to pipeline.DeadLetterSubject(FeedbackDurable).
const FeedbackDurable = "recsys"

// maxRefreshPerEvent bounds how many other users' lists one event
// recomputes; a popular item can move thousands of neighbour lists, and
// those users are refreshed by the next rebuild instead.
const maxRefreshPerEvent = limits.RecsRefreshPerEvent

// feedbackOptions configures the feedback consumer.
type feedbackOptions struct {
	// Interactions is an optional interaction log the live model starts
	// from; empty starts from no data.
	Interactions string
	// Redis holds the serving store and the fine-tune feedback samples.
	Redis redis.UniversalClient
	// Neighbors is K of the similarity tables (0: default); RecN the list
	// length stored per user (0: default).
	Neighbors, RecN int
	Logger          *slog.Logger
}

// feedbackConsumer keeps a live recommender model up to date from the
// FEEDBACK stream and rewrites the affected users' lists in Redis.
type feedbackConsumer struct {
	// mu serialises Apply and the refresh that follows it, so that lists
	// are written in the order the events were applied.
	mu     sync.Mutex
	model  *recsys.Model
	store  *recsys.RedisStore
	rdb    redis.UniversalClient
	opts   recsys.RecOptions
	logger *slog.Logger
}

// startFeedback builds the model and starts consuming. stop drains the
// consumer; the caller closes the bus after it.
func startFeedback(ctx context.Context, bus *pipeline.Bus, o feedbackOptions) (stop func(), err error) {
	_, stop, err = runFeedback(ctx, bus, o)
	return stop, err
}

// runFeedback is startFeedback that also returns the consumer, for tests.
func runFeedback(ctx context.Context, bus *pipeline.Bus, o feedbackOptions) (*feedbackConsumer, func(), error) {
	if o.Redis == nil {
		return nil, nil, errors.New("feedback consumer: no Redis client")
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	c, err := newFeedbackConsumer(ctx, o)
	if err != nil {
		return nil, nil, err
	}
	stop, err := bus.Consume(ctx, pipeline.ConsumerSpec{
		Stream:        pipeline.StreamFeedback,
		Durable:       FeedbackDurable,
		FilterSubject: pipeline.SubjectFeedbackAll,
		Concurrency:   1,
		Logger:        o.Logger,
	}, c.handle)
	if err != nil {
		return nil, nil, fmt.Errorf("feedback consumer: %w", err)
	}
	o.Logger.Info("recommender feedback consumer started", "users", c.model.Users(), "items", c.model.Items(), "interactions", o.Interactions)
	return c, stop, nil
}

func newFeedbackConsumer(ctx context.Context, o feedbackOptions) (*feedbackConsumer, error) {
	cfg := jobs.RecsConfig(o.Neighbors)
	var m *recsys.Model
	var err error
	if o.Interactions != "" {
		m, err = jobs.LoadRecsModel(ctx, o.Interactions, cfg)
	} else {
		var st *recsys.Store
		if st, err = recsys.NewStore(recsys.StoreConfig{}); err == nil {
			m, err = recsys.Build(ctx, st, cfg)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("--interactions: %w", err)
	}
	return &feedbackConsumer{
		model:  m,
		store:  recsys.NewRedisStore(o.Redis, recsys.RedisStoreOptions{}),
		rdb:    o.Redis,
		opts:   recsys.RecOptions{N: o.RecN},
		logger: o.Logger,
	}, nil
}

// handle applies one feedback message. A malformed or invalid event is a
// BadEvent (dead-lettered at once, with the reason); Redis trouble is
// returned so the message is redelivered, and the redelivery is dropped by
// Apply's de-duplication but still refreshes the lists.
func (c *feedbackConsumer) handle(ctx context.Context, d pipeline.Delivery) error {
	var ev recsys.Event
	if err := json.Unmarshal(d.Data, &ev); err != nil {
		return pipeline.BadEvent(err)
	}
	if ev.ID == "" {
		ev.ID = d.MsgID
	}
	if ev.ID == "" {
		// Redeliveries keep their stream sequence, so it identifies the message.
		ev.ID = "seq:" + strconv.FormatUint(d.StreamSeq, 10)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	up, err := c.model.Apply(ev)
	if errors.Is(err, recsys.ErrBadInput) {
		return pipeline.BadEvent(err)
	}
	if err != nil {
		return err
	}
	// The event's own user is always rewritten, even for a duplicate: a
	// delivery that applied the event may have failed before this point.
	users := []string{ev.User}
	for _, u := range up.ChangedUsers {
		if len(users) > maxRefreshPerEvent {
			break
		}
		if u != ev.User {
			users = append(users, u)
		}
	}
	for _, u := range users {
		recs, err := c.model.Recommend(u, c.opts)
		if err != nil {
			return err
		}
		if _, err := c.store.UpdateUser(ctx, u, recs); err != nil {
			return err
		}
	}
	if !up.Duplicate {
		c.logger.Debug("feedback applied", "id", ev.ID, "user", ev.User, "item", ev.Item, "event", ev.Type, "refreshed", len(users))
	}
	return c.collectGeneration(ctx, ev, d.Data)
}

// collectGeneration hands an accepted or edited generation to the
// fine-tune collector of its model. Events that are not generation
// feedback, or that the collector cannot use, are skipped (logged); only
// Redis trouble is returned, to be retried (Collect is idempotent).
func (c *feedbackConsumer) collectGeneration(ctx context.Context, ev recsys.Event, data []byte) error {
	if ev.Type != recsys.EventAccepted && ev.Type != recsys.EventEdited {
		return nil
	}
	fe, err := finetune.DecodeFeedback(data)
	if err != nil || fe.GenerationID == "" {
		return nil // a plain accept of a template, not of a generation
	}
	if fe.Action == "" {
		fe.Action = finetune.FeedbackAccept
		if ev.Type == recsys.EventEdited {
			fe.Action = finetune.FeedbackEdit
		}
	}
	col, err := finetune.NewFeedbackCollector(c.rdb, fe.Collection())
	if err != nil {
		c.logger.Warn("generation feedback skipped", "id", ev.ID, "err", err)
		return nil
	}
	_, err = col.Collect(ctx, fe)
	switch {
	case err == nil, errors.Is(err, finetune.ErrIgnored):
		return nil
	case transientErr(err):
		return err
	}
	c.logger.Warn("generation feedback skipped", "id", ev.ID, "generation", fe.GenerationID, "err", err)
	return nil
}

// transientErr reports errors a retry may fix: network, timeouts, Redis
// server replies.
func transientErr(err error) bool {
	var ne net.Error
	var re redis.Error
	return errors.As(err, &ne) || errors.As(err, &re) || errors.Is(err, io.EOF) ||
		errors.Is(err, context.DeadlineExceeded) || errors.Is(err, redis.ErrClosed)
}
