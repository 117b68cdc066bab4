package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hibiken/asynq"
)

// leaseStop is how long a worker stays SIGSTOPped: past asynq's 30 s lease.
const leaseStop = 40 * time.Second

// minFaults is the fewest faults a run must inject to pass.
const minFaults = 20

// fault is one injected fault and what followed it.
type fault struct {
	name   string
	at     float64 // seconds into the run
	stall  bool    // a SIGSTOP of Redis or NATS (paused, not killed)
	outage float64 // seconds the part was down or paused
	// recovery is the seconds from the fault until batch progress was
	// next seen (-1: never).
	recovery float64
	detail   string
	err      string

	mu       sync.Mutex
	orphans  []string  // chunk task ids the part held when hit
	orphanOK []float64 // seconds from the fault until each orphan completed (-1: not seen)
}

func (h *harness) addFault(name string) *fault {
	f := &fault{name: name, at: h.since()}
	h.mu.Lock()
	h.faults = append(h.faults, f)
	h.mu.Unlock()
	h.logf("FAULT %d: %s", len(h.faults), name)
	return f
}

// pause sleeps d unless the run ends first.
func (h *harness) pause(d time.Duration) error {
	select {
	case <-h.context().Done():
		return h.context().Err()
	case <-time.After(d):
		return nil
	}
}

// timeline injects the faults one after another while the load runs.
func (h *harness) timeline() error {
	if err := h.poll("first rows done", 120*time.Second, 500*time.Millisecond, func() error {
		if h.load.doneAt(h.since()) > 0 {
			return nil
		}
		return fmt.Errorf("no rows done yet")
	}); err != nil {
		return err
	}
	kill := func(i int) func() error { return func() error { return h.killWorker(i) } }
	stallRedis := func(d time.Duration) func() error { return func() error { return h.stallService(h.redis, d) } }
	stallNATS := func(d time.Duration) func() error { return func() error { return h.stallService(h.nats, d) } }
	// 21 faults: 9 worker SIGKILLs, a worker SIGSTOP past its lease, a
	// SIGKILL each of Redis and NATS, and 9 stalls (Redis 5 times, NATS 4
	// times, 5 to 15 s each), interleaved so that each lands on a
	// pipeline still catching up with the one before.
	steps := []func() error{
		kill(0), stallRedis(10 * time.Second), kill(1), stallNATS(8 * time.Second),
		stallRedis(6 * time.Second), h.killRedis, stallNATS(12 * time.Second), kill(0),
		stallRedis(15 * time.Second), h.killNATS, kill(1), stallNATS(5 * time.Second),
		func() error { return h.stopWorker(0) }, kill(1), stallRedis(8 * time.Second), kill(0),
		stallNATS(15 * time.Second), kill(1), stallRedis(12 * time.Second), kill(0), kill(1),
	}
	for _, do := range steps {
		if err := h.pause(faultGap); err != nil {
			return err
		}
		if err := do(); err != nil {
			return err
		}
	}
	return nil
}

// faultGap is the pause before each fault of the timeline.
const faultGap = 6 * time.Second

// stallService pauses a service (SIGSTOP) for d while chunks run, then
// resumes it (SIGCONT): the process keeps its sockets, so clients see
// timeouts rather than refused connections, and go-redis retries commands
// the paused Redis then runs twice. It is resumed even when the run ends
// meanwhile.
func (h *harness) stallService(p *proc, d time.Duration) error {
	insp := h.inspector()
	for _, w := range h.workers {
		if len(h.waitBusy(insp, w)) > 0 {
			break
		}
	}
	insp.Close()
	f := h.addFault(fmt.Sprintf("SIGSTOP %s-server for %v (a stall), then SIGCONT", p.name, d))
	f.stall = true
	if err := p.signal(syscall.SIGSTOP); err != nil {
		f.err = err.Error()
		return nil
	}
	t0 := time.Now()
	err := h.pause(d)
	if cerr := p.signal(syscall.SIGCONT); cerr != nil {
		f.err = cerr.Error()
	}
	f.outage = time.Since(t0).Seconds()
	f.detail = fmt.Sprintf("paused %.1fs, then continued", f.outage)
	h.logf("SIGCONT %s", p.name)
	return err
}

// inspector is a short-lived asynq inspector on the private Redis.
func (h *harness) inspector() *asynq.Inspector {
	return asynq.NewInspector(asynq.RedisClientOpt{Addr: h.redisAddr, DialTimeout: time.Second, ReadTimeout: 2 * time.Second})
}

