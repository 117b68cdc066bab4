// Command chaos is a bounded fault-injection run of the whole pipeline on
// this machine: a private redis-server (AOF) and nats-server (JetStream on
// disk) as child processes, the scheduler and two workers from bin/, and a
// stream of real batches submitted with bin/producer. While the batches run
// it SIGKILLs workers mid-chunk, SIGKILLs and restarts Redis and NATS,
// SIGSTOPs a worker past its lease, and stalls Redis and NATS (SIGSTOP for 5
// to 15 s, then SIGCONT), 21 faults in all; then it checks that every
// acknowledged custom_id is in output.jsonl or errors.jsonl exactly once,
// prints the figures, and writes them into the "Chaos harness" section of
// docs/RELIABILITY.md. It exits non-zero when anything acknowledged was
// lost or duplicated, or when fewer than 20 faults (stalls of both among
// them) took place. `make chaos` runs it after `make build`.
//
// Everything is bounded: one overall deadline (--deadline), a timeout on
// every wait, and every child killed at exit, Ctrl-C included.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
)

// options are the command line.
type options struct {
	deadline  time.Duration
	rowsBatch int
	maxRows   int
	maxTokens int
	chunkSize int
	feedback  int
	report    string
	keep      bool
}

// checkTime bounds reading the results after the run.
const checkTime = 90 * time.Second

// defaultDeadline is --deadline's default: the 21 faults take about five
// minutes, and the orphans of the last kills a minute more to recover.
const defaultDeadline = 9 * time.Minute

// harness is the state of one run.
type harness struct {
	ctx    context.Context
	parent context.Context // Ctrl-C
	opt    options
	root   string // repository root
	dir    string // .tandem/chaos
	bin    string
	env    []string
	begin  time.Time

	redisAddr, natsURL string
	rdb                *redis.Client
	redis, nats        *proc
	scheduler          *proc
	workers            []*proc

	mu      sync.Mutex
	procs   []*proc
	crashes []string

	load   *load
	faults []*fault
	track  sync.WaitGroup // orphan trackers
	// claimed is the chunk task ids some fault already counts as orphaned.
	claimed map[string]bool
	redisProbe
}

func main() {
	var o options
	flag.DurationVar(&o.deadline, "deadline", defaultDeadline, "limit of the fault and drain phase; the check after it has 90 s more")
	flag.IntVar(&o.rowsBatch, "rows", 600, "rows per submitted batch")
	flag.IntVar(&o.maxRows, "max-rows", maxBatches*600, "stop submitting batches after this many rows in all")
	flag.IntVar(&o.maxTokens, "max-tokens", 8, "max_tokens of every row")
	flag.IntVar(&o.chunkSize, "chunk-size", 8, "rows per chunk task")
	flag.IntVar(&o.feedback, "feedback", 200, "feedback events to publish when producer has the feedback command")
	flag.StringVar(&o.report, "report", "docs/RELIABILITY.md", "file whose \"Chaos harness\" section gets the figures (empty: none)")
	flag.BoolVar(&o.keep, "keep", false, "keep .tandem/chaos (logs, Redis and NATS data) after a successful run")
	flag.Parse()

	redis.SetLogger(quietLogger{}) // the run reports Redis outages itself
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, o)
	stop()
	os.Exit(code)
}

func run(parent context.Context, o options) int {
	ctx, cancel := context.WithTimeout(parent, o.deadline)
	defer cancel()
	root, err := os.Getwd()
	if err != nil {
		fmt.Fprintln(os.Stderr, "chaos:", err)
		return 2
	}
	h := &harness{ctx: ctx, parent: parent, opt: o, claimed: map[string]bool{}, root: root, dir: filepath.Join(root, ".tandem", "chaos"), bin: filepath.Join(root, "bin"), begin: time.Now()}
	res, err := h.run()
	h.stopAll()
	failed := err != nil || res == nil || !res.ok()
	if res != nil {
		res.print(os.Stdout)
		if o.report != "" {
			if werr := writeReport(filepath.Join(root, o.report), res); werr != nil {
				fmt.Fprintln(os.Stderr, "chaos: report:", werr)
			} else {
				fmt.Printf("\nfigures written to %s (section \"Chaos harness\")\n", o.report)
			}
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "chaos:", err)
	}
	if failed || o.keep {
		fmt.Printf("logs and data kept in %s\n", h.dir)
	} else if rerr := os.RemoveAll(h.dir); rerr != nil {
		fmt.Fprintln(os.Stderr, "chaos: clean up:", rerr)
	}
	if parent.Err() != nil {
		fmt.Fprintln(os.Stderr, "chaos: interrupted")
		return 130
	}
	if failed {
		return 1
	}
	return 0
}

// context is the run's context: the overall deadline, then the check's.
func (h *harness) context() context.Context {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.ctx
}

// since is the seconds since the run began.
func (h *harness) since() float64 { return time.Since(h.begin).Seconds() }

