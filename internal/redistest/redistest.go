// Package redistest runs a private redis-server for tests: on a free
// loopback port, in a temporary directory, stopped when the test ends. A
// test can restart it on the same port, to see what clients that stay up
// make of a Redis that lost its data, or pause it (SIGSTOP), to reproduce
// what a stalled Redis (an overloaded or swapping host) does to clients:
// their reads time out, and go-redis sends a command again (MaxRetries)
// that the resumed server then runs twice.
package redistest

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// startTimeout bounds how long a redis-server may take to listen.
const startTimeout = 10 * time.Second

// Server is a private redis-server process.
type Server struct {
	// Port is the port it listens on: the TLS port when started with tls.
	Port int
	// Addr is "127.0.0.1:Port".
	Addr string

	dir    string
	conf   string
	cmd    *exec.Cmd
	exited chan struct{}
}

// Start runs redis-server with the given extra config lines on a free
// loopback port; tls selects whether the port is the TLS one. The server is
// stopped in t.Cleanup. The test is skipped when redis-server is not on
// PATH (scripts/install-deps.sh installs it).
func Start(t testing.TB, tls bool, conf ...string) *Server {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Skip("redis-server not on PATH")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("find a free port: %v", err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	s := &Server{Port: port, Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), dir: t.TempDir()}
	lines := []string{"bind 127.0.0.1", "dir " + strconv.Quote(s.dir), "logfile redis.log", "daemonize no"}
	if tls {
		lines = append(lines, "port 0", "tls-port "+strconv.Itoa(port))
	} else {
		lines = append(lines, "port "+strconv.Itoa(port))
	}
	lines = append(lines, conf...)
	s.conf = filepath.Join(s.dir, "redis.conf")
	if err := os.WriteFile(s.conf, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s.start(t, bin)
	t.Cleanup(func() {
		_ = s.cmd.Process.Signal(syscall.SIGCONT) // a test that ends inside a stall
		s.stop(syscall.SIGTERM)
	})
	return s
}

// StartVolatile is Start without persistence (no RDB snapshots, no AOF):
// a restart loses every key, as a Redis run as a cache does.
func StartVolatile(t testing.TB) *Server {
	t.Helper()
	return Start(t, false, `save ""`, "appendonly no")
}

// Restart kills the server (SIGKILL, so nothing is saved on the way out)
// and starts it again on the same port with the same config. Without
// persistence the new server starts empty, with a new run_id.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	s.stop(syscall.SIGKILL)
	s.start(t, s.cmd.Path)
}

func (s *Server) start(t testing.TB, bin string) {
	t.Helper()
	cmd := exec.Command(bin, s.conf)
	cmd.Dir = s.dir
	if err := cmd.Start(); err != nil {
		t.Fatalf("start redis-server: %v", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	s.cmd, s.exited = cmd, exited
	deadline := time.Now().Add(startTimeout)
	for {
		select {
		case <-exited:
			log, _ := os.ReadFile(filepath.Join(s.dir, "redis.log"))
			t.Fatalf("redis-server exited at start:\n%s", log)
		default:
		}
		if c, err := net.DialTimeout("tcp", s.Addr, time.Second); err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("redis-server did not listen on %s", s.Addr)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stop sends sig and waits for the process; past startTimeout it kills it.
func (s *Server) stop(sig syscall.Signal) {
	_ = s.cmd.Process.Signal(sig)
	select {
	case <-s.exited:
	case <-time.After(startTimeout):
		_ = s.cmd.Process.Kill()
		<-s.exited
	}
}