// activeChunks is the chunk tasks the asynq server with this pid reports
// running (from its last heartbeat, at most a few seconds old).
func (h *harness) activeChunks(insp *asynq.Inspector, pid int) []string {
	servers, err := insp.Servers()
	if err != nil {
		return nil
	}
	var ids []string
	for _, s := range servers {
		if s.PID != pid {
			continue
		}
		for _, w := range s.ActiveWorkers {
			if strings.HasPrefix(w.TaskType, "generate:") {
				ids = append(ids, w.Queue+"\x00"+w.TaskID)
			}
		}
	}
	return ids
}

// waitBusy waits (bounded) until the worker reports a chunk in hand, so
// that the fault lands mid-chunk; after the timeout the fault goes ahead.
func (h *harness) waitBusy(insp *asynq.Inspector, w *proc) []string {
	var ids []string
	_ = h.poll(w.name+" running a chunk", 15*time.Second, 200*time.Millisecond, func() error {
		if ids = h.activeChunks(insp, w.pid()); len(ids) > 0 {
			return nil
		}
		return fmt.Errorf("idle")
	})
	return ids
}

// killWorker SIGKILLs a worker mid-chunk and starts it again at once.
func (h *harness) killWorker(i int) error {
	w := h.workers[i]
	insp := h.inspector()
	defer insp.Close()
	h.waitBusy(insp, w)
	f := h.addFault("SIGKILL " + w.name + " mid-chunk, restart at once")
	if err := w.signal(syscall.SIGKILL); err != nil {
		f.err = err.Error()
		return nil
	}
	h.trackOrphans(f, insp)
	t0 := time.Now()
	if err := h.start(w); err != nil {
		f.err = err.Error()
	}
	f.outage = time.Since(t0).Seconds()
	f.detail = fmt.Sprintf("back up in %.1fs", f.outage)
	return nil
}

// stopWorker SIGSTOPs a worker for longer than its lease, then SIGCONTs it.
func (h *harness) stopWorker(i int) error {
	w := h.workers[i]
	insp := h.inspector()
	defer insp.Close()
	h.waitBusy(insp, w)
	f := h.addFault(fmt.Sprintf("SIGSTOP %s for %v (past its 30s lease), then SIGCONT", w.name, leaseStop))
	if err := w.signal(syscall.SIGSTOP); err != nil {
		f.err = err.Error()
		return nil
	}
	h.trackOrphans(f, insp)
	err := h.pause(leaseStop)
	if cerr := w.signal(syscall.SIGCONT); cerr != nil {
		f.err = cerr.Error()
	}
	f.outage = leaseStop.Seconds()
	f.detail = "stopped, then continued"
	h.logf("SIGCONT %s", w.name)
	return err
}

// orphanSettle is how long after a fault a chunk must still be active to
// count as orphaned: far longer than a live chunk of this load takes.
const orphanSettle = 8 * time.Second

// trackOrphans finds the chunks the hit worker held and follows each until
// asynq has completed it. Heartbeat data is seconds old, so it compares the
// active tasks right after the fault with those still active orphanSettle
// later: the live workers' chunks have finished by then, the orphans have
// not (their lease keeps anyone else from taking them).
func (h *harness) trackOrphans(f *fault, insp *asynq.Inspector) {
	first, err := insp.ListActiveTasks("default", asynq.PageSize(1000))
	if err != nil {
		f.err = "list active tasks: " + err.Error()
		return
	}
	h.track.Add(1)
	go func() {
		defer h.track.Done()
		if h.pause(orphanSettle) != nil {
			return
		}
		in := h.inspector()
		defer in.Close()
		later, err := in.ListActiveTasks("default", asynq.PageSize(1000))
		if err != nil {
			return
		}
		still := map[string]bool{}
		for _, t := range later {
			still[t.ID] = true
		}
		// A chunk an earlier fault orphaned and asynq has not yet recovered
		// is still active; it stays that fault's.
		var ids []string
		h.mu.Lock()
		for _, t := range first {
			if still[t.ID] && !h.claimed[t.ID] {
				h.claimed[t.ID] = true
				ids = append(ids, t.ID)
			}
		}
		h.mu.Unlock()
		f.mu.Lock()
		f.orphans = ids
		f.orphanOK = make([]float64, len(ids))
		for k := range f.orphanOK {
			f.orphanOK[k] = -1
		}
		f.mu.Unlock()
		for k, id := range ids {
			_ = h.poll("orphan "+id+" completed", 5*time.Minute, time.Second, func() error {
				ti, err := in.GetTaskInfo("default", id)
				if err != nil {
					return err
				}
				if ti.State != asynq.TaskStateCompleted {
					return fmt.Errorf("state %v", ti.State)
				}
				f.mu.Lock()
				f.orphanOK[k] = h.since() - f.at
				f.mu.Unlock()
				h.logf("orphaned chunk %s (fault: %s) completed %.0fs after the fault", id, f.name, h.since()-f.at)
				return nil
			})
		}
	}()
}

