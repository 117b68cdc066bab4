package adversarial

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tandem-ai/tandem/internal/redistest"
	"github.com/tandem-ai/tandem/internal/workerproc"
	"github.com/tandem-ai/tandem/pipeline"
)

// The API tokens of the stack: two ordinary clients and an operator.
const (
	tokenAlice = "alice-submit-token-0123456789abcdef"
	tokenBob   = "bob-submit-token-0123456789abcdef00"
	tokenAdmin = "admin-token-0123456789abcdef012345"
)

// stack is the three binaries on a private redis-server, started once for
// the whole suite. Cases that disrupt it (stalls, restarts) run last.
type stack struct {
	dir     string // everything of this stack, removed with the test
	root    string // TANDEM_DATA_ROOT: where job paths may point
	dataDir string // TANDEM_DATA_DIR: artifacts, registry, NATS store
	logs    string

	redis *redistest.Server

	natsURL string
	api     string // http://host:port of producer serve
	env     []string

	bins  map[string]string
	procs map[string]*workerproc.Proc
}

func startStack(t *testing.T) *stack {
	t.Helper()
	dir := t.TempDir()
	s := &stack{
		// The layout a user who sets nothing gets: the data dir (.tandem)
		// inside the data root (the working directory).
		dir: dir, root: filepath.Join(dir, "files"), dataDir: filepath.Join(dir, "files", ".tandem"), logs: filepath.Join(dir, "logs"),
		bins: map[string]string{}, procs: map[string]*workerproc.Proc{},
	}
	for _, d := range []string{s.root, s.dataDir, s.logs} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range []string{"scheduler", "worker", "producer"} {
		s.bins[name] = workerproc.BuildCmd(t, name)
	}
	// No persistence: a restart loses every key.
	s.redis = redistest.StartVolatile(t)

	tokens := filepath.Join(dir, "tokens")
	writeFile(t, tokens, fmt.Sprintf("%s alice submit,read\n%s bob submit,read\n%s ops admin\n", tokenAlice, tokenBob, tokenAdmin))
	natsAddr := workerproc.FreeAddr(t)
	s.natsURL = "nats://" + natsAddr
	s.env = []string{
		"TANDEM_REDIS_URL=redis://" + s.redis.Addr, "TANDEM_DATA_DIR=" + s.dataDir, "TANDEM_DATA_ROOT=" + s.root,
		"TANDEM_NATS_URL=" + s.natsURL, "TANDEM_POLL_INTERVAL=100ms",
		// The local store (with NATS the default is the object store): batch
		// outputs are files in the data dir, inside the data root, for job
		// paths to aim at.
		"TANDEM_ARTIFACT_STORE=local",
	}
	s.procs["scheduler"] = workerproc.Start(t, s.bins["scheduler"], s.logs, s.env, "--embedded-nats", natsAddr)
	// The embedded server admits its roles only, with the passwords the
	// scheduler wrote at start; each process logs in as its own.
	s.procs["worker"] = workerproc.Start(t, s.bins["worker"], s.logs, s.roleEnv("worker"), "--concurrency", "4")
	apiAddr := workerproc.FreeAddr(t)
	s.api = "http://" + apiAddr
	s.procs["producer"] = workerproc.StartServing(t, s.bins["producer"], s.logs, s.roleEnv("producer"), apiAddr,
		"serve", "--addr", apiAddr, "--api-tokens", tokens)
	return s
}

// roleEnv is the stack's environment with the NATS login of role.
func (s *stack) roleEnv(role string) []string {
	return append(slices.Clone(s.env), "TANDEM_NATS_USER="+role,
		"TANDEM_NATS_PASSWORD_FILE="+filepath.Join(pipeline.NATSCredentialsDir(s.dataDir), role))
}

// reply is an HTTP answer.
type reply struct {
	Status int
	Body   []byte
}

func (r reply) String() string {
	b := bytes.TrimSpace(r.Body)
	if len(b) > 400 {
		b = append(b[:400:400], "..."...)
	}
	return fmt.Sprintf("%d %s", r.Status, b)
}

// json decodes the body into v, failing the test when it is not JSON.
func (r reply) json(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal(r.Body, v); err != nil {
		t.Fatalf("body is not JSON: %v: %s", err, r.Body)
	}
}

// call sends body (a []byte, a string, or a value to encode as JSON) to
// the API with token.
func (s *stack) call(t *testing.T, method, path, token string, body any) reply {
	t.Helper()
	return s.callType(t, method, path, token, "application/json", body)
}

// callType is call with another Content-Type.
func (s *stack) callType(t *testing.T, method, path, token, ctype string, body any) reply {
	t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case []byte:
		rd = bytes.NewReader(b)
	case string:
		rd = strings.NewReader(b)
	default:
		enc, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(enc)
	}
	req, err := http.NewRequest(method, s.api+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if rd != nil {
		req.Header.Set("Content-Type", ctype)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return reply{resp.StatusCode, out}
}

// refused asserts a 4xx answer whose body names every one of words.
func refused(t *testing.T, r reply, status int, words ...string) {
	t.Helper()
	if r.Status != status {
		t.Fatalf("want %d, got %s", status, r)
	}
	for _, w := range words {
		if !strings.Contains(string(r.Body), w) {
			t.Errorf("answer does not name %q: %s", w, r)
		}
	}
}

func writeFile(t *testing.T, path, text string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}

// waitFor polls ok until it succeeds or the deadline passes. Deadlines are
// generous: they catch what never happens, not what is slow.
func waitFor(t *testing.T, within time.Duration, what string, ok func() error) {
	t.Helper()
	deadline := time.Now().Add(within)
	var err error
	for time.Now().Before(deadline) {
		if err = ok(); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s: not within %s: %v", what, within, err)
}

func errorf(format string, a ...any) error { return fmt.Errorf(format, a...) }
