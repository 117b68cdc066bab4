package auth

import (
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/hibiken/asynq"
	"github.com/hibiken/asynqmon"
)

// authTestRedisDB is this package's Redis database. The test only reads it
// (the requests that would write are refused before asynqmon sees them).
const authTestRedisDB = 11

// TestAsynqmonUIBehindAuth mounts the real asynqmon UI, backed by the test
// Redis, and checks who sees which instance.
func TestAsynqmonUIBehindAuth(t *testing.T) {
	addr := os.Getenv("TANDEM_TEST_REDIS_ADDR")
	if addr == "" {
		addr = "127.0.0.1:6379"
	}
	a := newTestAuth(t)
	ui, closeUI := a.AsynqmonUI(asynqmon.Options{RootPath: "/monitoring", RedisConnOpt: asynq.RedisClientOpt{Addr: addr, DB: authTestRedisDB}})
	defer func() {
		if err := closeUI(); err != nil {
			t.Error(err)
		}
	}()
	mux := http.NewServeMux()
	mux.Handle("/monitoring/", ui)
	srv := httptest.NewServer(mux)
	defer srv.Close()

	do := func(method, path, token string) (int, string) {
		t.Helper()
		req, err := http.NewRequest(method, srv.URL+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		if token != "" {
			req.SetBasicAuth("", token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}

	if code, _ := do("GET", "/monitoring/", ""); code != http.StatusUnauthorized {
		t.Errorf("no credentials: %d", code)
	}
	// The index page carries asynqmon's ReadOnly flag (JS-escaped).
	readOnlyFlag := regexp.MustCompile(`FLAG_READ_ONLY="[^"]*(true|false)"`)
	flag := func(body string) string {
		if m := readOnlyFlag.FindStringSubmatch(body); m != nil {
			return m[1]
		}
		return "missing"
	}
	if code, body := do("GET", "/monitoring/", readTok); code != 200 || flag(body) != "true" {
		t.Errorf("read token: %d, read-only flag %s, want true", code, flag(body))
	}
	if code, body := do("GET", "/monitoring/", adminTok); code != 200 || flag(body) != "false" {
		t.Errorf("admin token: %d, read-only flag %s, want false", code, flag(body))
	}
	if code, body := do("GET", "/monitoring/api/queues", readTok); code != 200 || !strings.Contains(body, "queues") {
		t.Errorf("read token, queue list: %d %s", code, body)
	}
	if code, _ := do("DELETE", "/monitoring/api/queues/tandem-auth-test-none", readTok); code != http.StatusForbidden {
		t.Errorf("read token deleting a queue: %d, want 403", code)
	}
	if code, _ := do("POST", "/monitoring/api/queues/tandem-auth-test-none:pause", submitTok); code != http.StatusForbidden {
		t.Errorf("submit token pausing a queue: %d, want 403", code)
	}
}
