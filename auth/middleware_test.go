package auth

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// echo answers 200 with the principal's name and a tag naming the handler.
func echo(tag string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, _ := PrincipalFrom(r.Context())
		_, _ = io.WriteString(w, tag+":"+p.Name)
	})
}

type authCase struct {
	name, method, path, header string
	status                     int
	body, challenge, code      string // body: exact 200 body; challenge: WWW-Authenticate prefix; code: error code
}

func run(t *testing.T, h http.Handler, cases []authCase) {
	t.Helper()
	for _, c := range cases {
		req := httptest.NewRequest(c.method, c.path, nil)
		if c.header != "" {
			req.Header.Set("Authorization", c.header)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != c.status {
			t.Errorf("%s: status %d, want %d (%s)", c.name, rec.Code, c.status, rec.Body)
			continue
		}
		if c.status == http.StatusOK {
			if rec.Body.String() != c.body {
				t.Errorf("%s: body %q, want %q", c.name, rec.Body, c.body)
			}
			continue
		}
		var e apiError
		if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || e.Error.Code != c.code || e.Error.Message == "" {
			t.Errorf("%s: error body %q (err %v), want code %q", c.name, rec.Body, err, c.code)
		}
		if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
			t.Errorf("%s: Content-Type %q", c.name, ct)
		}
		got := rec.Header().Get("WWW-Authenticate")
		if c.status == http.StatusUnauthorized && !strings.HasPrefix(got, c.challenge) {
			t.Errorf("%s: WWW-Authenticate %q, want prefix %q", c.name, got, c.challenge)
		}
		if strings.Contains(rec.Body.String(), "0123456789") {
			t.Errorf("%s: response echoes a token: %s", c.name, rec.Body)
		}
	}
}

func newTestAuth(t *testing.T) *Authenticator {
	t.Helper()
	a, err := New(Options{TokenFile: testTokenFile(t), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestAPIRefusals(t *testing.T) {
	a := newTestAuth(t)
	h := a.Protect(ByMethod, echo("api"))
	bearer := func(tok string) string { return "Bearer " + tok }
	run(t, h, []authCase{
		{"no header", "GET", "/v1/queues", "", 401, "", `Bearer realm="tandem"`, "unauthorized"},
		{"unknown token", "GET", "/v1/queues", bearer("wrong-token-0123456789"), 401, "", `Bearer realm="tandem", error="invalid_token"`, "unauthorized"},
		{"digest as token", "GET", "/v1/queues", bearer(Digest(readTok)), 401, "", `Bearer realm="tandem", error="invalid_token"`, "unauthorized"},
		{"empty bearer", "GET", "/v1/queues", "Bearer ", 401, "", `Bearer realm="tandem", error="invalid_request"`, "unauthorized"},
		{"other scheme", "GET", "/v1/queues", "Token " + readTok, 401, "", `Bearer realm="tandem", error="invalid_request"`, "unauthorized"},
		{"no scheme", "GET", "/v1/queues", readTok, 401, "", `Bearer realm="tandem", error="invalid_request"`, "unauthorized"},
		{"oversized token", "GET", "/v1/queues", bearer(strings.Repeat("x", MaxTokenLen+1)), 401, "", `Bearer realm="tandem", error="invalid_request"`, "unauthorized"},
		{"read token submits", "POST", "/v1/jobs", bearer(readTok), 403, "", "", "forbidden"},
		{"read token cancels", "POST", "/v1/batches/b1/cancel", bearer(readTok), 403, "", "", "forbidden"},
		{"submit token reads", "GET", "/v1/jobs/x", bearer(submitTok), 403, "", "", "forbidden"},
		{"read token reads", "GET", "/v1/jobs/x", bearer(readTok), 200, "api:dashboard", "", ""},
		{"submit token submits", "POST", "/v1/jobs", bearer(submitTok), 200, "api:ci-bot", "", ""},
		{"admin reads", "GET", "/v1/queues", bearer(adminTok), 200, "api:ops@example.com", "", ""},
		{"admin submits", "POST", "/v1/batches", "bearer " + adminTok, 200, "api:ops@example.com", "", ""},
		{"basic with token as password", "GET", "/v1/queues", basic("x", readTok), 200, "api:dashboard", "", ""},
	})

	adminOnly := a.Require(RightAdmin, echo("admin"))
	run(t, adminOnly, []authCase{
		{"submit token on admin route", "POST", "/admin", bearer(submitTok), 403, "", "", "forbidden"},
		{"admin token on admin route", "POST", "/admin", bearer(adminTok), 200, "admin:ops@example.com", "", ""},
	})
}

func basic(user, pw string) string {
	req := httptest.NewRequest("GET", "/", nil)
	req.SetBasicAuth(user, pw)
	return req.Header.Get("Authorization")
}

func TestMonitoringReadOnlyUnlessAdmin(t *testing.T) {
	a := newTestAuth(t)
	h := a.Monitoring(echo("ro"), echo("full"))
	run(t, h, []authCase{
		{"browser without credentials", "GET", "/monitoring/", "", 401, "", `Basic realm="tandem"`, "unauthorized"},
		{"wrong password", "GET", "/monitoring/", basic("me", "wrong-token-0123456789"), 401, "", `Basic realm="tandem"`, "unauthorized"},
		{"submit-only token", "GET", "/monitoring/", basic("me", submitTok), 403, "", "", "forbidden"},
		{"read token views read-only UI", "GET", "/monitoring/api/queues", basic("me", readTok), 200, "ro:dashboard", "", ""},
		{"read token deletes", "DELETE", "/monitoring/api/queues/default", "Bearer " + readTok, 403, "", "", "forbidden"},
		{"read token pauses", "POST", "/monitoring/api/queues/default:pause", "Bearer " + readTok, 403, "", "", "forbidden"},
		{"submit token acts", "POST", "/monitoring/api/queues/default:pause", "Bearer " + submitTok, 403, "", "", "forbidden"},
		{"admin views full UI", "GET", "/monitoring/", basic("", adminTok), 200, "full:ops@example.com", "", ""},
		{"admin acts", "POST", "/monitoring/api/queues/default:pause", "Bearer " + adminTok, 200, "full:ops@example.com", "", ""},
	})
}

func TestOpenModeWarnsAndAllows(t *testing.T) {
	var logs bytes.Buffer
	a, err := New(Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if !a.Open() || !strings.Contains(logs.String(), "authentication is OFF") {
		t.Fatalf("open mode: Open=%v, log %q", a.Open(), logs.String())
	}
	run(t, a.Protect(ByMethod, echo("api")), []authCase{
		{"open: no header", "POST", "/v1/jobs", "", 200, "api:anonymous", "", ""},
		{"open: any header", "GET", "/v1/jobs/x", "Bearer whatever", 200, "api:anonymous", "", ""},
	})
	run(t, a.Monitoring(echo("ro"), echo("full")), []authCase{
		{"open: monitoring is full", "DELETE", "/monitoring/api/x", "", 200, "full:anonymous", "", ""},
	})

	if _, err := New(Options{RequireTokens: true}); !errors.Is(err, ErrNoTokenFile) {
		t.Fatalf("RequireTokens without a file: %v", err)
	}
	if _, err := New(Options{TokenFile: "/nonexistent/tokens"}); err == nil {
		t.Fatal("a missing token file must fail start-up, not run open")
	}
}

func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }
