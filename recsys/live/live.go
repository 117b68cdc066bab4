// Package live keeps the recommender current between nightly rebuilds,
// inside the scheduler (which only wires it: Start). It consumes the
// FEEDBACK stream into the interaction log, follows that log with an
// in-memory model, and serves the recs-live queue's coalesced update
// tasks, which rewrite the served lists of the users an event moved.
//
// Every scheduler replica holds a live model and keeps it equal to "the
// current base, then every interaction log entry after it, in log order":
// a follower goroutine reads the log (recsys.InteractionLog, a Redis
// stream) and applies each entry once, in order. The feedback consumer
// only appends to the log and enqueues a coalesced update task; any
// replica's update handler can serve the task, because each waits until
// its own model has applied the log up to the entry that was newest when
// the handler started.
//
// Reload after a nightly rebuild. The merge moves the base record
// (jobs.RecsBase) to the new snapshot, which holds every log entry up to
// base.LogID. The follower notices within reloadCheck, builds a model from
// the snapshot in the background while it keeps applying entries to the
// old model, then, between two reads of the log, applies the entries
// after base.LogID up to its own position to the new model and swaps it
// in. So the new model holds the snapshot and every later entry exactly
// once: nothing applied meanwhile is lost, nothing counts twice, and the
// order is the log's. Users whose events were replayed get an update task,
// since the rebuild's lists do not have their latest events.
package live

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/tandem-ai/tandem/artifact"
	"github.com/tandem-ai/tandem/jobs"
	"github.com/tandem-ai/tandem/pipeline"
	"github.com/tandem-ai/tandem/recsys"
)

// Defaults of the live recommender.
const (
	// reloadCheck is how often the follower looks at the base record.
	reloadCheck = time.Second
	// reloadRetry is how long a failed reload waits before trying again.
	reloadRetry = 30 * time.Second
	// followBlock bounds one blocking read of the log, and so how long a
	// reload waits to be noticed on a quiet log.
	followBlock = 500 * time.Millisecond
	// followBatch is how many log entries one read takes.
	followBatch = 512
	// changedTTL is how long a replica remembers which users' lists an
	// event moved, for the update task of the event's user; a replica that
	// never gets that task forgets them after it.
	changedTTL = 2 * time.Minute
	// catchUpTimeout bounds how long an update task waits for the live
	// model to apply the log; past it the task fails and is retried.
	catchUpTimeout = 30 * time.Second
)

// liveModel is a replica's live model and the follower that keeps it
// current.
type liveModel struct {
	o     Options
	log   *recsys.InteractionLog
	store *recsys.RedisStore
	// refresh enqueues update tasks for users a reload replayed; nil: none.
	refresh func(ctx context.Context, users []string) error

	mu       sync.Mutex
	m        *recsys.Model
	base     jobs.RecsBase
	pos      string        // last log entry applied
	advanced chan struct{} // closed (and replaced) whenever pos or m changes
	changed  map[string]*changedUsers
	pruned   time.Time // when changed was last swept of old entries
}

// changedUsers are the users whose neighbour lists an event user's events
// moved since that user's last update task.
type changedUsers struct {
	users map[string]struct{}
	at    time.Time
}

// newLiveModel builds the model from the current base (or the initial
// file) and positions it at the base's end of the log; run then applies
// the rest.
func newLiveModel(ctx context.Context, o Options) (*liveModel, error) {
	l := &liveModel{
		o:        o,
		log:      recsys.NewInteractionLog(o.Redis, recsys.InteractionLogOptions{}),
		store:    recsys.NewRedisStore(o.Redis, recsys.RedisStoreOptions{}),
		advanced: make(chan struct{}),
		changed:  make(map[string]*changedUsers),
	}
	base, ok, err := jobs.LoadRecsBase(ctx, o.Redis)
	if err != nil {
		return nil, err
	}
	if !ok {
		base = jobs.RecsBase{LogID: recsys.LogStart, Neighbors: o.Neighbors, Top: o.RecN}
	}
	l.m, err = l.build(ctx, base)
	if errors.Is(err, artifact.ErrNotFound) && base.Prev != nil {
		// The previous snapshot and the log after it hold the same events
		// (rebuilds trim only what both kept snapshots hold); the follower
		// keeps trying the current one.
		o.Logger.Error("recs snapshot missing; starting from the previous one", "rebuild", base.Rebuild, "err", err, "previous", base.Prev.Rebuild)
		base = *base.Prev
		l.m, err = l.build(ctx, base)
	}
	if err != nil {
		return nil, err
	}
	l.base, l.pos = base, base.LogID
	return l, nil
}

