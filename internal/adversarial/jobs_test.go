package adversarial

import (
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// runBatch creates a batch of n rows through the API as token and waits
// for it to end; it returns the batch's id.
func (s *stack) runBatch(t *testing.T, token string, n, chunk int, within time.Duration) string {
	t.Helper()
	var in strings.Builder
	for i := range n {
		fmt.Fprintf(&in, `{"custom_id":"r%d","method":"POST","url":"/v1/completions","body":{"prompt":"row %d says","max_tokens":8,"temperature":0}}`+"\n", i, i)
	}
	r := s.call(t, "POST", "/v1/batches", token, map[string]any{"model": "builtin:tiny", "chunk_size": chunk, "input": in.String()})
	var b struct{ ID string }
	if r.Status != 200 {
		t.Fatalf("create batch: %s", r)
	}
	r.json(t, &b)
	s.waitBatch(t, token, b.ID, "completed", within)
	return b.ID
}

// batchView is what GET /v1/batches/{id} shows.
type batchView struct {
	ID            string `json:"id"`
	Status        string `json:"status"`
	Chunks        int    `json:"chunks"`
	ChunksDone    int    `json:"chunks_done"`
	RequestCounts struct {
		Total, Completed, Failed int
	} `json:"request_counts"`
}

func (s *stack) batch(t *testing.T, token, id string) batchView {
	t.Helper()
	var b batchView
	r := s.call(t, "GET", "/v1/batches/"+id, token, nil)
	if r.Status != 200 {
		t.Fatalf("GET batch %s: %s", id, r)
	}
	r.json(t, &b)
	return b
}

func (s *stack) waitBatch(t *testing.T, token, id, status string, within time.Duration) {
	t.Helper()
	waitFor(t, within, "batch "+id+" "+status, func() error {
		if b := s.batch(t, token, id); b.Status != status {
			return fmt.Errorf("status %s, %d/%d chunks", b.Status, b.ChunksDone, b.Chunks)
		}
		return nil
	})
}

// jobPathsIntoDataDir: with the data dir inside the data root (the
// default), a job named another batch's output file (and ping its record)
// and the API then served the attacker's rows.
func jobPathsIntoDataDir(t *testing.T, s *stack) {
	id := s.runBatch(t, tokenAlice, 6, 3, 2*time.Minute)
	before := s.call(t, "GET", "/v1/batches/"+id+"/output", tokenAlice, nil)
	if before.Status != 200 || len(before.Body) == 0 {
		t.Fatalf("output of %s: %s", id, before)
	}
	// Where the artifact store keeps that output, found rather than assumed.
	var target string
	_ = filepath.WalkDir(s.dataDir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.Contains(p, id) && strings.HasSuffix(p, "output.jsonl") {
			target = p
		}
		return nil
	})
	if target == "" {
		t.Fatalf("no output.jsonl of %s under the data dir %s", id, s.dataDir)
	}
	rel, err := filepath.Rel(s.root, target)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(s.root, "evil.jsonl"), `{"custom_id":"x","method":"POST","url":"/v1/completions","body":{"prompt":"owned","max_tokens":2}}`+"\n")
	for _, tc := range []struct {
		kind, field string
		args        map[string]any
	}{
		{"generate", "output", map[string]any{"model": "builtin:tiny", "input": "evil.jsonl", "output": target}},
		{"generate", "output", map[string]any{"model": "builtin:tiny", "input": "evil.jsonl", "output": rel}},
		{"generate", "input", map[string]any{"model": "builtin:tiny", "input": rel, "output": "mine.jsonl"}},
		{"ping", "record", map[string]any{"record": target}},
		{"ping", "record", map[string]any{"record": rel}},
		{"eval", "input", map[string]any{"model": "builtin:tiny", "input": rel}},
	} {
		r := s.call(t, "POST", "/v1/jobs", tokenBob, map[string]any{"kind": tc.kind, "args": tc.args})
		refused(t, r, 400, tc.field)
		// An answer may echo the client's own absolute path, but shows no
		// other server path.
		if !strings.Contains(fmt.Sprint(tc.args), s.dir) && strings.Contains(string(r.Body), s.dir) {
			t.Errorf("the answer shows a server path: %s", r)
		}
	}
	after := s.call(t, "GET", "/v1/batches/"+id+"/output", tokenAlice, nil)
	if string(after.Body) != string(before.Body) {
		t.Fatalf("the batch's output changed:\nbefore %s\nafter  %s", before.Body, after.Body)
	}
}

