// Command scheduler enqueues Tandem's periodic jobs and hosts the NATS
// consumers that turn events into work. Several replicas may run: every
// tick is enqueued under a deterministic task id, so only the first
// replica's enqueue lands and the others get a harmless conflict.
//
// With --embedded-nats it also hosts an in-process nats-server (JetStream on
// disk under the data dir) for laptops and `make demo`. That server admits
// only Tandem's roles (producer, worker, scheduler, observer), each with the
// subject permissions of pipeline.NATSRolePermissions and a password the
// scheduler generates at its first start and keeps in
// <data dir>/nats-credentials/<role> (mode 0600): other processes log in
// with TANDEM_NATS_USER=<role> and TANDEM_NATS_PASSWORD_FILE pointing there.
//
// It also keeps the recommender live: the nightly sharded rebuild is a
// built-in periodic entry (--recs-rebuild, 02:00 UTC by default), and with
// NATS the scheduler consumes feedback into the interaction log, follows
// that log with a live model, and runs the coalesced per-user update tasks
// on its own queue (package recsys/live).
//
// Its JetStream consumers: the recommender's (recsys: feedback into the
// interaction log, fine-tune samples) and the loop metrics' (loop-metrics:
// acceptance, ratings and edits aggregated in Redis for the producer's
// dashboard).
//
// Shutdown order: the periodic loop stops, the feedback consumers drain,
// the update server and the live model's follower stop, the artifact store
// and NATS connection close, the embedded server (if any) shuts down last.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/tandem-ai/tandem/artifact"
	"github.com/tandem-ai/tandem/batch"
	"github.com/tandem-ai/tandem/jobs"
	"github.com/tandem-ai/tandem/loop"
	"github.com/tandem-ai/tandem/pipeline"
	"github.com/tandem-ai/tandem/recsys/live"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stderr)
	stop()
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, "scheduler:", err)
	}
	os.Exit(pipeline.ExitCode(err))
}

