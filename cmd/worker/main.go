// Command worker runs Tandem's job handlers: as an asynq server fed from
// Redis (the default), or one job in-process with `worker exec KIND`.
//
// Shutdown order on SIGTERM/SIGINT: the asynq server stops fetching and
// gives in-flight jobs the shutdown timeout to finish (unfinished ones go
// back to pending for another worker), then the NATS connection drains,
// then the admin HTTP server closes.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"syscall"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/tandem-ai/tandem/artifact"
	"github.com/tandem-ai/tandem/batch"
	"github.com/tandem-ai/tandem/finetune"
	"github.com/tandem-ai/tandem/generation"
	"github.com/tandem-ai/tandem/gpu"
	"github.com/tandem-ai/tandem/jobs"
	"github.com/tandem-ai/tandem/pipeline"
	"github.com/tandem-ai/tandem/registry"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, "worker:", err)
	}
	os.Exit(pipeline.ExitCode(err))
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "exec" {
		return execCmd(ctx, args[1:], stdout, stderr)
	}
	fs := flag.NewFlagSet("worker", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfg := pipeline.DefaultConfig()
	cfg.BindFlags(fs)
	requirePersistence := pipeline.RequirePersistenceFlag(fs)
	adminAddr := fs.String("admin-addr", envOr("TANDEM_ADMIN_ADDR", "127.0.0.1:9101"), "address of the admin HTTP server (/metrics, /healthz) [TANDEM_ADMIN_ADDR]")
	logLevel := fs.String("log-level", envOr("TANDEM_LOG_LEVEL", "info"), "debug, info, warn or error [TANDEM_LOG_LEVEL]")
	idleDefault, err := envDuration("TANDEM_EXIT_WHEN_IDLE")
	if err != nil {
		return err
	}
	exitWhenIdle := fs.Duration("exit-when-idle", idleDefault, "exit after this long with no job running and nothing waiting on the worker's queues; 0 runs until stopped (for Kubernetes Jobs) [TANDEM_EXIT_WHEN_IDLE]")
	device := fs.String("device", envOr("TANDEM_DEVICE", "cpu"), "compute device: cpu, or cuda:N for GPU N (a binary built with -tags cuda; without one, or without a driver, the worker says why and runs on the CPU) [TANDEM_DEVICE]")
	precision := fs.String("gpu-precision", envOr("TANDEM_GPU_PRECISION", "fp32"), "matrix products on the GPU: fp32 (exact) or tf32 (tensor cores) [TANDEM_GPU_PRECISION]")
	lanePollDefault, err := envDuration("TANDEM_INTERACTIVE_POLL_INTERVAL")
	if err != nil {
		return err
	}
	if os.Getenv("TANDEM_INTERACTIVE_POLL_INTERVAL") == "" {
		lanePollDefault = defaultInteractivePoll
	}
	laneConcDefault, err := envInt("TANDEM_INTERACTIVE_CONCURRENCY", 2)
	if err != nil {
		return err
	}
	lanePoll := fs.Duration("interactive-poll-interval", lanePollDefault, "poll the interactive queue this often from a lane of its own (0: the queue shares --poll-interval with the others); see docs/PERFORMANCE.md [TANDEM_INTERACTIVE_POLL_INTERVAL]")
	laneConc := fs.Int("interactive-concurrency", laneConcDefault, "interactive jobs the lane runs at once; each waits on its model's engine, so this bounds people served together, not memory [TANDEM_INTERACTIVE_CONCURRENCY]")
	slotsDefault, err := envInt("TANDEM_ENGINE_SLOTS", 0)
	if err != nil {
		return err
	}
	engineSlots := fs.Int("engine-slots", slotsDefault, fmt.Sprintf("sequences each loaded model's generation engine decodes together (its KV-cache rows); 0: %d on the CPU, %d on a GPU [TANDEM_ENGINE_SLOTS]", generation.DefaultCPUSlots, generation.DefaultGPUSlots))
	prefillDefault, err := envInt("TANDEM_ENGINE_PREFILL_TOKENS", generation.DefaultPrefillTokens)
	if err != nil {
		return err
	}
	prefillTokens := fs.Int("engine-prefill-tokens", prefillDefault, "prompt tokens an engine step feeds at most, over all sequences joining, so long prompts do not stall the streams decoding [TANDEM_ENGINE_PREFILL_TOKENS]")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: worker [flags]           run the asynq server\n       worker exec KIND [flags] run one job in-process, no Redis\n\nFile paths in jobs are relative to the data root (--data-root) and confined to it.\n\nkinds:\n")
		for _, k := range jobs.Names() {
			fmt.Fprintf(stderr, "  %-10s %s\n", k, jobs.Summary(k))
		}
		fmt.Fprintf(stderr, "\nflags:\n")
		fs.PrintDefaults()
	}
	if _, err := pipeline.ParseArgs(fs, args); err != nil {
		return err
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	logger, err := newLogger(stderr, *logLevel)
	if err != nil {
		return err
	}
	prec, err := gpu.ParsePrecision(*precision)
	if err != nil {
		return fmt.Errorf("--gpu-precision: %w", err)
	}
	explicitQueues := os.Getenv("TANDEM_QUEUES") != ""
	fs.Visit(func(f *flag.Flag) { explicitQueues = explicitQueues || f.Name == "queues" })
	setup, err := openDevice(*device, prec, cfg.Queues, explicitQueues, logger)
	if err != nil {
		return err
	}
	cfg.Queues = setup.queues
	if setup.dev != nil {
		defer setup.dev.Close() // closed last, after the server has stopped and its jobs ended
	}
	deps, closeDeps, err := openDeps(ctx, cfg, logger, setup.dev)
	if err != nil {
		return err
	}
	defer closeDeps()
	if cfg.Queues, err = queuesForBus(cfg.Queues, deps.Bus != nil, logger); err != nil {
		return err
	}

	promReg := prometheus.NewRegistry()
	promReg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	promReg.MustRegister(finetune.Collectors()...)
	if *engineSlots < 0 || *prefillTokens < 1 {
		return fmt.Errorf("--engine-slots %d must be >= 0 and --engine-prefill-tokens %d >= 1", *engineSlots, *prefillTokens)
	}
	deps.Models.SetEngineConfig(generation.EngineConfig{Slots: *engineSlots, PrefillTokens: *prefillTokens,
		Metrics: generation.NewMetrics(promReg), Logger: logger})

	if err := cfg.EnforceRedisPersistence(ctx, *requirePersistence, logger); err != nil {
		return err
	}

	// The kinds: jobs' own, then batch's (generate:chunk, generate:finalize,
	// webhook) with their Redis records, the artifact store
	// (TANDEM_ARTIFACT_STORE), webhooks (TANDEM_WEBHOOK_URLS) and metrics.
	// Detached after the server stops and before the NATS connection closes.
	reg := pipeline.NewRegistry()
	jobs.RegisterAll(reg, deps)
	_, detachBatches, err := batch.Attach(ctx, reg, deps, cfg, promReg)
	if err != nil {
		return err
	}
	defer detachBatches()

	metrics := pipeline.NewMetrics(promReg)
	middleware := []asynq.MiddlewareFunc{pipeline.Recover(logger), metrics.Middleware(), pipeline.Logging(logger)}
	var idle *idleExit
	if *exitWhenIdle > 0 {
		redisOpt, err := cfg.RedisConnOpt()
		if err != nil {
			return err
		}
		insp := asynq.NewInspector(redisOpt)
		defer insp.Close()
		idle = &idleExit{after: *exitWhenIdle, inspect: insp, queues: queueNames(cfg.Queues), logger: logger, poll: time.Second}
		middleware = append([]asynq.MiddlewareFunc{idle.middleware}, middleware...)
	}
	servers, err := newServers(cfg, reg, logger, *lanePoll, *laneConc, middleware)
	if err != nil {
		return err
	}

	admin := &http.Server{Addr: *adminAddr, Handler: adminMux(promReg), ReadHeaderTimeout: 5 * time.Second}
	adminErr := make(chan error, 1)
	go func() {
		if err := admin.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
			adminErr <- err
		}
		close(adminErr)
	}()
	deviceName := "cpu"
	if setup.dev != nil {
		deviceName = setup.dev.String()
	}
	logger.Info("worker starting", "kinds", reg.Kinds(), "queues", cfg.Queues, "concurrency", cfg.Concurrency, "device", deviceName, "admin", *adminAddr, "data_root", cfg.DataRoot)

	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		if err := <-adminErr; err != nil {
			logger.Error("admin server failed", "err", err)
			cancel()
		}
	}()
	if idle != nil {
		go idle.watch(runCtx, cancel)
	}
	runErr := runServers(runCtx, servers)
	shutCtx, done := context.WithTimeout(context.Background(), 5*time.Second)
	defer done()
	_ = admin.Shutdown(shutCtx)
	logger.Info("worker stopped")
	return runErr
}

