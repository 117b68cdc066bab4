package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tandem-ai/tandem/batch"
	"github.com/tandem-ai/tandem/limits"
	"github.com/tandem-ai/tandem/pipeline"
)

// Clients that declare a large body and trickle it at a byte a tick are
// answered 408 and their connections closed once the grace has passed,
// instead of holding a connection and a handler for as long as they like
// (issue 22: 50 clients at 1 byte/s held theirs for the whole 40 s tried).
// Clients that trickle their headers are cut off too.
func TestSlowBodiesAreCutOff(t *testing.T) {
	// The server is newHTTPServer on a real listener, with defaultReadPace's
	// times (limits.APIHeaderTime, limits.APIBodyGrace, limits.MinAPIBodyRate)
	// shortened; the unread rest of a body gets limits.APIBodyDrainTime.
	mux := http.NewServeMux()
	(&apiServer{logger: slog.New(slog.NewTextHandler(io.Discard, nil))}).routes(mux)
	rate := readPace{Header: 500 * time.Millisecond, Grace: 300 * time.Millisecond, Min: 1024}
	srv := newHTTPServer(mux, rate)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })

	const clients = 20
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- trickle(ln.Addr().String(), rate.Grace+5*time.Second)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}

	// Headers that never end: the connection is closed after rate.Header.
	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, "POST /v1/jobs HTTP/1.1\r\nHost: x\r\n"); err != nil {
		t.Fatal(err)
	}
	go func() {
		for range 100 {
			time.Sleep(50 * time.Millisecond)
			if _, err := io.WriteString(conn, "X: y\r\n"); err != nil {
				return
			}
		}
	}()
	_ = conn.SetReadDeadline(time.Now().Add(rate.Header + 3*time.Second))
	if _, err := io.ReadAll(conn); err != nil {
		t.Fatalf("headers trickled: the connection is still open after %v: %v", rate.Header+3*time.Second, err)
	}

	// A body that arrives at once is untouched by the pacing.
	resp, err := http.Post("http://"+ln.Addr().String()+"/v1/jobs", "application/json", strings.NewReader(`{"kind":""}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if b, _ := io.ReadAll(resp.Body); resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(b), "kind: required") {
		t.Fatalf("a prompt body: %d %s; want the handler's own 400", resp.StatusCode, b)
	}
}

// trickle sends POST /v1/jobs declaring 100 MB and then a byte every 50 ms,
// and wants a 408 naming the rate, and the connection closed, within
// within.
func trickle(addr string, within time.Duration, path ...string) error {
	p := "/v1/jobs"
	if len(path) > 0 {
		p = path[0]
	}
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	if _, err := fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000000\r\n\r\n{", p); err != nil {
		return err
	}
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
				if _, err := conn.Write([]byte(" ")); err != nil {
					return
				}
			}
		}
	}()
	_ = conn.SetReadDeadline(time.Now().Add(within))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return fmt.Errorf("no answer to a trickled body within %v: %w", within, err)
	}
	body, _ := io.ReadAll(resp.Body) // ends when the server closes the connection
	if resp.StatusCode != http.StatusRequestTimeout || !strings.Contains(string(body), "slower than 1024 bytes/s") || !resp.Close {
		return fmt.Errorf("trickled body: %d %s (close %v); want 408 naming the rate, and the connection closed", resp.StatusCode, body, resp.Close)
	}
	return nil
}

// Every route that takes a body answers one over its limit the same way:
// 413, code too_large, naming the limit (issue 22: some said 400 "request
// body too large").
func TestTooLargeBodiesAre413Everywhere(t *testing.T) {
	e := newGenEnv(t, "")
	const writer = "writer-secret-0123456789"
	srv, _ := serveTestServer(t, e, writer+" writer submit,read\n")
	for path, limit := range map[string]int{
		"/v1/jobs":                       maxRequestBody,
		"/v1/completions":                maxCompletionBody,
		"/v1/chat/completions":           maxCompletionBody,
		"/v1/sessions":                   maxCompletionBody,
		"/v1/feedback":                   pipeline.MaxEventBytes,
		"/v1/generations/gen-1/feedback": maxFeedbackBody,
		"/v1/finetunes":                  maxRequestBody,
		"/v1/models/m/promote":           limits.APIPromoteBodyBytes,
	} {
		body := `{"x":"` + strings.Repeat("a", limit) + `"}`
		req, err := http.NewRequest(http.MethodPost, srv.URL+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+writer)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var got apiError
		err = json.NewDecoder(resp.Body).Decode(&got)
		resp.Body.Close()
		want := fmt.Sprintf("body: over the limit of %d bytes", limit)
		if err != nil || resp.StatusCode != http.StatusRequestEntityTooLarge || got.Error.Code != "too_large" || got.Error.Message != want {
			t.Errorf("POST %s over its limit: %d %+v (%v); want 413 too_large %q", path, resp.StatusCode, got.Error, err, want)
		}
	}
}

// A batch input uploaded as the raw body and over batch.MaxInputBytes is
// 413 too, like every other body over its limit (it was 400).
func TestRawBatchUploadOverTheLimitIs413(t *testing.T) {
	api := newBatchEnv(t).startAPI(t)
	// One line of x's: the planner drops an overlong line without holding
	// it, so the 200 MB cost only their passage.
	body := io.LimitReader(xs{}, batch.MaxInputBytes+1)
	resp, err := http.Post(api.URL+"/v1/batches?model=builtin:tiny", "application/jsonl", body)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var got apiError
	if err := json.NewDecoder(resp.Body).Decode(&got); err != nil || resp.StatusCode != http.StatusRequestEntityTooLarge || got.Error.Code != "too_large" ||
		got.Error.Message != fmt.Sprintf("input: larger than %d bytes", batch.MaxInputBytes) {
		t.Fatalf("raw upload over the limit: %d %+v (%v); want 413 too_large", resp.StatusCode, got.Error, err)
	}
}

// xs reads as an endless run of 'x'.
type xs struct{}

func (xs) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = 'x'
	}
	return len(p), nil
}
