package main

import (
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/hibiken/asynq"

	"github.com/tandem-ai/tandem/pipeline"
)

// workerSeenTTL is how long a worker seen serving the interactive queue is
// taken to be there without asking Redis again.
const workerSeenTTL = time.Second

// noWorkerRetryAfter is the Retry-After of a 503 for want of a worker, in
// seconds: about what a worker takes to (re)start. OpenAI's clients wait
// that long before they retry.
const noWorkerRetryAfter = 5

// workerWatch tells whether some worker serves the interactive queue, from
// asynq's server list (the heartbeats the workers write into Redis). A
// worker seen is remembered for workerSeenTTL, so the check costs a
// request nothing while workers run; an absence is not remembered, so a
// worker that has just started is seen by the next request.
type workerWatch struct {
	servers func() ([]*asynq.ServerInfo, error) // asynq.Inspector.Servers; replaceable in tests

	mu   sync.Mutex
	seen time.Time // when a serving worker was last seen
}

func newWorkerWatch(insp *asynq.Inspector) *workerWatch {
	return &workerWatch{servers: insp.Servers}
}

// serving reports whether a worker serves the interactive queue; err is a
// failure to read the server list.
func (ww *workerWatch) serving() (bool, error) {
	ww.mu.Lock()
	fresh := time.Since(ww.seen) < workerSeenTTL
	ww.mu.Unlock()
	if fresh {
		return true, nil
	}
	servers, err := ww.servers()
	if err != nil {
		return false, err
	}
	for _, s := range servers {
		if _, ok := s.Queues[pipeline.QueueInteractive]; ok && s.Status == "active" {
			ww.mu.Lock()
			ww.seen = time.Now()
			ww.mu.Unlock()
			return true, nil
		}
	}
	return false, nil
}

// requireInteractiveWorker answers 503 no_worker with Retry-After at once
// when no worker serves the interactive queue, rather than letting the
// request wait out the start timeout, and reports whether the request may
// go on. When the server list cannot be read the request goes on (its
// enqueue meets the same Redis). Every route that runs interactive
// generation calls it after checking its body.
func (c *completionsAPI) requireInteractiveWorker(w http.ResponseWriter) bool {
	if c.workers == nil {
		return true
	}
	ok, err := c.workers.serving()
	if err != nil {
		c.logger.Warn("interactive: the worker list could not be read; the request goes on", "err", err)
		return true
	}
	if ok {
		return true
	}
	w.Header().Set("Retry-After", strconv.Itoa(noWorkerRetryAfter))
	writeError(w, http.StatusServiceUnavailable, "no_worker",
		"no worker is serving the "+pipeline.QueueInteractive+" queue right now; try again in a few seconds")
	return false
}
