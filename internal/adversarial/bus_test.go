package adversarial

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/nats-io/nats.go"

	"github.com/tandem-ai/tandem/pipeline"
)

// connectAs logs in to the stack's NATS as role ("" for no login).
func (s *stack) connectAs(t *testing.T, role string) (*nats.Conn, error) {
	t.Helper()
	opts := []nats.Option{nats.Timeout(5 * time.Second), nats.NoReconnect()}
	if role != "" {
		pw, err := os.ReadFile(filepath.Join(pipeline.NATSCredentialsDir(s.dataDir), role))
		if err != nil {
			t.Fatal(err)
		}
		opts = append(opts, nats.UserInfo(role, strings.TrimSpace(string(pw))), nats.CustomInboxPrefix("_INBOX_"+role))
	}
	nc, err := nats.Connect(s.natsURL, opts...)
	if err == nil {
		t.Cleanup(nc.Close)
	}
	return nc, err
}

// busRoles: any local process could read every streamed reply, inject
// one (a forged token and done became a client's whole answer), cancel
// generations and publish feedback around the API.
func busRoles(t *testing.T, s *stack) {
	if _, err := s.connectAs(t, ""); err == nil || !strings.Contains(strings.ToLower(err.Error()), "authorization") {
		t.Fatalf("a connection with no login: %v, want an authorization violation", err)
	}
	// Roles that may not read the token streams are told so.
	for _, role := range []string{"worker", "scheduler", "observer"} {
		nc, err := s.connectAs(t, role)
		if err != nil {
			t.Fatalf("login as %s: %v", role, err)
		}
		denied := make(chan error, 1)
		nc.SetErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			select {
			case denied <- err:
			default:
			}
		})
		if _, err := nc.SubscribeSync("tandem.gen.*.tokens"); err != nil {
			t.Fatal(err)
		}
		_ = nc.Flush()
		select {
		case err := <-denied:
			if !strings.Contains(strings.ToLower(err.Error()), "permissions violation") {
				t.Errorf("%s subscribing to the token streams: %v, want a permissions violation", role, err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("%s may subscribe to every token stream", role)
		}
	}

	// A forged stream, from a login that may publish tokens: the client
	// gets an error, never the forged text. The worker is paused so the
	// generation waits in its queue, where its id can be read.
	worker := s.procs["worker"].Cmd.Process
	if err := worker.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	defer worker.Signal(syscall.SIGCONT)
	got := make(chan reply, 1)
	go func() {
		got <- s.call(t, "POST", "/v1/completions", tokenBob, map[string]any{"model": "builtin:tiny", "prompt": "Hi", "max_tokens": 4})
	}()
	insp := asynq.NewInspector(asynq.RedisClientOpt{Addr: s.redis.Addr})
	defer insp.Close()
	var id string
	waitFor(t, time.Minute, "the completion queued", func() error {
		tasks, err := insp.ListPendingTasks("interactive")
		if err != nil || len(tasks) == 0 {
			return errorf("no pending interactive task (%v)", err)
		}
		id = tasks[0].ID
		return nil
	})
	nc, err := s.connectAs(t, "worker")
	if err != nil {
		t.Fatal(err)
	}
	subj := pipeline.GenTokensSubject(id)
	for _, msg := range []string{`{"seq":0,"type":"start"}`, `{"seq":1,"type":"token","text":"FORGED","token":1}`,
		`{"seq":2,"type":"done","text":"FORGED","finish_reason":"stop","model":"builtin:tiny"}`} {
		if err := nc.Publish(subj, []byte(msg)); err != nil {
			t.Fatal(err)
		}
	}
	_ = nc.FlushWithContext(context.Background())
	select {
	case r := <-got:
		if r.Status == 200 || strings.Contains(string(r.Body), "FORGED") {
			t.Fatalf("the forged stream reached the client: %s", r)
		}
		refused(t, r, 502, "bad_stream")
	case <-time.After(2 * time.Minute):
		t.Fatal("no answer to the completion")
	}
}
