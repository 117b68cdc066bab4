package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"time"
)

// maxBatches keeps every batch on the first page of `producer batch list`.
const maxBatches = 90

// batchView is the part of the producer's batch JSON the harness reads.
type batchView struct {
	ID            string `json:"id"`
	Status        string `json:"status"`
	RequestCounts struct {
		Total     int `json:"total"`
		Completed int `json:"completed"`
		Failed    int `json:"failed"`
	} `json:"request_counts"`
	Chunks     int `json:"chunks"`
	ChunksDone int `json:"chunks_done"`
}

func (b batchView) done() int { return b.RequestCounts.Completed + b.RequestCounts.Failed }

func terminal(status string) bool {
	switch status {
	case "completed", "failed", "expired", "cancelled":
		return true
	}
	return false
}

// submitted is one batch whose create was acknowledged.
type submitted struct {
	id      string
	ids     []string // custom_ids of its input, in order
	at      float64
	last    batchView
	seen    bool
	missing int // successive successful lists it was absent from
}

// point is the total rows done at a moment, from one successful list.
type point struct {
	at   float64
	done int
}

// load submits batches while the faults run, so that work is always in
// flight, and follows them with `producer batch list --json`.
type load struct {
	h *harness

	mu          sync.Mutex
	batches     []*submitted
	refused     []string
	rows        int
	history     []point
	listErrors  int
	paused      bool
	submitting  bool
	polling     bool
	submitEnded chan struct{}
	next        int // number of the next batch
}

func newLoad(h *harness) *load {
	return &load{h: h, submitting: true, polling: true, submitEnded: make(chan struct{})}
}

// producer runs bin/producer with ARGS and returns its standard output.
func (h *harness) producer(timeout time.Duration, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(h.context(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(h.bin, "producer"), args...)
	cmd.Env = h.env
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		msg := bytes.TrimSpace(errb.Bytes())
		if len(msg) > 300 {
			msg = msg[len(msg)-300:]
		}
		return nil, fmt.Errorf("producer %s: %w: %s", args[0], err, msg)
	}
	return out.Bytes(), nil
}

func (l *load) run() {
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); l.submitLoop() }()
	go func() { defer wg.Done(); l.pollLoop() }()
	wg.Wait()
}

// pending is the rows of acknowledged batches not yet done, as last seen.
func (l *load) pendingLocked() int {
	n := 0
	for _, b := range l.batches {
		if !b.seen {
			n += len(b.ids)
		} else if !terminal(b.last.Status) {
			n += b.last.RequestCounts.Total - b.last.done()
		}
	}
	return n
}