// redisProbe measures what a Redis SIGKILL costs: acknowledged INCRs of a
// probe key against what the restarted server has, and the writes Redis
// took in the last second before the kill (the everysec fsync window).
type redisProbe struct {
	probeAcked     int64
	probeRestored  int64
	windowWrites   int64
	lastBatchAge   float64 // seconds from the last acknowledged create to the kill
	redisProbeDone bool
}

// dirty reads Redis's count of writes since the last RDB save (never reset
// here: the server runs with save "").
func (h *harness) dirty(ctx context.Context) (int64, error) {
	s, err := h.rdb.Info(ctx, "persistence").Result()
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(s, "\r\n") {
		if v, ok := strings.CutPrefix(line, "rdb_changes_since_last_save:"); ok {
			return strconv.ParseInt(v, 10, 64)
		}
	}
	return 0, fmt.Errorf("no rdb_changes_since_last_save in INFO")
}

// killRedis SIGKILLs redis-server right after a batch is acknowledged and
// while a probe writes, then restarts it from the same AOF directory.
func (h *harness) killRedis() error {
	h.load.pause(true)
	defer h.load.pause(false)
	// The probe INCRs for two seconds; writes are sampled every 100 ms.
	ctx, cancel := context.WithCancel(h.context())
	var acked int64
	probeDone := make(chan struct{})
	go func() {
		defer close(probeDone)
		for ctx.Err() == nil {
			c, cc := context.WithTimeout(ctx, 500*time.Millisecond)
			v, err := h.rdb.Incr(c, "chaos:probe").Result()
			cc()
			if err == nil {
				acked = v
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	type sample struct {
		at    time.Time
		dirty int64
	}
	var samples []sample
	for end := time.Now().Add(2 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		c, cc := context.WithTimeout(h.context(), 500*time.Millisecond)
		d, err := h.dirty(c)
		cc()
		if err == nil {
			samples = append(samples, sample{time.Now(), d})
		}
	}
	// A batch acknowledged just before the kill must survive it.
	h.load.submit()
	createdAt := h.since()
	f := h.addFault("SIGKILL redis-server, restart from the same AOF dir")
	err := h.redis.signal(syscall.SIGKILL)
	killed := time.Now()
	cancel()
	<-probeDone
	if err != nil {
		f.err = err.Error()
		return nil
	}
	if n := len(samples); n > 0 {
		last := samples[n-1]
		first := last
		for _, s := range samples {
			if last.at.Sub(s.at) <= time.Second {
				first = s
				break
			}
		}
		// Scale the sampled stretch to the whole last second.
		span := killed.Sub(first.at).Seconds()
		if span > 0 {
			h.windowWrites = int64(float64(last.dirty-first.dirty) / last.at.Sub(first.at).Seconds() * min(span, 1))
		}
	}
	h.probeAcked = acked
	h.lastBatchAge = f.at - createdAt
	if err := h.pause(2 * time.Second); err != nil {
		return err
	}
	t0 := time.Now()
	if err := h.start(h.redis); err != nil {
		f.err = err.Error()
		return err
	}
	f.outage = time.Since(killed).Seconds()
	c, cc := context.WithTimeout(h.context(), 2*time.Second)
	restored, gerr := h.rdb.Get(c, "chaos:probe").Int64()
	cc()
	if gerr != nil {
		f.err = "read probe after restart: " + gerr.Error()
	}
	h.probeRestored, h.redisProbeDone = restored, gerr == nil
	f.detail = fmt.Sprintf("down %.1fs (AOF reload %.1fs); probe INCRs acked %d, restored %d; ~%d writes in the last second before the kill; a batch acknowledged %.2fs before it",
		f.outage, time.Since(t0).Seconds(), acked, restored, h.windowWrites, h.lastBatchAge)
	return nil
}

// killNATS SIGKILLs nats-server and restarts it on the same port and store.
func (h *harness) killNATS() error {
	f := h.addFault("SIGKILL nats-server, restart on the same store dir")
	if err := h.nats.signal(syscall.SIGKILL); err != nil {
		f.err = err.Error()
		return nil
	}
	killed := time.Now()
	if err := h.pause(2 * time.Second); err != nil {
		return err
	}
	if err := h.start(h.nats); err != nil {
		f.err = err.Error()
		return err
	}
	f.outage = time.Since(killed).Seconds()
	f.detail = fmt.Sprintf("down %.1fs", f.outage)
	return nil
}
