package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// Names the scheduler's feedback consumer uses (recsys/live/consumer.go,
// pipeline/subjects.go); the harness only reads their state.
const (
	feedbackStream    = "FEEDBACK"
	feedbackDurable   = "recsys"
	deadLetterStream  = "DEADLETTER"
	feedbackDeadLtr   = "tandem.dlq.recsys"
	feedbackEvery     = 400 * time.Millisecond
	feedbackPubTries  = 10
	feedbackDrainTime = 60 * time.Second
)

// feedbackSupport says whether these binaries have the feedback path.
type feedbackSupport struct {
	ok            bool
	reason        string
	schedulerArgs []string
}

// feedbackRun is the publishing in progress.
type feedbackRun struct {
	stop chan struct{}
	done chan struct{}

	mu        sync.Mutex
	acked     []string // ids `producer feedback` confirmed
	failed    []string // ids never confirmed after every try
	retried   int      // publishes that needed more than one try
	firstErrs []string
}

// feedbackResult is what the feedback part of the run found.
type feedbackResult struct {
	ran                bool
	skipped            string
	published, applied int
	lost, duplicated   int
	refused            int // never acknowledged by NATS (not counted as lost)
	retried            int
	deadLetters        uint64
	pending            uint64
	redelivered        int
	note               string
}

// helpText runs BIN ARGS -h and returns what it printed.
func (h *harness) helpText(bin string, args ...string) string {
	ctx, cancel := context.WithTimeout(h.context(), 10*time.Second)
	defer cancel()
	out, _ := exec.CommandContext(ctx, filepath.Join(h.bin, bin), append(args, "-h")...).CombinedOutput()
	return string(out)
}

func (h *harness) feedbackAvailable() feedbackSupport {
	if h.opt.feedback <= 0 {
		return feedbackSupport{reason: "--feedback 0"}
	}
	if strings.Contains(h.helpText("producer", "feedback"), "unknown subcommand") {
		return feedbackSupport{reason: "bin/producer has no feedback command in this build"}
	}
	return feedbackSupport{ok: true}
}

// startFeedback publishes --feedback events with unique ids, one every
// feedbackEvery, through `producer feedback`, across the faults. A publish
// that fails is tried again with the same id (JetStream drops a repeat of
// an id it stored), so each id is acknowledged at most once.
func (h *harness) startFeedback(fb feedbackSupport) *feedbackRun {
	fr := &feedbackRun{stop: make(chan struct{}), done: make(chan struct{})}
	h.logf("publishing %d feedback events through producer feedback", h.opt.feedback)
	go func() {
		defer close(fr.done)
		for i := 0; i < h.opt.feedback; i++ {
			id := fmt.Sprintf("chaos-fb-%04d", i)
			ok := false
			for try := 0; try < feedbackPubTries && !ok; try++ {
				if try > 0 {
					select {
					case <-fr.stop:
						try = feedbackPubTries
						continue
					case <-h.context().Done():
						return
					case <-time.After(time.Second):
					}
				}
				_, err := h.producer(20*time.Second, "feedback", "--user", fmt.Sprintf("u%02d", i%20),
					"--item", fmt.Sprintf("i%02d", (i*7)%30), "--event", "click", "--id", id)
				fr.mu.Lock()
				if err == nil {
					ok = true
					fr.acked = append(fr.acked, id)
					if try > 0 {
						fr.retried++
					}
				} else if len(fr.firstErrs) < 3 {
					fr.firstErrs = append(fr.firstErrs, err.Error())
				}
				fr.mu.Unlock()
			}
			if !ok {
				fr.mu.Lock()
				fr.failed = append(fr.failed, id)
				fr.mu.Unlock()
			}
			select {
			case <-fr.stop:
				return
			case <-h.context().Done():
				return
			case <-time.After(feedbackEvery):
			}
		}
	}()
	return fr
}

