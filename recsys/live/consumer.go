package live

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/tandem-ai/tandem/artifact"
	"github.com/tandem-ai/tandem/feedback"
	"github.com/tandem-ai/tandem/finetune"
	"github.com/tandem-ai/tandem/jobs"
	"github.com/tandem-ai/tandem/limits"
	"github.com/tandem-ai/tandem/loop"
	"github.com/tandem-ai/tandem/pipeline"
	"github.com/tandem-ai/tandem/recsys"
)

// FeedbackDurable is the JetStream consumer the recommender reads feedback
// through; its dead letters go to pipeline.DeadLetterSubject(FeedbackDurable).
const FeedbackDurable = "recsys"

// maxRefreshPerEvent bounds how many other users' lists one event
// refreshes; a popular item can move thousands of neighbour lists, and
// those users are refreshed by the next rebuild instead.
const maxRefreshPerEvent = limits.RecsRefreshPerEvent

// Defaults of Options.
const (
	DefaultWindow      = 200 * time.Millisecond
	DefaultPoll        = 50 * time.Millisecond
	DefaultConcurrency = 64
)

// Bounds of Options.Window.
const (
	MinWindow = 10 * time.Millisecond
	// MaxWindow keeps an update task's waits within its timeout
	// (jobs.RecsUserUpdateTimeout): a task waits out up to maxWindowBumps
	// windows (an enqueue that finds its window's task started takes a
	// later one), then up to catchUpTimeout for the live model, and needs
	// updateWorkMargin to rewrite the lists. A test checks the sum.
	MaxWindow = 5 * time.Second
	// updateWorkMargin is the time an update task keeps for its own work
	// after its waits.
	updateWorkMargin = 10 * time.Second
)

// Options configures the feedback consumer, the live recommender and the
// server that runs its update tasks.
type Options struct {
	// Interactions is an optional interaction file the live model starts
	// from while no sharded rebuild has written a snapshot; empty starts
	// from no data.
	Interactions string
	// Config is the pipeline configuration: the update server's Redis.
	Config pipeline.Config
	// Redis holds the log, the serving store and the fine-tune feedback
	// samples; it must be the Redis of Config.
	Redis redis.UniversalClient
	// Artifacts holds the rebuilds' snapshots; nil works only until the
	// first sharded rebuild.
	Artifacts artifact.Store
	// Neighbors is K of the similarity tables (0: default); RecN the list
	// length stored per user (0: default). A rebuild's own settings win.
	Neighbors, RecN int
	// ExactWeights keeps IDF weights exact between rebuilds instead of
	// frozen at the last rebuild (jobs.RecsConfig rather than
	// jobs.RecsLiveConfig): every event on a new (user, item) pair then
	// recomputes every row holding the item.
	ExactWeights bool
	// Window is how long a user's events are gathered into one update
	// task, MinWindow..MaxWindow. Default 200ms.
	Window time.Duration
	// Poll is how often the update server looks at its empty queue.
	// Default 50ms.
	Poll time.Duration
	// Concurrency is how many update tasks run at once; each waits out the
	// rest of its window first. Default 64.
	Concurrency int
	Logger      *slog.Logger
}

// feedbackConsumer turns FEEDBACK messages into interaction log entries
// and coalesced update tasks. It keeps no state of its own, so every
// scheduler replica may run it.
type feedbackConsumer struct {
	live    *liveModel
	log     *recsys.InteractionLog
	updates *updateEnqueuer
	rdb     redis.UniversalClient
	intake  *loop.Intake // the one validation every FEEDBACK consumer runs
	logger  *slog.Logger
}

// Start builds the live model, starts following the log, serving update
// tasks and consuming. stop drains the consumer, then stops the update
// server and the follower; the caller closes the bus after it.
func Start(ctx context.Context, bus *pipeline.Bus, o Options) (stop func(), err error) {
	_, stop, err = start(ctx, bus, o)
	return stop, err
}

