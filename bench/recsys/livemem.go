package main

// The scheduler's live model, measured for memory: how much a scheduler
// pod needs (docs/DEPLOY.md, "Sizing the scheduler", sizes its limit from these figures).
//
// The scheduler builds its live model from the last rebuild's snapshot
// (jobs.LoadRecsData, then recsys.Build with jobs.RecsLiveConfig) and keeps
// it; after each nightly rebuild it builds the next one in the background
// while the old one still serves, so for a while it holds two. The
// measurement runs in a child process of its own, so the generator's
// memory is not counted, and reports after each step the Go heap that
// stays live, the process's resident memory and its peak.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/tandem-ai/tandem/jobs"
	"github.com/tandem-ai/tandem/recsys"
)

// memStep is the process's memory after one step of the measurement.
type memStep struct {
	Step     string  `json:"step"`
	Seconds  float64 `json:"seconds"`
	LiveMiB  float64 `json:"live_heap_mib"` // Go heap in use after a full GC
	RSSMiB   float64 `json:"rss_mib"`       // resident now (after the GC)
	PeakMiB  float64 `json:"peak_rss_mib"`  // resident at most during the step
	PeakNote string  `json:"peak_note,omitempty"`
}

// liveMemory writes the data, measures the live model in a child process
// (this binary with -measure-live) and prints the child's steps.
func liveMemory(csvPath string, o options) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	cmd := exec.Command(self, "-measure-live", csvPath, "-k", strconv.Itoa(o.k))
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return fmt.Errorf("live-model measurement: %w", err)
	}
	var steps []memStep
	if err := json.Unmarshal(out, &steps); err != nil {
		return fmt.Errorf("live-model measurement: %w", err)
	}
	limit := os.Getenv("GOMEMLIMIT")
	if limit == "" {
		limit = "unset"
	}
	fmt.Printf("live model memory (K=%d, frozen IDF, GOMAXPROCS %d, GOMEMLIMIT %s):\n", o.k, runtime.GOMAXPROCS(0), limit)
	fmt.Printf("  %-44s %8s %10s %9s %10s\n", "step", "wall", "live heap", "RSS", "peak RSS")
	for _, s := range steps {
		fmt.Printf("  %-44s %7.1fs %7.0f MiB %5.0f MiB %6.0f MiB%s\n", s.Step, s.Seconds, s.LiveMiB, s.RSSMiB, s.PeakMiB, s.PeakNote)
	}
	return nil
}

// measureLive is the child: it builds a live model from csvPath as the
// scheduler does, then a second one beside it as a reload does, and
// writes its steps to stdout as JSON.
func measureLive(csvPath string, k int) error {
	ctx := context.Background()
	var steps []memStep
	step := func(name string, t time.Time) {
		runtime.GC()
		debug.FreeOSMemory()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		rss, peak := procMemory()
		s := memStep{Step: name, Seconds: time.Since(t).Seconds(), LiveMiB: mib(ms.HeapAlloc), RSSMiB: rss, PeakMiB: peak}
		if !resetPeak() {
			s.PeakNote = " (peak since start: clear_refs refused)"
		}
		steps = append(steps, s)
	}
	build := func() (*recsys.Model, error) {
		st, err := jobs.LoadRecsData(ctx, nil, "", csvPath)
		if err != nil {
			return nil, err
		}
		return recsys.Build(ctx, st, jobs.RecsLiveConfig(k))
	}
	step("start", time.Now())
	t := time.Now()
	m, err := build()
	if err != nil {
		return err
	}
	step("one live model (start-up: load + build)", t)
	t = time.Now()
	next, err := build()
	if err != nil {
		return err
	}
	step("two models (reload: the next built beside it)", t)
	runtime.KeepAlive(m)
	m = next
	t = time.Now()
	step("one model again (the old one dropped)", t)
	runtime.KeepAlive(m)
	return json.NewEncoder(os.Stdout).Encode(steps)
}

func mib(b uint64) float64 { return float64(b) / (1 << 20) }

// procMemory reads VmRSS and VmHWM (peak resident) from /proc, in MiB.
func procMemory() (rss, peak float64) {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0, 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 {
			continue
		}
		kb, err := strconv.ParseFloat(fields[1], 64)
		if err != nil {
			continue
		}
		switch fields[0] {
		case "VmRSS:":
			rss = kb / 1024
		case "VmHWM:":
			peak = kb / 1024
		}
	}
	return rss, peak
}

// resetPeak sets VmHWM back to the current RSS, so the next step's peak is
// its own (Linux: "5" to clear_refs).
func resetPeak() bool {
	return os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) == nil
}