// build loads a base's data and computes the model.
func (l *liveModel) build(ctx context.Context, base jobs.RecsBase) (*recsys.Model, error) {
	initial := ""
	if base.Snapshot == "" {
		initial = l.o.Interactions
	}
	st, err := jobs.LoadRecsData(ctx, l.o.Artifacts, base.Snapshot, initial)
	if err != nil {
		return nil, err
	}
	cfg := jobs.RecsLiveConfig(base.Neighbors)
	if l.o.ExactWeights {
		cfg = jobs.RecsConfig(base.Neighbors)
	}
	return recsys.Build(ctx, st, cfg)
}

// model returns the current model and the options its lists are made with.
func (l *liveModel) model() (*recsys.Model, recsys.RecOptions) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.m, jobs.RecsOptions(l.base.Mode, l.base.Top)
}

// reloaded is a model built in the background from a new base.
type reloaded struct {
	base jobs.RecsBase
	m    *recsys.Model
	err  error
}

// run follows the log until ctx ends, reloading after rebuilds.
func (l *liveModel) run(ctx context.Context) {
	var (
		building  chan reloaded
		ready     *reloaded // built, waiting to be swapped in
		lastCheck time.Time
		failed    string // base whose reload failed, and when
		failedAt  time.Time
	)
	for ctx.Err() == nil {
		if building == nil && ready == nil && time.Since(lastCheck) >= reloadCheck {
			lastCheck = time.Now()
			b, ok, err := jobs.LoadRecsBase(ctx, l.o.Redis)
			switch {
			case err != nil:
				l.o.Logger.Warn("recs base unreadable", "err", err)
			case ok && b.Rebuild != l.base.Rebuild && (b.Rebuild != failed || time.Since(failedAt) >= reloadRetry):
				l.o.Logger.Info("recs live model reloading", "rebuild", b.Rebuild, "log_id", b.LogID)
				building = make(chan reloaded, 1)
				go func() {
					m, err := l.build(ctx, b)
					building <- reloaded{b, m, err}
				}()
			}
		}
		select {
		case r := <-building:
			building = nil
			if r.err != nil {
				failed, failedAt = r.base.Rebuild, time.Now()
				l.o.Logger.Error("recs live model reload failed; the old one keeps following the log", "rebuild", r.base.Rebuild, "err", r.err)
			} else {
				ready = &r
			}
		default:
		}
		if ready != nil {
			if err := l.swap(ctx, ready); err != nil {
				l.o.Logger.Warn("recs live model swap delayed", "rebuild", ready.base.Rebuild, "err", err)
			} else {
				ready = nil
			}
		}
		entries, err := l.log.Read(ctx, l.pos, followBatch, followBlock)
		if err != nil {
			if ctx.Err() == nil {
				l.o.Logger.Warn("recs log read failed", "err", err)
				sleepCtx(ctx, time.Second)
			}
			continue
		}
		if len(entries) > 0 {
			l.apply(l.m, entries)
			l.advance(entries[len(entries)-1].ID)
		}
	}
}

