package adversarial

import (
	"fmt"
	"testing"
	"time"
)

// redisRestart: after Redis came back empty, a new job's status was 404
// although it ran, and the queues were empty, until the services
// restarted. They must see Redis again without a restart.
func redisRestart(t *testing.T, s *stack) {
	s.redis.Restart(t)
	var id string
	waitFor(t, time.Minute, "an enqueue after the restart", func() error {
		r := s.call(t, "POST", "/v1/jobs", tokenBob, map[string]any{"kind": "ping", "args": map[string]any{"sleep_ms": 1}})
		if r.Status != 202 {
			return fmt.Errorf("%s", r)
		}
		var v struct{ ID string }
		r.json(t, &v)
		id = v.ID
		return nil
	})
	waitJob(t, s, tokenBob, id, "completed", 2*time.Minute)
	var qs struct {
		Queues []struct{ Queue string }
	}
	r := s.call(t, "GET", "/v1/queues", tokenBob, nil)
	if r.Status != 200 {
		t.Fatalf("queues: %s", r)
	}
	r.json(t, &qs)
	found := false
	for _, q := range qs.Queues {
		found = found || q.Queue == "default"
	}
	if !found {
		t.Fatalf("GET /v1/queues after the restart lacks the default queue: %s", r)
	}
}
