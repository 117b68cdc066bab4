package adversarial

import (
	"bufio"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// peakRSS is a process's high-water mark of resident memory, in bytes.
func peakRSS(t *testing.T, pid int) int64 {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Skipf("no /proc: %v", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Skip("no VmHWM in /proc status")
	return 0
}

// templateBomb: a 504 KB request whose template prints a 500 KB field
// 1,200 times took the producer to 2.5 GB before it answered 400.
func templateBomb(t *testing.T, s *stack) {
	field := strings.Repeat("x", 500<<10)
	// printf builds its whole result before the output writer sees a byte.
	tmpl := `{{printf "` + strings.Repeat("%s", 1200) + `"` + strings.Repeat(" .f", 1200) + `}}`
	q := url.Values{"model": {"builtin:tiny"}, "template": {tmpl}, "format": {"csv"}}
	r := s.callType(t, "POST", "/v1/batches?"+q.Encode(), tokenBob, "text/csv", "custom_id,f\nr1,"+field+"\n")
	refused(t, r, 400, "exceeds")
	// The producer's whole peak, start-up and the other cases included,
	// stays far below what rendering 600 MB would take.
	if peak := peakRSS(t, s.procs["producer"].Cmd.Process.Pid); peak > 512<<20 {
		t.Fatalf("the producer peaked at %d MiB", peak>>20)
	}
}

// slowBodies: clients trickling a large declared body at a byte a second
// held their connections for as long as they liked.
func slowBodies(t *testing.T, s *stack) {
	host := strings.TrimPrefix(s.api, "http://")
	conn, err := net.Dial("tcp", host)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST /v1/jobs HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: 100000000\r\n\r\n{\"kind\":\"ping\",\"args\":{\"note\":\"", host, tokenBob)
	start := time.Now()
	// One byte a second until the server gives up on us; the bound is
	// generous, the point is that it ends.
	for time.Since(start) < 3*time.Minute {
		_ = conn.SetWriteDeadline(time.Now().Add(time.Second))
		if _, err := conn.Write([]byte("a")); err != nil {
			return
		}
		_ = conn.SetReadDeadline(time.Now().Add(time.Second))
		buf := make([]byte, 512)
		if n, err := conn.Read(buf); n > 0 || (err != nil && !isTimeout(err)) {
			t.Logf("after %s: %q %v", time.Since(start).Round(time.Second), buf[:n], err)
			return // answered (408/413) or closed
		}
	}
	t.Fatal("the server still reads a body trickled at a byte a second after 3 minutes")
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

// fifoInput: a FIFO named as an input held the request and a worker slot
// until someone opened it for writing.
func fifoInput(t *testing.T, s *stack) {
	fifo := filepath.Join(s.root, "pipe.jsonl")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Skipf("mkfifo: %v", err)
	}
	defer os.Remove(fifo)
	r := s.call(t, "POST", "/v1/jobs", tokenBob, map[string]any{"kind": "eval", "args": map[string]any{"model": "builtin:tiny", "input": "pipe.jsonl"}, "max_retry": 0})
	if r.Status == 400 {
		refused(t, r, 400, "input")
		return
	}
	if r.Status != 202 {
		t.Fatalf("want 400 or 202, got %s", r)
	}
	var v struct{ ID string }
	r.json(t, &v)
	// Refused by the worker before it opens the file: the job ends.
	waitJob(t, s, tokenBob, v.ID, "archived", time.Minute)
}

// utf8IDs: invalid UTF-8 in custom_id was replaced silently, so two
// different ids collided.
func utf8IDs(t *testing.T, s *stack) {
	in := "{\"custom_id\":\"a\xff\",\"method\":\"POST\",\"url\":\"/v1/completions\",\"body\":{\"prompt\":\"x\",\"max_tokens\":2}}\n" +
		"{\"custom_id\":\"a\xfe\",\"method\":\"POST\",\"url\":\"/v1/completions\",\"body\":{\"prompt\":\"y\",\"max_tokens\":2}}\n"
	r := s.callType(t, "POST", "/v1/batches?model=builtin:tiny", tokenBob, "application/jsonl", in)
	refused(t, r, 400, "custom_id", "UTF-8")
	if !strings.Contains(string(r.Body), `"line":1`) {
		t.Errorf("the answer does not name line 1: %s", r)
	}
}

// tooLarge: some routes answered 413 and others 400 for a body over the
// limit.
func tooLarge(t *testing.T, s *stack) {
	big := `{"x":"` + strings.Repeat("a", 70<<20) + `"}`
	for _, path := range []string{"/v1/jobs", "/v1/batches", "/v1/completions", "/v1/feedback", "/v1/sessions", "/v1/finetunes"} {
		r := s.call(t, "POST", path, tokenBob, big)
		if r.Status != 413 {
			t.Errorf("POST %s with a 70 MB body: want 413, got %s", path, r)
		}
	}
}

// serverPaths: error bodies carried server paths and addresses, and model
// lookups told a directory, a file and nothing apart.
func serverPaths(t *testing.T, s *stack) {
	if err := os.MkdirAll(filepath.Join(s.root, "somedir"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(s.root, "somefile"), "x")
	var answers []string
	for _, model := range []string{"somedir", "somefile", "nothing-here", s.root + "/somedir"} {
		r := s.call(t, "POST", "/v1/completions", tokenBob, map[string]any{"model": model, "prompt": "hi", "max_tokens": 2})
		if r.Status < 400 || r.Status >= 500 {
			t.Errorf("model %q: want a 4xx, got %s", model, r)
		}
		if !strings.Contains(model, s.dir) && strings.Contains(string(r.Body), s.dir) {
			t.Errorf("model %q: the answer shows a server path: %s", model, r)
		}
		answers = append(answers, strings.ReplaceAll(r.String(), model, "M"))
	}
	for _, a := range answers[1:] {
		if a != answers[0] {
			t.Errorf("model lookups answer differently:\n%s", strings.Join(answers, "\n"))
			break
		}
	}
	r := s.call(t, "POST", "/v1/batches", tokenBob, map[string]any{"model": "builtin:tiny", "input_path": "nope.jsonl"})
	if strings.Contains(string(r.Body), s.dir) {
		t.Errorf("input_path: the answer shows a server path: %s", r)
	}
}
