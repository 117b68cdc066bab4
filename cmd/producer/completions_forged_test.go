package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tandem-ai/tandem/jobs"
	"github.com/tandem-ai/tandem/pipeline"
	"github.com/tandem-ai/tandem/tokenstream"
)

// forgedReply is what an attacker writes into another generation's stream:
// a start, one token and a done, as the worker would, without the key.
var forgedReply = []string{
	`{"seq":0,"type":"start"}`,
	`{"seq":1,"type":"token","text":"FORGED","token":1}`,
	`{"seq":2,"type":"done","finish_reason":"stop","model":"builtin:tiny","usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}`,
}

// TestCompletionRefusesForgedTokenStream: a process logged in as a worker
// (so allowed to publish tokens) writes a whole reply into someone else's
// generation. The client gets an error and never the forged text: 502
// bad_stream when the forgery comes first, an SSE error event when it comes
// after the real worker's first token; the real generation is then
// cancelled.
func TestCompletionRefusesForgedTokenStream(t *testing.T) {
	e := newGenEnv(t, "")
	e.listIdleWorker(t) // the job waits in the queue until a worker runs
	attacker := e.connect(t, pipeline.RoleWorker)
	forge := func(id string, msgs []string) {
		t.Helper()
		for _, m := range msgs {
			if err := attacker.NC.Publish(pipeline.GenTokensSubject(id), []byte(m)); err != nil {
				t.Fatal(err)
			}
		}
		if err := attacker.NC.Flush(); err != nil {
			t.Fatal(err)
		}
	}

	// 1. Nobody runs the job yet; the forged reply arrives first.
	type answer struct {
		code int
		body string
		err  error
	}
	res := make(chan answer, 1)
	go func() {
		resp, err := http.Post(e.srv.URL+"/v1/completions", "application/json", strings.NewReader(`{"model":"builtin:tiny","prompt":"hi"}`))
		if err != nil {
			res <- answer{err: err}
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		res <- answer{code: resp.StatusCode, body: string(b), err: err}
	}()
	id := pendingInteractive(t, e)
	forge(id, forgedReply)
	a := <-res
	if a.err != nil {
		t.Fatal(a.err)
	}
	if a.code != http.StatusBadGateway || !strings.Contains(a.body, `"bad_stream"`) || !strings.Contains(a.body, "failed authentication") || strings.Contains(a.body, "FORGED") {
		t.Fatalf("forged reply: %d %s; want 502 bad_stream naming the failed authentication, without the forged text", a.code, a.body)
	}
	if n := pendingCount(t, e); n != 0 {
		t.Fatalf("%d interactive jobs still queued; the refused request should delete its job", n)
	}

	// 2. A worker starts the generation and sends a token (sealed), then
	// the forgery comes.
	worker := e.connect(t, pipeline.RoleWorker)
	started := make(chan string, 1)
	cancelled := make(chan string, 1)
	reg := pipeline.NewRegistry()
	pipeline.Register[jobs.InteractiveArgs](reg, pipeline.WorkFunc[jobs.InteractiveArgs](func(ctx context.Context, job *pipeline.Job[jobs.InteractiveArgs]) error {
		id := job.Args.ID
		cancel := make(chan struct{}, 1)
		stop, err := worker.SubscribeCore(pipeline.GenCancelSubject(id), func(string, []byte) { cancel <- struct{}{} })
		if err != nil {
			return err
		}
		defer stop()
		// A start and a first token: the stream has begun when the
		// forgery comes.
		tok := int32(1)
		for _, m := range []tokenstream.Message{{Type: tokenstream.TypeStart}, {Seq: 1, Type: tokenstream.TypeToken, Text: "real", Token: &tok}} {
			if err := worker.PublishCoreSealed(pipeline.GenTokensSubject(id), job.Args.StreamKey, m); err != nil {
				return err
			}
		}
		if err := worker.NC.Flush(); err != nil {
			return err
		}
		started <- id
		select {
		case <-cancel: // as the real worker stops on a cancel
			cancelled <- id
		case <-ctx.Done():
		}
		return nil
	}), pipeline.KindOptions{})
	e.serve(t, reg)
	streamed := make(chan streamed, 1)
	go func() {
		streamed <- e.stream(t, context.Background(), `{"model":"builtin:tiny","prompt":"hi","stream":true}`, nil)
	}()
	id = receiveWithin(t, started, "the worker's start")
	forge(id, forgedReply[1:])
	s := <-streamed
	if s.err == nil || !strings.HasPrefix(s.err.Error(), "stream_failed: ") || !strings.Contains(s.err.Error(), "failed authentication") || strings.Contains(s.text(), "FORGED") {
		t.Fatalf("forged tokens after a real token: error %v, text %q; want a stream_failed error event naming the failed authentication and no forged text", s.err, s.text())
	}
	if got := receiveWithin(t, cancelled, "the cancel of the real generation"); got != id {
		t.Fatalf("cancel for %s, want %s", got, id)
	}
}

// pendingInteractive waits for one job on the interactive queue and
// returns its id (the completion id).
func pendingInteractive(t *testing.T, e *genEnv) string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		tasks, err := e.api.client.Inspector().ListPendingTasks(pipeline.QueueInteractive)
		if err == nil && len(tasks) == 1 {
			return tasks[0].ID
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("no interactive job was enqueued")
	return ""
}

func pendingCount(t *testing.T, e *genEnv) int {
	t.Helper()
	tasks, err := e.api.client.Inspector().ListPendingTasks(pipeline.QueueInteractive)
	if err != nil && !strings.Contains(err.Error(), "not found") {
		t.Fatal(err)
	}
	return len(tasks)
}

func receiveWithin[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(30 * time.Second):
		t.Fatal(fmt.Sprintf("timed out waiting for %s", what))
	}
	var zero T
	return zero
}