// submitLoop keeps about two batches' rows queued until stopSubmitting.
func (l *load) submitLoop() {
	defer close(l.submitEnded)
	for {
		l.mu.Lock()
		goOn, paused := l.submitting, l.paused
		want := !paused && l.pendingLocked() < 2*l.h.opt.rowsBatch &&
			l.rows+l.h.opt.rowsBatch <= l.h.opt.maxRows && len(l.batches) < maxBatches
		l.mu.Unlock()
		if !goOn || l.h.context().Err() != nil {
			return
		}
		if want {
			l.submit()
		}
		select {
		case <-l.h.context().Done():
			return
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// submit writes batch n's input and creates it; an error is a refusal
// (nothing acknowledged), noted and not retried.
func (l *load) submit() {
	h := l.h
	l.mu.Lock()
	n := l.next
	l.next++
	l.mu.Unlock()
	path := filepath.Join(h.dir, "inputs", fmt.Sprintf("batch-%02d.jsonl", n))
	ids, err := writeInput(path, n, h.opt.rowsBatch, h.opt.maxTokens)
	if err != nil {
		l.refuse(fmt.Sprintf("batch %d: write input: %v", n, err))
		return
	}
	at := h.since()
	out, err := h.producer(60*time.Second, "batch", "create", path, "--model", "builtin:tiny",
		"--chunk-size", fmt.Sprint(h.opt.chunkSize), "--json")
	if err != nil {
		l.refuse(fmt.Sprintf("batch %d at +%.0fs: %v", n, at, err))
		return
	}
	var b batchView
	if err := json.Unmarshal(out, &b); err != nil || b.ID == "" {
		l.refuse(fmt.Sprintf("batch %d: unreadable create output %q: %v", n, out, err))
		return
	}
	l.mu.Lock()
	l.batches = append(l.batches, &submitted{id: b.ID, ids: ids, at: at})
	l.rows += len(ids)
	l.mu.Unlock()
	h.logf("batch %s accepted: %d rows in %d chunks", b.ID, b.RequestCounts.Total, b.Chunks)
}

func (l *load) refuse(msg string) {
	l.mu.Lock()
	l.refused = append(l.refused, msg)
	l.mu.Unlock()
	l.h.logf("batch create refused: %s", msg)
}

// writeInput writes rows of OpenAI Batch JSONL with custom_ids unique across
// the run and returns the ids.
func writeInput(path string, n, rows, maxTokens int) ([]string, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	topics := []string{"the weather in a harbour town", "a late train", "a new bakery", "a football match", "autumn leaves", "a lost umbrella"}
	ids := make([]string, rows)
	for i := range ids {
		ids[i] = fmt.Sprintf("b%02d-r%04d", n, i)
		line := map[string]any{"custom_id": ids[i], "method": "POST", "url": "/v1/completions",
			"body": map[string]any{"prompt": fmt.Sprintf("Write note %d about %s:", i, topics[(n+i)%len(topics)]),
				"max_tokens": maxTokens, "temperature": 0.7, "seed": n*10000 + i}}
		if err := enc.Encode(line); err != nil {
			return nil, err
		}
	}
	return ids, os.WriteFile(path, buf.Bytes(), 0o644)
}

// pollLoop lists the batches once a second until stopPolling.
func (l *load) pollLoop() {
	for {
		l.mu.Lock()
		goOn := l.polling
		l.mu.Unlock()
		if !goOn || l.h.context().Err() != nil {
			return
		}
		l.pollOnce()
		select {
		case <-l.h.context().Done():
			return
		case <-time.After(time.Second):
		}
	}
}

func (l *load) pollOnce() {
	out, err := l.h.producer(15*time.Second, "batch", "list", "--json", "--limit", "100")
	var page struct {
		Data []batchView `json:"data"`
	}
	if err == nil {
		err = json.Unmarshal(out, &page)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if err != nil {
		l.listErrors++
		return
	}
	byID := make(map[string]batchView, len(page.Data))
	for _, b := range page.Data {
		byID[b.ID] = b
	}
	total := 0
	for _, s := range l.batches {
		if b, ok := byID[s.id]; ok {
			s.last, s.seen, s.missing = b, true, 0
		} else {
			s.missing++
		}
		total += s.last.done()
	}
	l.history = append(l.history, point{at: l.h.since(), done: total})
}

// doneAt is the latest total rows done seen at or before t (seconds).
func (l *load) doneAt(t float64) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	d := 0
	for _, p := range l.history {
		if p.at > t {
			break
		}
		d = p.done
	}
	return d
}

// resumedAfter is the seconds from t to the first list that showed more
// rows done than at t; -1 when none did.
func (l *load) resumedAfter(t float64) float64 {
	base := l.doneAt(t)
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, p := range l.history {
		if p.at > t && p.done > base {
			return p.at - t
		}
	}
	return -1
}

// pause holds submissions (while Redis is down, a create could be half
// made and unacknowledged, which only muddies the figures).
func (l *load) pause(p bool) {
	l.mu.Lock()
	l.paused = p
	l.mu.Unlock()
}

func (l *load) stopSubmitting() {
	l.mu.Lock()
	l.submitting = false
	l.mu.Unlock()
	select {
	case <-l.submitEnded:
	case <-time.After(90 * time.Second):
	}
}

func (l *load) stopPolling() {
	l.mu.Lock()
	l.polling = false
	l.mu.Unlock()
}

// waitAllTerminal waits until every acknowledged batch has ended, or has
// been absent from 10 successive lists (Redis lost it), or time runs out.
func (l *load) waitAllTerminal() error {
	left := time.Until(l.h.begin.Add(l.h.opt.deadline)) - 45*time.Second
	if left < 10*time.Second {
		left = 10 * time.Second
	}
	return l.h.poll("every batch ended", left, time.Second, func() error {
		l.mu.Lock()
		defer l.mu.Unlock()
		open := 0
		for _, s := range l.batches {
			if s.missing >= 10 {
				continue
			}
			if !s.seen || !terminal(s.last.Status) {
				open++
			}
		}
		if open > 0 {
			return fmt.Errorf("%d batches still open", open)
		}
		return nil
	})
}