// queuesForBus leaves the interactive queue out of a worker without NATS.
// Interactive jobs stream their tokens over NATS, so such a worker could
// only fail each one (permanently, and the client would wait out its start
// timeout for a 503) where a worker with NATS would have run it. A worker
// asked to serve the interactive queue alone cannot do anything and
// refuses to start.
func queuesForBus(queues map[string]int, hasBus bool, logger *slog.Logger) (map[string]int, error) {
	if _, ok := queues[pipeline.QueueInteractive]; !ok || hasBus {
		return queues, nil
	}
	if len(queues) == 1 {
		return nil, fmt.Errorf("queues: only %q, which needs NATS to stream its tokens: set TANDEM_NATS_URL (--nats-url)", pipeline.QueueInteractive)
	}
	rest := make(map[string]int, len(queues)-1)
	for q, w := range queues {
		if q != pipeline.QueueInteractive {
			rest[q] = w
		}
	}
	logger.Warn("no NATS URL: not serving the interactive queue, whose jobs stream over NATS; set TANDEM_NATS_URL to serve it",
		"queue", pipeline.QueueInteractive, "queues", rest)
	return rest, nil
}

// defaultInteractivePoll is the interactive lane's poll interval: a job a
// person waits for starts within about this long on an idle worker, for one
// Redis script call per poll (docs/PERFORMANCE.md has the measurements).
const defaultInteractivePoll = 2 * time.Millisecond