// internalKinds: the pipeline's own kinds (a signed webhook among them)
// were accepted from any submit token.
func internalKinds(t *testing.T, s *stack) {
	var listed struct{ Kinds []string }
	s.call(t, "GET", "/v1/kinds", tokenBob, nil).json(t, &listed)
	for _, kind := range []string{"webhook", "generate:chunk", "generate:finalize", "generate:interactive",
		"recs:rebuild-fanout", "recs:rebuild-shard", "recs:rebuild-merge", "recs:user-update"} {
		if slices.Contains(listed.Kinds, kind) {
			t.Errorf("GET /v1/kinds lists the internal kind %s", kind)
		}
		r := s.call(t, "POST", "/v1/jobs", tokenBob, map[string]any{"kind": kind, "args": map[string]any{}})
		refused(t, r, 400, "kind")
	}
	for _, kind := range []string{"generate", "eval", "ping"} {
		if !slices.Contains(listed.Kinds, kind) {
			t.Errorf("GET /v1/kinds lacks the public kind %s: %v", kind, listed.Kinds)
		}
	}
}

// jobFields: unknown queues, out-of-range retries, odd task ids and
// trailing garbage were all taken.
func jobFields(t *testing.T, s *stack) {
	ping := json.RawMessage(`{"sleep_ms":1}`)
	for _, tc := range []struct {
		name, field string
		body        any
	}{
		{"queue with dots", "queue", map[string]any{"kind": "ping", "args": ping, "queue": "../../x"}},
		{"long queue", "queue", map[string]any{"kind": "ping", "args": ping, "queue": strings.Repeat("q", 200)}},
		{"unknown queue", "queue", map[string]any{"kind": "ping", "args": ping, "queue": "evilqueue"}},
		{"negative retries", "max_retry", map[string]any{"kind": "ping", "args": ping, "max_retry": -100}},
		{"huge retries", "max_retry", map[string]any{"kind": "ping", "args": ping, "max_retry": 2147483647999}},
		{"100 KB task id", "task_id", map[string]any{"kind": "ping", "args": ping, "task_id": strings.Repeat("t", 100<<10)}},
		{"NUL in task id", "task_id", map[string]any{"kind": "ping", "args": ping, "task_id": "a\x00b"}},
		{"trailing garbage", "", `{"kind":"ping","args":{"sleep_ms":1}} garbage`},
		{"two objects", "", `{"kind":"ping","args":{"sleep_ms":1}}{"kind":"ping"}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := s.call(t, "POST", "/v1/jobs", tokenBob, tc.body)
			if tc.field == "" {
				refused(t, r, 400)
			} else {
				refused(t, r, 400, tc.field)
			}
		})
	}
	// The fields within bounds still work.
	r := s.call(t, "POST", "/v1/jobs", tokenBob, map[string]any{"kind": "ping", "args": ping, "queue": "default", "max_retry": 2, "task_id": "bob-ping-1"})
	if r.Status != 202 {
		t.Fatalf("a valid job: %s", r)
	}
	waitJob(t, s, tokenBob, "bob-ping-1", "completed", time.Minute)
	_ = os.Remove(filepath.Join(s.root, "evil.jsonl"))
}

// waitJob polls GET /v1/jobs/{id} until the job shows state.
func waitJob(t *testing.T, s *stack, token, id, state string, within time.Duration) {
	t.Helper()
	waitFor(t, within, "job "+id+" "+state, func() error {
		r := s.call(t, "GET", "/v1/jobs/"+id, token, nil)
		var v struct{ State string }
		if r.Status != 200 {
			return fmt.Errorf("%s", r)
		}
		r.json(t, &v)
		if v.State != state {
			return fmt.Errorf("state %s", v.State)
		}
		return nil
	})
}
