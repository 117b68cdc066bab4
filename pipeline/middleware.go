package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"time"

	"github.com/hibiken/asynq"
)

// Middleware order matters: Recover must be innermost so the others see a
// panic as an ordinary failed run. DefaultMiddleware returns the order a
// worker should use.

// DefaultMiddleware returns Logging, m's Middleware (if m is not nil) and
// Recover, outermost first.
func DefaultMiddleware(l *slog.Logger, m *Metrics) []asynq.MiddlewareFunc {
	mw := []asynq.MiddlewareFunc{Logging(l)}
	if m != nil {
		mw = append(mw, m.Middleware())
	}
	return append(mw, Recover(l))
}

// outcome is what asynq will do with a task after one run.
type outcome uint8

const (
	outcomeOK       outcome = iota // done
	outcomeRetry                   // transient failure, retries left
	outcomeArchived                // permanent failure, or retries spent
	outcomeRevoked                 // handler returned asynq.RevokeTask: dropped
)

var outcomeNames = [...]string{"ok", "retry", "archived", "revoked"}

func (o outcome) String() string { return outcomeNames[o] }

// classify predicts asynq's decision from the handler's error and the retry
// counters in ctx, mirroring asynq's processor: revoke, then skip-retry or
// exhausted retries archive, else retry.
func classify(ctx context.Context, err error) outcome {
	switch {
	case err == nil:
		return outcomeOK
	case errors.Is(err, asynq.RevokeTask):
		return outcomeRevoked
	case IsPermanent(err):
		return outcomeArchived
	}
	retried, ok1 := asynq.GetRetryCount(ctx)
	maxRetry, ok2 := asynq.GetMaxRetry(ctx)
	if ok1 && ok2 && retried >= maxRetry {
		return outcomeArchived
	}
	return outcomeRetry
}

// Logging logs one line per run with kind, id, queue, retry, duration and
// outcome. Successes log at Debug, so a busy worker at Info stays quiet and
// pays only an Enabled check per job; failures to be retried at Warn; archived
// jobs at Error with the error.
func Logging(l *slog.Logger) asynq.MiddlewareFunc {
	return func(next asynq.Handler) asynq.Handler {
		return asynq.HandlerFunc(func(ctx context.Context, t *asynq.Task) error {
			start := time.Now()
			err := next.ProcessTask(ctx, t)
			o := classify(ctx, err)
			level := slog.LevelDebug
			switch o {
			case outcomeRetry:
				level = slog.LevelWarn
			case outcomeArchived:
				level = slog.LevelError
			}
			if !l.Enabled(ctx, level) {
				return err
			}
			id, _ := asynq.GetTaskID(ctx)
			queue, _ := asynq.GetQueueName(ctx)
			retried, _ := asynq.GetRetryCount(ctx)
			attrs := []slog.Attr{
				slog.String("kind", t.Type()),
				slog.String("id", id),
				slog.String("queue", queue),
				slog.Int("retry", retried),
				slog.Duration("duration", time.Since(start)),
				slog.String("outcome", o.String()),
			}
			if err != nil {
				attrs = append(attrs, slog.String("error", err.Error()))
			}
			l.LogAttrs(ctx, level, "job", attrs...)
			return err
		})
	}
}

// Recover turns a panic in a handler into a *PanicError, logging the stack.
// The task then fails like any other: retried, unless the panic value was a
// permanent error. The worker process never goes down with one bad job.
func Recover(l *slog.Logger) asynq.MiddlewareFunc {
	return func(next asynq.Handler) asynq.Handler {
		return asynq.HandlerFunc(func(ctx context.Context, t *asynq.Task) (err error) {
			defer func() {
				v := recover()
				if v == nil {
					return
				}
				pe := &PanicError{Kind: t.Type(), Value: v, Stack: debug.Stack()}
				id, _ := asynq.GetTaskID(ctx)
				l.LogAttrs(ctx, slog.LevelError, "job panicked",
					slog.String("kind", t.Type()),
					slog.String("id", id),
					slog.String("panic", fmt.Sprint(v)),
					slog.String("stack", string(pe.Stack)))
				err = pe
			}()
			return next.ProcessTask(ctx, t)
		})
	}
}
