// Package redistest starts a private redis-server that a test can pause,
// to reproduce what a stalled Redis (SIGSTOP, an overloaded or swapping
// host) does to clients: their reads time out, and go-redis sends a
// command again (MaxRetries) that the resumed server then runs twice.
package redistest

import (
	"context"
	"net"
	"os/exec"
	"strconv"
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

// Server is a private redis-server child process.
type Server struct {
	Addr string
	cmd  *exec.Cmd
}

// Start runs redis-server (no persistence) on a free loopback port until
// the test ends. It skips the test when redis-server is not on PATH.
func Start(t testing.TB) *Server {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Skip("redis-server not on PATH (scripts/install-deps.sh installs it)")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	cmd := exec.Command(bin, "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--dir", t.TempDir(), "--logfile", "")
	if err := cmd.Start(); err != nil {
		t.Fatalf("start redis-server: %v", err)
	}
	s := &Server{Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), cmd: cmd}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGCONT)
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if c, err := net.DialTimeout("tcp", s.Addr, time.Second); err == nil {
			c.Close()
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("redis-server did not listen on %s", s.Addr)
		}
	}
}

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
