package live

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/tandem-ai/tandem/internal/redistest"
	"github.com/tandem-ai/tandem/pipeline"
	"github.com/tandem-ai/tandem/recsys"
)

// TestFeedbackAfterRedisRestart restarts a Redis without persistence under
// a running feedback consumer and hands it events at once: several events
// of one user within one update window, the case where the consumer looks
// up the user's queued update task. None may fail (a failed event is
// redelivered after a back-off: the consumer slowed to a crawl).
func TestFeedbackAfterRedisRestart(t *testing.T) {
	rs := redistest.StartVolatile(t)
	e := newFeedbackEnvOn(t, recsys.SynthConfig{Users: 20, Items: 20, Interactions: 200, Groups: 2, Noise: 0.1, Seed: 5}, rs.Addr, 0)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	opts := e.options()
	// One window for the whole test, so a user's second event finds the
	// task its first one enqueued.
	opts.Window = 2 * time.Second
	opts.Config.ShutdownTimeout = time.Second
	c, stop, err := start(ctx, e.bus, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	n := 0
	handle := func(user string) error {
		n++
		body, _ := json.Marshal(recsys.Event{ID: fmt.Sprintf("ev-%d", n), User: user, Item: recsys.SynthItem(n % 20),
			Type: recsys.EventClick, Value: 1})
		return c.handle(ctx, pipeline.Delivery{Data: body, NumDelivered: 1, StreamSeq: uint64(n)})
	}
	// Before the restart: the update queue is published to.
	for _, u := range []string{"u1", "u1"} {
		if err := handle(u); err != nil {
			t.Fatalf("event of %s before the restart: %v", u, err)
		}
	}
	rs.Restart(t)
	for _, u := range []string{"u2", "u2", "u3", "u2", "u3"} {
		if err := handle(u); err != nil {
			t.Errorf("event %d (%s) after the restart: %v", n, u, err)
		}
	}
}
