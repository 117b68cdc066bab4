package adversarial

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"
)

// stallMidBatch: Redis paused for 10 s (SIGSTOP) in the middle of a batch
// left it finalizing forever, a counted chunk's output deleted. Every row
// must come out once, and the batch must end.
func stallMidBatch(t *testing.T, s *stack) {
	const rows, chunk = 240, 4
	var in strings.Builder
	for i := range rows {
		fmt.Fprintf(&in, `{"custom_id":"s%d","method":"POST","url":"/v1/completions","body":{"prompt":"stall %d","max_tokens":16,"temperature":0}}`+"\n", i, i)
	}
	r := s.call(t, "POST", "/v1/batches", tokenAlice, map[string]any{"model": "builtin:tiny", "chunk_size": chunk, "input": in.String()})
	if r.Status != 200 {
		t.Fatalf("create batch: %s", r)
	}
	var b struct{ ID string }
	r.json(t, &b)
	waitFor(t, 2*time.Minute, "the batch under way", func() error {
		if v := s.batch(t, tokenAlice, b.ID); v.ChunksDone < 5 {
			return fmt.Errorf("%d chunks done", v.ChunksDone)
		}
		return nil
	})
	<-s.redis.Stall(t, 10*time.Second)
	s.waitBatch(t, tokenAlice, b.ID, "completed", 4*time.Minute)
	if v := s.batch(t, tokenAlice, b.ID); v.RequestCounts.Completed != rows || v.RequestCounts.Failed != 0 {
		t.Errorf("request_counts %+v, want all %d completed (a failed row here is one whose output was lost)", v.RequestCounts, rows)
	}
	out := s.call(t, "GET", "/v1/batches/"+b.ID+"/output", tokenAlice, nil)
	if out.Status != 200 {
		t.Fatalf("output: %s", out)
	}
	seen := map[string]int{}
	for _, line := range strings.Split(strings.TrimSpace(string(out.Body)), "\n") {
		var l struct {
			CustomID string `json:"custom_id"`
		}
		if err := json.Unmarshal([]byte(line), &l); err != nil {
			t.Fatalf("output line %q: %v", line, err)
		}
		seen[l.CustomID]++
	}
	for i := range rows {
		if n := seen[fmt.Sprintf("s%d", i)]; n != 1 {
			t.Errorf("row s%d is in the output %d times", i, n)
		}
	}
	if len(seen) != rows {
		t.Errorf("output has %d distinct rows, want %d", len(seen), rows)
	}
}
