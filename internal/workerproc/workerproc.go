// Package workerproc builds the worker binary (or any of the three) and
// runs it as a child process, for tests whose subject happens to
// processes: SIGKILL mid-job, SIGTERM with work in flight, a worker exiting
// by itself, a whole stack driven from outside, a command line.
package workerproc

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
)

// Build compiles cmd/worker into a temporary directory and returns its path.
func Build(t testing.TB) string { return BuildCmd(t, "worker") }

// BuildCmd compiles cmd/<name> (producer, worker or scheduler) into a
// temporary directory and returns its path.
func BuildCmd(t testing.TB, name string) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), name)
	out, err := exec.Command("go", "build", "-o", bin, "github.com/tandem-ai/tandem/cmd/"+name).CombinedOutput()
	if err != nil {
		t.Fatalf("go build ./cmd/%s: %v\n%s", name, err, out)
	}
	return bin
}

// Proc is a worker running as a child process.
type Proc struct {
	Cmd   *exec.Cmd
	Log   string // the file its stdout and stderr go to
	Admin string // the address its health route (and a worker's /metrics) answers on
}

// Start runs bin with env added to the environment and args after a free
// --admin-addr, logs into logDir, and returns once /healthz answers. The
// process is killed at the end of the test if it still runs.
func Start(t testing.TB, bin, logDir string, env []string, args ...string) *Proc {
	t.Helper()
	admin := FreeAddr(t)
	return StartServing(t, bin, logDir, env, admin, append([]string{"--admin-addr", admin}, args...)...)
}

// StartServing runs bin with args, like Start, and returns once
// http://<healthAddr>/healthz answers: for the producer's API, whose
// health route is on --addr, and for processes given their address in args.
func StartServing(t testing.TB, bin, logDir string, env []string, healthAddr string, args ...string) *Proc {
	t.Helper()
	admin := healthAddr
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	logPath := filepath.Join(logDir, fmt.Sprintf("%s-%d.log", filepath.Base(bin), time.Now().UnixNano()))
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
		logf.Close()
	})
	// A healthy start takes a second or two; the deadline is for a machine
	// loaded with builds and other tests, so only a worker that never comes
	// up fails here.
	deadline := time.Now().Add(startDeadline)
	for time.Now().Before(deadline) {
		if resp, err := http.Get("http://" + admin + "/healthz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return &Proc{Cmd: cmd, Log: logPath, Admin: admin}
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s did not become healthy; log in %s:\n%s", filepath.Base(bin), logPath, (&Proc{Log: logPath}).LogText())
	return nil
}

// startDeadline bounds how long Start waits for /healthz.
const startDeadline = 2 * time.Minute

// LogText is the end of the process's log (its last 16 KiB), for failure
// messages.
func (p *Proc) LogText() string {
	b, err := os.ReadFile(p.Log)
	if err != nil {
		return fmt.Sprintf("(log %s: %v)", p.Log, err)
	}
	const tail = 16 << 10
	if len(b) > tail {
		b = b[len(b)-tail:]
	}
	return string(b)
}

// FreeAddr returns a loopback address nothing listens on right now.
func FreeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// CommandLine is one command line of a binary and what it must do: print
// its usage (Usage, a piece of it) on stderr and exit with Code: 0 for help
// asked for, 2 for a refused line, 1 for a failure; Err is in the last line.
type CommandLine struct {
	Args       []string
	Code       int
	Usage, Err string
}

// CheckCommandLines runs bin once per line, in an empty directory, with a
// Redis and addresses that nothing answers on: a line that started a server
// instead of answering fails or runs until the start deadline kills it.
func CheckCommandLines(t *testing.T, bin string, lines []CommandLine) {
	for _, c := range lines {
		t.Run(strings.Join(append([]string{filepath.Base(bin)}, c.Args...), " "), func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), startDeadline)
			defer cancel()
			cmd := exec.CommandContext(ctx, bin, c.Args...)
			cmd.Dir = t.TempDir()
			cmd.Env = append(os.Environ(), "TANDEM_REDIS_URL=redis://127.0.0.1:1/0", "TANDEM_NATS_URL=", "TANDEM_DATA_DIR=state",
				"TANDEM_DATA_ROOT=.", "TANDEM_ADMIN_ADDR=127.0.0.1:0", "TANDEM_HTTP_ADDR=127.0.0.1:0")
			var stdout, stderr strings.Builder
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			if err := cmd.Run(); cmd.ProcessState == nil {
				t.Fatal(err)
			}
			code := cmd.ProcessState.ExitCode()
			lines := strings.Split(strings.TrimSpace(stderr.String()), "\n")
			switch last := lines[len(lines)-1]; {
			case code != c.Code:
				t.Errorf("exit status %d, want %d; stderr:\n%s", code, c.Code, stderr.String())
			case !strings.Contains(stderr.String(), c.Usage):
				t.Errorf("stderr lacks the usage %q:\n%s", c.Usage, stderr.String())
			case !strings.Contains(last, c.Err):
				t.Errorf("stderr ends %q, want the error %q", last, c.Err)
			case stdout.Len() > 0:
				t.Errorf("stdout: %s, want nothing", stdout.String())
			}
		})
	}
}

// CheckMetrics scrapes http://<addr>/metrics and fails t with each problem
// promlint finds in it: the linter `promtool check metrics` runs. It
// returns the text, for the caller to check which families it held.
func CheckMetrics(t testing.TB, addr string) string {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("/metrics: %d, %v", resp.StatusCode, err)
	}
	problems, err := promlint.New(bytes.NewReader(body)).Lint()
	if err != nil {
		t.Fatalf("/metrics does not parse: %v", err)
	}
	for _, p := range problems {
		t.Errorf("/metrics: %s: %s", p.Metric, p.Text)
	}
	return string(body)
}