// start is Start that also returns the consumer, for tests.
func start(ctx context.Context, bus *pipeline.Bus, o Options) (*feedbackConsumer, func(), error) {
	if o.Redis == nil {
		return nil, nil, errors.New("feedback consumer: no Redis client")
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if o.Window <= 0 {
		o.Window = DefaultWindow
	}
	if o.Poll <= 0 {
		o.Poll = DefaultPoll
	}
	if o.Concurrency <= 0 {
		o.Concurrency = DefaultConcurrency
	}
	live, err := newLiveModel(ctx, o)
	if err != nil {
		return nil, nil, fmt.Errorf("recommender: %w", err)
	}
	updates := &updateEnqueuer{client: asynq.NewClientFromRedisClient(o.Redis), insp: asynq.NewInspectorFromRedisClient(o.Redis),
		rdb: o.Redis, window: o.Window, now: time.Now}
	live.refresh = updates.enqueueAll

	reg := pipeline.NewRegistry()
	pipeline.Register[jobs.RecsUserUpdateArgs](reg, live, pipeline.KindOptions{})
	scfg := o.Config
	scfg.Queues = map[string]int{pipeline.QueueRecsLive: 1}
	scfg.Concurrency, scfg.PollInterval = o.Concurrency, o.Poll
	srv, err := pipeline.NewServer(scfg, reg, o.Logger, pipeline.Recover(o.Logger), pipeline.Logging(o.Logger))
	if err != nil {
		return nil, nil, fmt.Errorf("recommender update server: %w", err)
	}
	m, _ := live.model()
	o.Logger.Info("recommender live model built", "users", m.Users(), "items", m.Items(),
		"rebuild", live.base.Rebuild, "log_id", live.base.LogID, "interactions", o.Interactions)
	// The follower and the update server outlive ctx until stop: the
	// consumer drains first, and its last messages still need both; then
	// the server, whose running tasks wait for the follower; the follower
	// last.
	fctx, fcancel := context.WithCancel(context.WithoutCancel(ctx))
	sctx, scancel := context.WithCancel(fctx)
	followed, served := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(followed)
		live.run(fctx)
	}()
	go func() {
		defer close(served)
		if err := srv.Run(sctx); err != nil {
			o.Logger.Error("recommender update server stopped", "err", err)
		}
	}()
	stopLive := func() {
		scancel()
		<-served
		fcancel()
		<-followed
	}
	c := &feedbackConsumer{live: live, log: live.log, updates: updates, rdb: o.Redis, intake: loop.NewIntake(o.Redis), logger: o.Logger}
	stopConsume, err := bus.Consume(ctx, pipeline.ConsumerSpec{
		Stream:        pipeline.StreamFeedback,
		Durable:       FeedbackDurable,
		FilterSubject: pipeline.SubjectFeedbackAll,
		Concurrency:   1,
		// One message in flight across every replica: the log takes the
		// events in stream order, so each user's events stay in order.
		MaxAckPending: 1,
		Logger:        o.Logger,
	}, c.handle)
	if err != nil {
		stopLive()
		return nil, nil, fmt.Errorf("feedback consumer: %w", err)
	}
	o.Logger.Info("recommender feedback consumer started", "window", o.Window, "update_concurrency", o.Concurrency)
	return c, func() {
		stopConsume()
		stopLive()
	}, nil
}

// handle logs one feedback message and asks for its user's update. Every
// message passes the intake first (loop.Intake.AcceptDelivery), the same
// check the loop metrics' consumer and the API run: an invalid event, one
// on a generation that does not exist or is another user's, or a reused
// id with other content is a BadEvent (dead-lettered at once, with the
// reason); Redis trouble is returned so the message is redelivered. A
// redelivered or resent event is logged once (by event id, then message
// id, then stream sequence) but still gets its update task: the delivery
// that logged it may have failed before enqueuing one.
func (c *feedbackConsumer) handle(ctx context.Context, d pipeline.Delivery) error {
	ev, err := c.intake.AcceptDelivery(ctx, d)
	if loop.Refused(err) {
		return pipeline.BadEvent(err)
	}
	if err != nil {
		return err
	}
	if ev.Item == "" {
		// Feedback on a generation made from neither a template nor a
		// topic (the one event the intake lets lack an item): nothing for
		// the recommender, a sample for fine-tuning.
		return c.collectGeneration(ctx, ev)
	}
	entry, added, err := c.log.Append(ctx, ev.Interaction())
	if errors.Is(err, recsys.ErrBadInput) {
		return pipeline.BadEvent(err)
	}
	if err != nil {
		return err
	}
	if err := c.updates.enqueue(ctx, ev.User); err != nil {
		return err
	}
	if added {
		c.logger.Debug("feedback logged", "id", ev.ID, "entry", entry, "user", ev.User, "item", ev.Item, "event", ev.Type)
	}
	return c.collectGeneration(ctx, ev)
}

// collectGeneration hands an accepted or edited generation to the
// fine-tune collector of its model. The prompt, completion and model are
// the generation record's (the intake rebuilt the event from it); only
// the edited text is the event's. Events that are not feedback on a
// generation, or that the collector cannot use, are skipped (logged); only
// Redis trouble is returned, to be retried (Collect is idempotent).
func (c *feedbackConsumer) collectGeneration(ctx context.Context, ev feedback.Event) error {
	if !ev.OnGeneration() || (ev.Action != feedback.ActionAccept && ev.Action != feedback.ActionEdit) {
		return nil
	}
	col, err := finetune.NewFeedbackCollector(c.rdb, finetune.Collection(ev.Model))
	if err != nil {
		c.logger.Warn("generation feedback skipped", "id", ev.ID, "err", err)
		return nil
	}
	_, err = col.Collect(ctx, ev)
	switch {
	case err == nil, errors.Is(err, finetune.ErrIgnored):
		return nil
	case transientErr(err):
		return err
	}
	c.logger.Warn("generation feedback skipped", "id", ev.ID, "generation", ev.GenerationID, "err", err)
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
