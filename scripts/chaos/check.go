package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

// result is every figure of one run.
type result struct {
	date, command string
	seconds       float64

	batches, rows int
	refused       []string
	statuses      map[string]int
	outLines      int
	errLines      int
	lost          int // acknowledged custom_ids in neither file
	duplicated    int // custom_ids in the files more than once
	unknown       int // custom_ids in the files that no input had
	unfinished    int // rows of batches still open at the end
	countMismatch []string
	listErrors    int

	maxTokens, chunkSize int // of every row and batch

	faults  []*fault
	crashes []string
	probe   redisProbe
	fb      *feedbackResult
	notes   []string
}

// ok is whether nothing acknowledged was lost or duplicated, under at
// least minFaults faults, stalls of both Redis and NATS among them.
func (r *result) ok() bool {
	probeLost := r.probe.redisProbeDone && r.probe.probeRestored < r.probe.probeAcked
	fbBad := r.fb != nil && r.fb.ran && (r.fb.lost > 0 || r.fb.duplicated > 0)
	redisStalls, natsStalls := r.stalls()
	enough := len(r.faults) >= minFaults && redisStalls > 0 && natsStalls > 0
	return r.lost == 0 && r.duplicated == 0 && r.unknown == 0 && r.unfinished == 0 && !probeLost && !fbBad && r.batches > 0 && enough
}

// stalls counts the stalls of Redis and of NATS that took effect.
func (r *result) stalls() (redisStalls, natsStalls int) {
	for _, f := range r.faults {
		switch {
		case !f.stall || f.err != "":
		case strings.HasPrefix(f.name, "SIGSTOP redis"):
			redisStalls++
		case strings.HasPrefix(f.name, "SIGSTOP nats"):
			natsStalls++
		}
	}
	return redisStalls, natsStalls
}

// check reads every batch's results and counts custom_ids.
func (h *harness) check(fb feedbackSupport, fr *feedbackRun) *result {
	l := h.load
	r := &result{
		date:     time.Now().UTC().Format("2006-01-02 15:04 UTC"),
		command:  "make chaos (go run ./scripts/chaos" + quoteArgs(os.Args[1:]) + ")",
		statuses: map[string]int{},
		probe:    h.redisProbe,
	}
	r.maxTokens, r.chunkSize = h.opt.maxTokens, h.opt.chunkSize
	l.mu.Lock()
	batches := append([]*submitted(nil), l.batches...)
	r.refused = append(r.refused, l.refused...)
	r.listErrors = l.listErrors
	r.rows = l.rows
	l.mu.Unlock()
	r.batches = len(batches)
	seen := map[string]int{}
	want := map[string]bool{}
	for _, s := range batches {
		for _, id := range s.ids {
			want[id] = true
		}
		switch {
		case !s.seen || s.missing >= 10:
			r.statuses["missing"]++
			continue
		case !terminal(s.last.Status):
			r.statuses[s.last.Status]++
			r.unfinished += len(s.ids)
			continue
		}
		r.statuses[s.last.Status]++
		dir := filepath.Join(h.dir, "results", s.id)
		if _, err := h.producer(60*time.Second, "batch", "results", s.id, "--out", dir); err != nil {
			r.notes = append(r.notes, fmt.Sprintf("batch %s: results: %v", s.id, err))
			continue
		}
		nOut, errO := countIDs(filepath.Join(dir, "output.jsonl"), seen)
		nErr, errE := countIDs(filepath.Join(dir, "errors.jsonl"), seen)
		if errO != nil || errE != nil {
			r.notes = append(r.notes, fmt.Sprintf("batch %s: read results: %v %v", s.id, errO, errE))
		}
		r.outLines += nOut
		r.errLines += nErr
		c := s.last.RequestCounts
		if c.Total != len(s.ids) || c.Completed != nOut || c.Failed != nErr {
			r.countMismatch = append(r.countMismatch, fmt.Sprintf("%s: counts %d/%d/%d, files %d+%d, input %d",
				s.id, c.Total, c.Completed, c.Failed, nOut, nErr, len(s.ids)))
		}
	}
	for id := range want {
		if seen[id] == 0 {
			r.lost++
		}
	}
	for id, n := range seen {
		if !want[id] {
			r.unknown++
		}
		if n > 1 {
			r.duplicated++
		}
	}
	r.lost -= min(r.lost, r.unfinished) // open batches are reported apart
	h.mu.Lock()
	r.faults = append(r.faults, h.faults...)
	for _, f := range r.faults {
		f.recovery = l.resumedAfter(f.at)
	}
	r.crashes = append(r.crashes, h.crashes...)
	h.mu.Unlock()
	r.fb = h.finishFeedback(fb, fr)
	r.seconds = h.since()
	return r
}

// countIDs adds each line's custom_id to seen and returns the lines read.
func countIDs(path string, seen map[string]int) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	n := 0
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 1<<20), 4<<20)
	for sc.Scan() {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		var v struct {
			CustomID string `json:"custom_id"`
			Error    *struct {
				Code string `json:"code"`
			} `json:"error"`
		}
		if err := json.Unmarshal(line, &v); err != nil {
			return n, fmt.Errorf("%s line %d: %w", path, n+1, err)
		}
		n++
		// A row whose chunk output was lost after it counted is reported
		// (finalisation does not wait for it forever), but its result is
		// gone: for this harness it is lost, not delivered.
		if v.Error != nil && v.Error.Code == "chunk_output_lost" { // batch.CodeChunkOutputLost
			continue
		}
		seen[v.CustomID]++
	}
	return n, sc.Err()
}

// statusList formats the final statuses, most common first.
func (r *result) statusList() string {
	keys := make([]string, 0, len(r.statuses))
	for k := range r.statuses {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return r.statuses[keys[i]] > r.statuses[keys[j]] })
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s %d", k, r.statuses[k])
	}
	return strings.Join(parts, ", ")
}

// quoteArgs renders the command-line arguments, quoting any that need it.
func quoteArgs(args []string) string {
	var b strings.Builder
	for _, a := range args {
		b.WriteByte(' ')
		if a == "" || strings.ContainsAny(a, " \t\"'$`\\") {
			b.WriteString(strconv.Quote(a))
		} else {
			b.WriteString(a)
		}
	}
	return b.String()
}