// newServers builds the worker's asynq servers: with lanePoll > 0 and the
// interactive queue among cfg's, that queue gets a server of its own polled
// every lanePoll (pipeline.Config.SplitQueue) and the other queues keep
// cfg's poll interval; otherwise one server serves every queue.
func newServers(cfg pipeline.Config, reg *pipeline.Registry, logger *slog.Logger, lanePoll time.Duration, laneConc int, mw []asynq.MiddlewareFunc) ([]*pipeline.Server, error) {
	if _, ok := cfg.Queues[pipeline.QueueInteractive]; !ok || lanePoll == 0 {
		srv, err := pipeline.NewServer(cfg, reg, logger, mw...)
		return []*pipeline.Server{srv}, err
	}
	fast, rest, err := cfg.SplitQueue(pipeline.QueueInteractive, lanePoll, laneConc)
	if err != nil {
		return nil, fmt.Errorf("--interactive-poll-interval/--interactive-concurrency: %w", err)
	}
	lane, err := pipeline.NewServer(fast, reg, logger.With("lane", pipeline.QueueInteractive), mw...)
	if err != nil {
		return nil, err
	}
	if len(rest.Queues) == 0 {
		return []*pipeline.Server{lane}, nil
	}
	srv, err := pipeline.NewServer(rest, reg, logger, mw...)
	if err != nil {
		return nil, err
	}
	logger.Info("interactive lane", "poll", lanePoll, "concurrency", laneConc)
	return []*pipeline.Server{lane, srv}, nil
}

// runServers runs every server until ctx is done and returns the first
// error; a server that fails stops the others.
func runServers(ctx context.Context, servers []*pipeline.Server) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make(chan error, len(servers))
	for _, s := range servers {
		go func() {
			err := s.Run(ctx)
			if err != nil {
				cancel()
			}
			errs <- err
		}()
	}
	var first error
	for range servers {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	return first
}

func adminMux(reg *prometheus.Registry) *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = io.WriteString(w, "ok\n")
	})
	return mux
}

func execCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || !slices.Contains(jobs.Names(), args[0]) {
		fmt.Fprintf(stderr, "usage: worker exec KIND [flags]   (each kind takes -h)\n\nFile paths are relative to the data root, $%s (default the current directory).\n\nkinds:\n", jobs.EnvDataRoot)
		for _, k := range jobs.Names() {
			fmt.Fprintf(stderr, "  %-10s %s\n", k, jobs.Summary(k))
		}
		return fmt.Errorf("exec: %w", pipeline.SubcommandError("job kind", args))
	}
	logger, err := newLogger(stderr, envOr("TANDEM_LOG_LEVEL", "warn"))
	if err != nil {
		return err
	}
	// The device comes from the environment here (the job's own flags
	// follow the kind): TANDEM_DEVICE=cuda:0 runs the job on GPU 0.
	prec, err := gpu.ParsePrecision(envOr("TANDEM_GPU_PRECISION", "fp32"))
	if err != nil {
		return fmt.Errorf("TANDEM_GPU_PRECISION: %w", err)
	}
	setup, err := openDevice(envOr("TANDEM_DEVICE", "cpu"), prec, nil, false, logger)
	if err != nil {
		return err
	}
	if setup.dev != nil {
		defer setup.dev.Close()
	}
	cfg := pipeline.DefaultConfig()
	if err := cfg.ApplyEnv(os.LookupEnv); err != nil {
		return err
	}
	deps, closeDeps, err := openDeps(ctx, cfg, logger, setup.dev)
	if err != nil {
		return err
	}
	defer closeDeps()
	if args[0] == jobs.KindWebhook {
		return batch.ExecWebhook(ctx, args[1:], stdout)
	}
	return jobs.Exec(ctx, deps, args[0], args[1:], stdout)
}

// openDeps builds what jobs run on, alike for the server and `worker exec`:
// every file a job names lies in the data root (a root that cannot be
// opened stops the worker here rather than failing each job); the NATS bus
// where cfg names a server; Redis; the artifact store of the sharded
// rebuild's snapshots and shard files, which schedulers reload from; the
// model registry, which jobs name models in (name, name@N) and fine-tunes
// register to; and a model store that resolves names there and loads onto
// dev (nil: the CPU). The function returned releases what it opened.
func openDeps(ctx context.Context, cfg pipeline.Config, logger *slog.Logger, dev *gpu.Device) (_ *jobs.Deps, _ func(), err error) {
	var closers []func() error
	closeAll := func() {
		for i := len(closers) - 1; i >= 0; i-- {
			_ = closers[i]()
		}
	}
	defer func() {
		if err != nil {
			closeAll()
		}
	}()
	limit, err := generation.ModelCacheBytesFromEnv()
	if err != nil {
		return nil, nil, err
	}
	root, err := jobs.OpenDataRoot(cfg)
	if err != nil {
		return nil, nil, err
	}
	closers = append(closers, root.Close)
	var bus *pipeline.Bus
	if cfg.NATSURL != "" {
		natsOpts, err := cfg.NATSOptions()
		if err != nil {
			return nil, nil, err
		}
		if bus, err = pipeline.ConnectBus(ctx, cfg.NATSURL, natsOpts...); err != nil {
			return nil, nil, fmt.Errorf("nats: %w", err)
		}
		closers = append(closers, func() error { bus.Close(); return nil })
	}
	rdb, err := cfg.RedisClient()
	if err != nil {
		return nil, nil, err
	}
	closers = append(closers, rdb.Close)
	aopts := artifact.Options{Spec: os.Getenv(artifact.EnvStore), DataDir: cfg.DataDir}
	if bus != nil {
		aopts.JS = bus.JS
	}
	arts, err := artifact.Open(ctx, aopts)
	if err != nil {
		return nil, nil, err
	}
	closers = append(closers, arts.Close)
	reg := registry.New(rdb, jobs.RegistryDir(cfg.DataDir))
	models := generation.NewModelStoreWith(generation.StoreConfig{Limit: limit, Device: dev, Registry: reg})
	deps := &jobs.Deps{Logger: logger, Models: models, Bus: bus, Redis: rdb, Artifacts: arts, Registry: reg,
		DataDir: cfg.DataDir, Device: dev, PromptTemplates: batch.PromptTemplates}
	deps.SetDataRoot(root)
	return deps, closeAll, nil
}

func newLogger(w io.Writer, level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("log-level: %w", err)
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l})), nil
}

// envDuration reads a duration variable; unset or empty is zero.
func envDuration(key string) (time.Duration, error) {
	v := os.Getenv(key)
	if v == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("%s: %q is not a non-negative duration such as 5m", key, v)
	}
	return d, nil
}

// envInt reads an integer variable; unset or empty is def.
func envInt(key string, def int) (int, error) {
	v := os.Getenv(key)
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		return 0, fmt.Errorf("%s: %q is not an integer", key, v)
	}
	return n, nil
}

func envOr(key, def string) string {
	if v, ok := os.LookupEnv(key); ok {
		return v
	}
	return def
}
