package main

import (
	"context"
	"log/slog"
	"sort"
	"sync/atomic"
	"time"

	"github.com/hibiken/asynq"
)

// idleExit ends a worker that has had nothing to do for a while: no job of
// its own running and nothing pending, scheduled or waiting for retry on
// its queues. A Kubernetes Job (the KEDA ScaledJob for long fine-tunes)
// runs the worker this way, so the pod completes once the queue is drained
// instead of idling forever.
type idleExit struct {
	after    time.Duration
	inspect  *asynq.Inspector
	queues   []string
	logger   *slog.Logger
	inFlight atomic.Int64
	poll     time.Duration
}

// middleware counts the jobs this worker is running.
func (e *idleExit) middleware(next asynq.Handler) asynq.Handler {
	return asynq.HandlerFunc(func(ctx context.Context, t *asynq.Task) error {
		e.inFlight.Add(1)
		defer e.inFlight.Add(-1)
		return next.ProcessTask(ctx, t)
	})
}

// watch calls stop once the worker has been idle for e.after; it returns
// when ctx ends.
func (e *idleExit) watch(ctx context.Context, stop context.CancelFunc) {
	tick := time.NewTicker(e.poll)
	defer tick.Stop()
	idleSince := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			if !e.idle() {
				idleSince = now
				continue
			}
			if now.Sub(idleSince) >= e.after {
				e.logger.Info("worker idle: exiting", "idle_for", now.Sub(idleSince).Round(time.Second))
				stop()
				return
			}
		}
	}
}

// idle reports whether nothing runs here and nothing waits on the queues.
// An error reading a queue counts as work, so a Redis hiccup never ends a
// worker early.
func (e *idleExit) idle() bool {
	if e.inFlight.Load() > 0 {
		return false
	}
	for _, q := range e.queues {
		info, err := e.inspect.GetQueueInfo(q)
		if err != nil {
			if err == asynq.ErrQueueNotFound {
				continue // never used: nothing waits there
			}
			return false
		}
		if info.Pending+info.Scheduled+info.Retry+info.Aggregating > 0 {
			return false
		}
	}
	return true
}

func queueNames(q map[string]int) []string {
	names := make([]string, 0, len(q))
	for n := range q {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}