// finishFeedback stops publishing, waits for the scheduler's consumer to
// have acknowledged everything in the stream, and counts ids in the stream.
// "Applied" is every stored event the consumer acknowledged and did not
// dead-letter: the consumer acknowledges only after the recommender took
// the event (or recognised its id as already taken).
func (h *harness) finishFeedback(fb feedbackSupport, fr *feedbackRun) *feedbackResult {
	if !fb.ok || fr == nil {
		return &feedbackResult{skipped: fb.reason}
	}
	close(fr.stop)
	select {
	case <-fr.done:
	case <-time.After(30 * time.Second):
	}
	fr.mu.Lock()
	res := &feedbackResult{ran: true, published: len(fr.acked), refused: len(fr.failed), retried: fr.retried}
	acked := append([]string(nil), fr.acked...)
	if len(fr.firstErrs) > 0 {
		res.note = "publish errors (retried): " + strings.Join(fr.firstErrs, " | ")
	}
	fr.mu.Unlock()

	nc, err := nats.Connect(h.natsURL, nats.Timeout(2*time.Second), nats.MaxReconnects(5))
	if err != nil {
		res.note = "nats: " + err.Error()
		res.lost = len(acked)
		return res
	}
	defer nc.Close()
	js, err := nc.JetStream(nats.MaxWait(5 * time.Second))
	if err != nil {
		res.note = "jetstream: " + err.Error()
		res.lost = len(acked)
		return res
	}
	// Wait (bounded) until the consumer has nothing pending or unacked.
	var ci *nats.ConsumerInfo
	_ = h.poll("feedback consumer caught up", feedbackDrainTime, 500*time.Millisecond, func() error {
		ci, err = js.ConsumerInfo(feedbackStream, feedbackDurable)
		if err != nil {
			return err
		}
		if ci.NumPending > 0 || ci.NumAckPending > 0 {
			return fmt.Errorf("%d pending, %d unacked", ci.NumPending, ci.NumAckPending)
		}
		return nil
	})
	if ci != nil {
		res.pending = ci.NumPending + uint64(ci.NumAckPending)
		res.redelivered = ci.NumRedelivered
	}
	if si, err := js.StreamInfo(deadLetterStream, &nats.StreamInfoRequest{SubjectsFilter: feedbackDeadLtr}); err == nil {
		for subj, n := range si.State.Subjects {
			if subj == feedbackDeadLtr {
				res.deadLetters = n
			}
		}
	}
	counts, err := readFeedbackIDs(js)
	if err != nil {
		res.note = strings.TrimPrefix(res.note+"; read stream: "+err.Error(), "; ")
	}
	for _, id := range acked {
		if counts[id] == 0 {
			res.lost++
		}
	}
	stored := 0
	for _, n := range counts {
		stored++
		if n > 1 {
			res.duplicated++
		}
	}
	res.applied = stored - int(res.deadLetters) - int(res.pending)
	if res.applied < 0 {
		res.applied = 0
	}
	// Events stored but not applied (dead-lettered or never acknowledged)
	// are lost as far as the recommender is concerned.
	res.lost += stored - res.applied
	return res
}

// readFeedbackIDs reads every message of the FEEDBACK stream with an
// ordered consumer and counts the event ids.
func readFeedbackIDs(js nats.JetStreamContext) (map[string]int, error) {
	si, err := js.StreamInfo(feedbackStream)
	if err != nil {
		return nil, err
	}
	want := si.State.Msgs
	sub, err := js.SubscribeSync("", nats.BindStream(feedbackStream), nats.OrderedConsumer(), nats.DeliverAll())
	if err != nil {
		return nil, err
	}
	defer sub.Unsubscribe()
	counts := map[string]int{}
	for got := uint64(0); got < want; got++ {
		m, err := sub.NextMsg(5 * time.Second)
		if err != nil {
			return counts, fmt.Errorf("after %d of %d messages: %w", got, want, err)
		}
		var ev struct {
			ID string `json:"id"`
		}
		if json.Unmarshal(m.Data, &ev) == nil {
			counts[ev.ID]++
		}
	}
	return counts, nil
}