// apply applies log entries to m in order, remembering which users' lists
// each event moved. It returns the events' users.
func (l *liveModel) apply(m *recsys.Model, entries []recsys.LogEntry) []string {
	users := make([]string, 0, len(entries))
	moved := make([][]string, 0, len(entries))
	for _, e := range entries {
		up, err := m.Apply(e.Event)
		if err != nil {
			// A limit reached (the consumer checked everything else); the
			// rebuild's snapshot leaves the entry out as well.
			l.o.Logger.Warn("recs log entry skipped", "entry", e.ID, "event", e.Event.ID, "err", err)
			continue
		}
		users = append(users, e.Event.User)
		moved = append(moved, up.ChangedUsers[:min(len(up.ChangedUsers), maxRefreshPerEvent+1)])
	}
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	for i, user := range users {
		c := l.changed[user]
		if c == nil {
			c = &changedUsers{users: make(map[string]struct{})}
			l.changed[user] = c
		}
		c.at = now
		for _, u := range moved[i] {
			if len(c.users) >= maxRefreshPerEvent {
				break
			}
			if u != user {
				c.users[u] = struct{}{}
			}
		}
	}
	if now.Sub(l.pruned) >= time.Second {
		l.pruned = now
		for u, c := range l.changed {
			if now.Sub(c.at) > changedTTL {
				delete(l.changed, u)
			}
		}
	}
	return users
}

// advance moves the position and wakes the waiters.
func (l *liveModel) advance(pos string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if recsys.CompareLogIDs(pos, l.pos) > 0 {
		l.pos = pos
	}
	close(l.advanced)
	l.advanced = make(chan struct{})
}

// swap brings a reloaded model up to the follower's position and makes it
// the live one. Only the follower goroutine calls it, so no entry is
// applied to the old model meanwhile.
func (l *liveModel) swap(ctx context.Context, r *reloaded) error {
	var replayed []string
	for after := r.base.LogID; recsys.CompareLogIDs(after, l.pos) < 0; {
		page, err := l.log.Range(ctx, after, l.pos, followBatch)
		if err != nil {
			return err
		}
		if len(page) == 0 {
			break
		}
		replayed = append(replayed, l.apply(r.m, page)...)
		after = page[len(page)-1].ID
	}
	l.mu.Lock()
	l.m, l.base = r.m, r.base
	if recsys.CompareLogIDs(l.pos, r.base.LogID) < 0 {
		l.pos = r.base.LogID // the snapshot already holds what the old model had not read
	}
	l.mu.Unlock()
	l.advance(l.pos)
	l.o.Logger.Info("recs live model reloaded", "rebuild", r.base.Rebuild, "log_id", r.base.LogID, "replayed", len(replayed),
		"users", r.m.Users(), "items", r.m.Items())
	if l.refresh != nil && len(replayed) > 0 {
		if err := l.refresh(ctx, uniqueStrings(replayed)); err != nil {
			l.o.Logger.Warn("recs refresh after reload not enqueued; those users keep the rebuild's list until their next event", "err", err)
		}
	}
	return nil
}

