// Package pipeline is Tandem's plumbing between producers and workers.
//
// Producers (cmd/producer, cmd/scheduler) enqueue jobs; workers (cmd/worker)
// run them. Jobs travel through asynq queues in Redis. This package wraps
// asynq so that the job kinds in jobs/ deal only in typed values:
//
//   - Config (config.go) is the one settings struct every binary shares,
//     bound to flags and TANDEM_* variables and validated before anything
//     connects; redisopt.go turns it into Redis connections. cmdline.go
//     parses every command line the same way (ParseArgs: help, stray
//     arguments) and gives the binaries' exit statuses (ExitCode).
//   - A job kind is a JobArgs type with a stable Kind string and an optional
//     Validate, and a Worker[T] for it (job.go). Register puts both in a
//     Registry (registry.go), which decodes payloads strictly (unknown fields
//     and oversized payloads are refused) before Work is called, both behind
//     asynq and in-process through Registry.Exec.
//   - Client (client.go) enqueues typed args with the kind's queue, retry
//     budget and timeout; invalid args never reach Redis.
//   - errors.go sorts failures: Permanent errors (bad input) are archived at
//     once with their reason; any other error is retried with jittered
//     exponential backoff.
//   - Server (server.go) runs the registry's workers behind middleware
//     (middleware.go: logging, panic recovery; metrics.go: Prometheus) and
//     shuts down gracefully, handing unfinished jobs back as pending.
//   - Periodic (periodic.go) enqueues scheduled jobs from any number of
//     scheduler replicas, once per tick, through deterministic task IDs.
//   - EnsureRedis (localredis.go) starts a private redis-server for demos when
//     none answers on loopback; CheckRedisPersistence warns when the Redis in
//     use would lose jobs on restart.
//   - keys.go names queues, kind prefixes and Redis key prefixes, once.
//
// The NATS side of the package (bus*.go, natsembed*.go) carries feedback
// events and batch progress; it shares Config's NATS fields.
//
// Failure model: a job is at-least-once. A worker that dies mid-job loses its
// lease and asynq's recoverer re-queues the job; a stopping worker hands
// unfinished jobs back after ShutdownTimeout. Handlers must therefore be
// idempotent, and must honour ctx, which is cancelled at the kind's timeout
// and when shutdown time runs out.
package pipeline