func (h *harness) logf(format string, args ...any) {
	fmt.Printf("[%6.1fs] %s\n", h.since(), fmt.Sprintf(format, args...))
}

// stopAll kills every child, in reverse start order.
func (h *harness) stopAll() {
	h.mu.Lock()
	procs := append([]*proc(nil), h.procs...)
	h.mu.Unlock()
	for i := len(procs) - 1; i >= 0; i-- {
		procs[i].stop()
	}
	if h.rdb != nil {
		h.rdb.Close()
	}
}

// run sets up the services and parts, runs the load and the faults, and
// checks the outcome. A nil result means the run never got far enough to
// have figures.
func (h *harness) run() (*result, error) {
	for _, b := range []string{"producer", "worker", "scheduler"} {
		if _, err := os.Stat(filepath.Join(h.bin, b)); err != nil {
			return nil, fmt.Errorf("bin/%s missing: run make build first", b)
		}
	}
	natsBin, err := natsServerPath()
	if err != nil {
		return nil, err
	}
	if err := os.RemoveAll(h.dir); err != nil {
		return nil, err
	}
	for _, d := range []string{"logs", "redis", "nats", "data", "files", "inputs", "results"} {
		if err := os.MkdirAll(filepath.Join(h.dir, d), 0o755); err != nil {
			return nil, err
		}
	}
	var ports [5]int
	for i := range ports {
		p, err := freePort()
		if err != nil {
			return nil, err
		}
		ports[i] = p
	}
	if h.redis, err = h.newRedis(ports[0]); err != nil {
		return nil, err
	}
	h.nats = h.newNATS(natsBin, ports[1])
	h.env = append(os.Environ(),
		"TANDEM_REDIS_URL=redis://"+h.redisAddr+"/0", "TANDEM_NATS_URL="+h.natsURL,
		"TANDEM_DATA_DIR="+filepath.Join(h.dir, "data"), "TANDEM_ARTIFACT_STORE=local",
		// Job file paths are confined here; batches go through the artifact
		// store, so no job of the run names a file.
		"TANDEM_DATA_ROOT="+filepath.Join(h.dir, "files"),
		"TANDEM_CONCURRENCY=2", "TANDEM_POLL_INTERVAL=200ms", "TANDEM_LOG_LEVEL=info",
		"TANDEM_WEBHOOK_URLS=", "TANDEM_REQUIRE_REDIS_PERSISTENCE=true",
	)
	h.logf("starting redis-server on %s (AOF, appendfsync everysec) and nats-server on %s (JetStream on disk)", h.redisAddr, h.natsURL)
	if err := h.start(h.redis); err != nil {
		return nil, err
	}
	if err := h.start(h.nats); err != nil {
		return nil, err
	}
	schedAdmin := fmt.Sprintf("127.0.0.1:%d", ports[2])
	schedArgs := []string{filepath.Join(h.bin, "scheduler"), "--admin-addr", schedAdmin}
	fb := h.feedbackAvailable()
	if fb.ok {
		schedArgs = append(schedArgs, fb.schedulerArgs...)
	}
	h.scheduler = h.newProc("scheduler", schedArgs, healthy(schedAdmin))
	if err := h.start(h.scheduler); err != nil {
		return nil, err
	}
	for i := 0; i < 2; i++ {
		admin := fmt.Sprintf("127.0.0.1:%d", ports[3+i])
		w := h.newProc(fmt.Sprintf("worker-%d", i+1), []string{filepath.Join(h.bin, "worker"), "--admin-addr", admin}, healthy(admin))
		h.workers = append(h.workers, w)
		if err := h.start(w); err != nil {
			return nil, err
		}
	}
	h.logf("scheduler and 2 workers up; logs in %s", filepath.Join(h.dir, "logs"))

	h.load = newLoad(h)
	loadDone := make(chan struct{})
	go func() { defer close(loadDone); h.load.run() }()
	var fbRun *feedbackRun
	if fb.ok {
		fbRun = h.startFeedback(fb)
	}

	timelineErr := h.timeline()
	h.load.stopSubmitting()
	h.logf("fault window over; waiting for every batch to end")
	drainErr := h.load.waitAllTerminal()
	h.load.stopPolling()
	<-loadDone

	// The orphan trackers end when their chunks complete (the batches
	// have ended by now) or at the deadline.
	h.track.Wait()
	// The check gets time of its own, so that a run cut short by the
	// deadline still reports what it saw.
	cctx, ccancel := context.WithTimeout(h.parent, checkTime)
	defer ccancel()
	h.mu.Lock()
	h.ctx = cctx
	h.mu.Unlock()
	res := h.check(fb, fbRun)
	return res, errors.Join(timelineErr, drainErr)
}

// quietLogger drops go-redis's own log lines ("failed to dial" while the
// harness has Redis down on purpose).
type quietLogger struct{}

func (quietLogger) Printf(context.Context, string, ...any) {}