// waitApplied blocks until the model has applied the log up to pos.
func (l *liveModel) waitApplied(ctx context.Context, pos string) error {
	for {
		l.mu.Lock()
		done, ch := recsys.CompareLogIDs(l.pos, pos) >= 0, l.advanced
		l.mu.Unlock()
		if done {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// takeChanged removes and returns the users the user's events moved.
func (l *liveModel) takeChanged(user string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	c := l.changed[user]
	delete(l.changed, user)
	if c == nil {
		return nil
	}
	out := make([]string, 0, len(c.users))
	for u := range c.users {
		out = append(out, u)
	}
	return out
}

// giveBackChanged returns users to a user's set after a failed update.
func (l *liveModel) giveBackChanged(user string, users []string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	c := l.changed[user]
	if c == nil {
		c = &changedUsers{users: make(map[string]struct{})}
		l.changed[user] = c
	}
	c.at = time.Now()
	for _, u := range users {
		c.users[u] = struct{}{}
	}
}

// Work refreshes one user's served list (and those of the users the
// user's events moved) once the window is over and the live model has
// applied every log entry that existed then.
func (l *liveModel) Work(ctx context.Context, job *pipeline.Job[jobs.RecsUserUpdateArgs]) error {
	a := job.Args
	if wait := time.Until(time.UnixMilli(a.NotBefore)); wait > 0 {
		if err := sleepCtx(ctx, wait); err != nil {
			return err
		}
	}
	// Marked before the log is read: an event the enqueuer sees this mark
	// for may be missed by this run, so it gets the next window's task.
	if err := markReading(job.ResultWriter); err != nil {
		return err
	}
	target, err := l.log.Last(ctx)
	if err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, catchUpTimeout)
	err = l.waitApplied(wctx, target)
	cancel()
	if err != nil {
		return fmt.Errorf("live model has not applied the log up to %s: %w", target, err)
	}
	others := l.takeChanged(a.User)
	m, opts := l.model()
	for i, u := range append([]string{a.User}, others...) {
		recs, err := m.Recommend(u, opts)
		if err == nil {
			_, err = l.store.UpdateUser(ctx, u, recs)
		}
		if err != nil {
			if i > 0 {
				l.giveBackChanged(a.User, others[i-1:])
			} else {
				l.giveBackChanged(a.User, others)
			}
			return err
		}
	}
	return nil
}

// updateEnqueuer enqueues coalesced update tasks: one per user per window.
type updateEnqueuer struct {
	client *asynq.Client
	insp   *asynq.Inspector
	// rdb is the Redis of client and insp, to register the update queue
	// where a Redis restart lost asynq's set of queue names.
	rdb    redis.UniversalClient
	window time.Duration
	now    func() time.Time
}

// maxWindowBumps bounds how many later windows enqueue tries when each
// one's task has already started.
const maxWindowBumps = 3

// enqueue makes sure an update task for user will read the log after this
// call: the task of the current window, if it has not read the log yet
// (queued, or running but still waiting out its window), or a new one.
// Call it after the event is in the log.
func (e *updateEnqueuer) enqueue(ctx context.Context, user string) error {
	w := e.now().UnixNano() / int64(e.window)
	for range maxWindowBumps {
		id := fmt.Sprintf("recs-user:%d:%s", w, user)
		end := time.Unix(0, (w+1)*int64(e.window))
		task, err := pipeline.NewTask(jobs.RecsUserUpdateArgs{User: user, NotBefore: end.UnixMilli()}, asynq.TaskID(id))
		if err != nil {
			return err
		}
		_, err = e.client.EnqueueContext(ctx, task)
		if !errors.Is(err, asynq.ErrTaskIDConflict) {
			return err
		}
		info, err := pipeline.TaskInfo(ctx, e.rdb, e.insp, pipeline.QueueRecsLive, id)
		switch {
		case errors.Is(err, asynq.ErrTaskNotFound):
			continue // it finished just now: enqueue it again
		case err != nil:
			return err
		}
		switch {
		case info.State == asynq.TaskStatePending, info.State == asynq.TaskStateScheduled, info.State == asynq.TaskStateRetry,
			info.State == asynq.TaskStateActive && !readingMarked(info):
			return nil // it has not read the log yet: it will see this event
		}
		// It has read the log (or is done, or gave up), perhaps before this
		// event. The next window's task reads it after.
		w++
	}
	return fmt.Errorf("update task for %q: %d windows in a row already started", user, maxWindowBumps)
}

// readingMark is the result an update task writes just before it reads
// the log. A running task without it is still waiting out its window.
var readingMark = []byte(`{"reading_log":true}`)

func markReading(rw *asynq.ResultWriter) error {
	if rw == nil {
		return nil
	}
	if _, err := rw.Write(readingMark); err != nil {
		return fmt.Errorf("update task: mark: %w", err)
	}
	return nil
}

func readingMarked(info *asynq.TaskInfo) bool { return len(info.Result) > 0 }

// enqueueAll enqueues an update for each user.
func (e *updateEnqueuer) enqueueAll(ctx context.Context, users []string) error {
	var errs []error
	for _, u := range users {
		if err := e.enqueue(ctx, u); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func uniqueStrings(s []string) []string {
	seen := make(map[string]struct{}, len(s))
	out := s[:0:0]
	for _, v := range s {
		if _, ok := seen[v]; !ok {
			seen[v] = struct{}{}
			out = append(out, v)
		}
	}
	return out
}

// sleepCtx waits d or until ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
