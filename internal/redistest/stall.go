package redistest

import (
	"context"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// PastReadTimeout is a stall that outlasts go-redis's default read timeout
// (5 s in v9.23), so that a command sent on a pooled connection just
// before it is sent again, while staying within the retries' reach, so
// that the call still gets an answer.
const PastReadTimeout = 7 * time.Second

// Stall pauses the server (SIGSTOP) and resumes it (SIGCONT) after d, in
// the background; the returned channel closes once it runs again.
func (s *Server) Stall(t testing.TB, d time.Duration) <-chan struct{} {
	t.Helper()
	if err := s.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	resumed := make(chan struct{})
	go func() {
		defer close(resumed)
		time.Sleep(d)
		_ = s.cmd.Process.Signal(syscall.SIGCONT)
	}()
	return resumed
}

// Client returns a go-redis client on the server with go-redis's default
// options, as production has them, closed when the test ends. It has
// answered a PING, so its pool holds a connection: a command sent on it
// into a stall is retried after the read timeout (a command that must
// first open a connection fails in the handshake instead).
func (s *Server) Client(t testing.TB) *redis.Client {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: s.Addr})
	t.Cleanup(func() { rdb.Close() })
	if err := rdb.Ping(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
	return rdb
}
