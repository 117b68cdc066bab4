package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
)

// startPingTimeout bounds the Redis check at the start of Run.
const startPingTimeout = 10 * time.Second

// Server runs the registered workers against the queues in Config.
type Server struct {
	srv     *asynq.Server
	rdb     redis.UniversalClient
	handler asynq.Handler
	logger  *slog.Logger
	// keeper registers the served queues at start and again and again, so
	// they come back after a Redis restart (see QueueRegisterInterval).
	keeper *queueKeeper

	mu  sync.Mutex
	ran bool
}

// NewServer builds a worker server: cfg's queues and weights, concurrency,
// shutdown timeout and retry backoff; reg's workers behind mw (outermost
// first; see DefaultMiddleware). It validates cfg but does not connect.
func NewServer(cfg Config, reg *Registry, logger *slog.Logger, mw ...asynq.MiddlewareFunc) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if reg == nil {
		return nil, errors.New("pipeline.NewServer: nil registry")
	}
	if logger == nil {
		logger = slog.Default()
	}
	rdb, err := cfg.RedisClient()
	if err != nil {
		return nil, err
	}
	s := &Server{rdb: rdb, logger: logger,
		keeper: newQueueKeeper(queueKeeperParams{rdb: rdb, queues: sortedQueueNames(cfg.Queues), logger: logger})}
	// Tag errors that came back from the handler, so the error handler can
	// tell them from failures asynq detects itself (a timeout, a lost lease),
	// which no middleware saw and which it must log.
	s.handler = Chain(reg.Handler(mw...), markHandlerErrors)

	level := asynq.InfoLevel
	if logger.Enabled(context.Background(), slog.LevelDebug) {
		level = asynq.DebugLevel
	}
	s.srv = asynq.NewServerFromRedisClient(rdb, asynq.Config{
		Concurrency:              cfg.Concurrency,
		Queues:                   cfg.Queues,
		ShutdownTimeout:          cfg.ShutdownTimeout,
		RetryDelayFunc:           RetryBackoff(cfg.RetryBaseDelay, cfg.RetryMaxDelay),
		TaskCheckInterval:        cfg.PollInterval,
		DelayedTaskCheckInterval: cfg.delayedPollInterval(),
		// Every error is a failure, permanent ones included: they count in
		// asynq's per-queue failure statistics, which is what an operator
		// watching a bad producer wants to see.
		IsFailure:       func(err error) bool { return err != nil },
		ErrorHandler:    asynq.ErrorHandlerFunc(s.handleError),
		HealthCheckFunc: s.healthCheck,
		Logger:          asynqLogger{logger.With("component", "asynq")},
		LogLevel:        level,
	})
	return s, nil
}

// handlerError marks an error as returned by the handler chain. It keeps the
// message and unwraps to the original, so asynq's retry decision and stored
// last error are unchanged.
type handlerError struct{ err error }

func (e *handlerError) Error() string { return e.err.Error() }
func (e *handlerError) Unwrap() error { return e.err }

func markHandlerErrors(next asynq.Handler) asynq.Handler {
	return asynq.HandlerFunc(func(ctx context.Context, t *asynq.Task) error {
		if err := next.ProcessTask(ctx, t); err != nil {
			return &handlerError{err}
		}
		return nil
	})
}

func (s *Server) handleError(ctx context.Context, t *asynq.Task, err error) {
	level := slog.LevelWarn
	var he *handlerError
	if errors.As(err, &he) {
		// Logging middleware, if installed, has reported it already.
		level = slog.LevelDebug
	}
	if !s.logger.Enabled(ctx, level) {
		return
	}
	id, _ := asynq.GetTaskID(ctx)
	retried, _ := asynq.GetRetryCount(ctx)
	maxRetry, _ := asynq.GetMaxRetry(ctx)
	s.logger.LogAttrs(ctx, level, "job failed",
		slog.String("kind", t.Type()), slog.String("id", id),
		slog.Int("retry", retried), slog.Int("max_retry", maxRetry),
		slog.Bool("permanent", IsPermanent(err)), slog.String("error", err.Error()))
}

func (s *Server) healthCheck(err error) {
	if err != nil {
		s.logger.Error("redis health check failed", "error", err)
	}
}

// Run processes jobs until ctx is done, then shuts down gracefully: it stops
// fetching, gives running jobs ShutdownTimeout to finish, and hands the
// unfinished ones back to their queues as pending (their ctx is cancelled).
// It returns when the server has stopped and its Redis pool is closed. A
// Server runs once.
func (s *Server) Run(ctx context.Context) error {
	s.mu.Lock()
	if s.ran {
		s.mu.Unlock()
		return errors.New("pipeline: Server.Run called twice")
	}
	s.ran = true
	s.mu.Unlock()
	defer s.rdb.Close()
	if ctx.Err() != nil {
		return nil // stopped before it started
	}
	// Fail fast on a wrong address or password; asynq itself would only log
	// dequeue errors forever.
	pctx, cancel := context.WithTimeout(ctx, startPingTimeout)
	err := s.rdb.Ping(pctx).Err()
	cancel()
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("redis ping: %w", err)
	}
	if err := s.srv.Start(s.handler); err != nil {
		return fmt.Errorf("start worker server: %w", err)
	}
	s.keeper.start()
	<-ctx.Done()
	s.srv.Shutdown()
	s.keeper.shutdown()
	return nil
}

// asynqLogger adapts slog to asynq's logger interface.
type asynqLogger struct{ l *slog.Logger }

func (a asynqLogger) Debug(args ...any) { a.l.Debug(fmt.Sprint(args...)) }
func (a asynqLogger) Info(args ...any)  { a.l.Info(fmt.Sprint(args...)) }
func (a asynqLogger) Warn(args ...any)  { a.l.Warn(fmt.Sprint(args...)) }
func (a asynqLogger) Error(args ...any) { a.l.Error(fmt.Sprint(args...)) }

// Fatal honours asynq's contract (log, then exit 1). asynq v0.26 does not
// call it; it exists to satisfy the interface.
func (a asynqLogger) Fatal(args ...any) {
	a.l.Error(fmt.Sprint(args...))
	os.Exit(1)
}