func run(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("scheduler", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfg := pipeline.DefaultConfig()
	cfg.BindFlags(fs)
	requirePersistence := pipeline.RequirePersistenceFlag(fs)
	schedule := fs.String("schedule", envOr("TANDEM_SCHEDULE", ""), "JSON file of periodic jobs (empty: none) [TANDEM_SCHEDULE]")
	embedded := fs.String("embedded-nats", envOr("TANDEM_EMBEDDED_NATS", ""), "host an in-process nats-server on this address, e.g. 127.0.0.1:4333 (JetStream under the data dir) [TANDEM_EMBEDDED_NATS]")
	interactions := fs.String("interactions", envOr("TANDEM_INTERACTIONS", ""), "interaction log (.csv or .jsonl) in the data root, which the live recommender and the nightly rebuild start from; empty: no data [TANDEM_INTERACTIONS]")
	adminAddr := fs.String("admin-addr", envOr("TANDEM_ADMIN_ADDR", "127.0.0.1:9102"), "address of the admin HTTP server (/metrics, /healthz) [TANDEM_ADMIN_ADDR]")
	var rc recsFlags
	if err := rc.bind(fs); err != nil {
		return err
	}
	if _, err := pipeline.ParseArgs(fs, args); err != nil {
		return err
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	if err := rc.validate(); err != nil {
		return err
	}
	initial, err := interactionsPath(cfg, *interactions)
	if err != nil {
		return err
	}
	logger := slog.New(slog.NewTextHandler(stderr, nil))
	if err := cfg.EnforceRedisPersistence(ctx, *requirePersistence, logger); err != nil {
		return err
	}

	var entries []pipeline.PeriodicEntry
	if *schedule != "" {
		if entries, err = pipeline.LoadSchedule(*schedule); err != nil {
			return err
		}
	}
	entries, err = withNightlyRebuild(entries, rc, *interactions, logger)
	if err != nil {
		return err
	}
	// Every kind a schedule may name, batch's (a webhook) included.
	kinds := batch.Kinds()
	for _, e := range entries {
		if err := kinds.Check(e.Kind, e.Payload); err != nil {
			return fmt.Errorf("schedule %s: entry %q: %w", *schedule, e.Name, err)
		}
	}

	var embeddedAuth []nats.Option // the scheduler's own login to its embedded server
	if *embedded != "" {
		host, portStr, err := net.SplitHostPort(*embedded)
		if err != nil {
			return fmt.Errorf("--embedded-nats: %w", err)
		}
		port, err := strconv.Atoi(portStr)
		if err != nil {
			return fmt.Errorf("--embedded-nats: port: %w", err)
		}
		// Every client logs in as a role (pipeline.NATSRolePermissions);
		// the passwords are generated at the first start and kept in the
		// data dir, one 0600 file per role, for the other processes.
		credsDir := pipeline.NATSCredentialsDir(cfg.DataDir)
		creds, err := pipeline.LoadOrCreateNATSCredentials(credsDir)
		if err != nil {
			return fmt.Errorf("embedded nats: %w", err)
		}
		ns, err := pipeline.StartEmbeddedNATS(filepath.Join(cfg.DataDir, "nats"), pipeline.WithEmbeddedHost(host), pipeline.WithEmbeddedPort(port), pipeline.WithEmbeddedRoles(creds),
			// Acknowledged means on disk, as in the Kubernetes config
			// (docs/RELIABILITY.md, "NATS: durability of the bus").
			pipeline.WithEmbeddedSyncAlways())
		if err != nil {
			return fmt.Errorf("embedded nats: %w", err)
		}
		defer ns.Shutdown()
		logger.Info("embedded nats-server started; other processes log in with TANDEM_NATS_USER=<role> and TANDEM_NATS_PASSWORD_FILE="+filepath.Join(credsDir, "<role>"),
			"url", ns.URL(), "roles", pipeline.NATSRoles(), "credentials", credsDir)
		if cfg.NATSURL == "" {
			cfg.NATSURL = ns.URL()
		}
		embeddedAuth = pipeline.NATSRoleOptions(pipeline.RoleScheduler, creds[pipeline.RoleScheduler])
	}
	var bus *pipeline.Bus
	if cfg.NATSURL != "" {
		natsOpts, err := cfg.NATSOptions()
		if err != nil {
			return err
		}
		if embeddedAuth != nil && !cfg.NATSAuthSet() {
			natsOpts = append(natsOpts, embeddedAuth...)
		}
		bus, err = pipeline.ConnectBus(ctx, cfg.NATSURL, natsOpts...)
		if err != nil {
			return fmt.Errorf("nats: %w", err)
		}
		defer bus.Close()
		if err := bus.EnsureStreams(ctx); err != nil {
			return fmt.Errorf("nats streams: %w", err)
		}
	}

	client, err := pipeline.NewClient(cfg)
	if err != nil {
		return err
	}
	defer client.Close()
	if bus != nil {
		arts, err := artifact.Open(ctx, artifact.Options{Spec: os.Getenv(artifact.EnvStore), DataDir: cfg.DataDir, JS: bus.JS})
		if err != nil {
			return err
		}
		defer arts.Close()
		stopFeedback, err := live.Start(ctx, bus, live.Options{
			Interactions: initial, Config: cfg, Redis: client.Redis(), Artifacts: arts,
			ExactWeights: rc.weights == "exact", Window: rc.window, Poll: rc.poll, Concurrency: rc.concurrency, Logger: logger,
		})
		if err != nil {
			return err
		}
		defer stopFeedback() // drains before the bus closes
		// The loop metrics read the same stream through their own durable.
		stopMetrics, err := loop.ConsumeMetrics(ctx, bus, loop.NewMetrics(client.Redis(), loop.MetricsOptions{}), logger)
		if err != nil {
			return err
		}
		defer stopMetrics()
	}
	periodic, err := pipeline.NewPeriodic(client, entries, logger, time.Now)
	if err != nil {
		return err
	}

	promReg := prometheus.NewRegistry()
	promReg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(promReg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok\n") })
	admin := &http.Server{Addr: *adminAddr, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := admin.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logger.Error("admin server failed", "err", err)
		}
	}()
	defer func() {
		c, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = admin.Shutdown(c)
	}()

	logger.Info("scheduler running", "entries", len(entries), "nats", cfg.NATSURL)
	err = periodic.Run(ctx)
	logger.Info("scheduler stopped")
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// interactionsPath resolves --interactions as the nightly rebuild's job
// (recs-fanout) will: relative to the data root, not to the current
// directory, and confined to it. It returns the file's path for the live
// model; "" stays "".
func interactionsPath(cfg pipeline.Config, p string) (string, error) {
	if p == "" {
		return "", nil
	}
	root, err := jobs.OpenDataRoot(cfg)
	if err != nil {
		return "", fmt.Errorf("--interactions: %w", err)
	}
	defer root.Close()
	name, err := root.Name("interactions", p)
	if err != nil {
		return "", fmt.Errorf("--interactions: %w (paths are relative to the data root, %s: --data-root, $%s)", err, root.Dir(), jobs.EnvDataRoot)
	}
	return root.Path(name), nil
}

func envOr(key, def string) string {
	if v, ok := os.LookupEnv(key); ok {
		return v
	}
	return def
}
