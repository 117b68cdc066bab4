package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tandem-ai/tandem/auth"
)

// serveTestServer serves e's parts through serveMux, the routes of
// `producer serve`, with the token file tokens; it returns the server and
// the recs API (its bus is the one feedback goes out on).
func serveTestServer(t *testing.T, e *genEnv, tokens string) (*httptest.Server, *recsAPI) {
	t.Helper()
	file := filepath.Join(t.TempDir(), "tokens")
	if err := os.WriteFile(file, []byte(tokens), 0o600); err != nil {
		t.Fatal(err)
	}
	authn, err := auth.New(auth.Options{TokenFile: file, Logger: e.logger})
	if err != nil {
		t.Fatal(err)
	}
	recs, err := newRecsAPI(context.Background(), e.cfg, e.rdb, e.logger)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(recs.Close)
	redisOpt, err := e.cfg.RedisConnOpt()
	if err != nil {
		t.Fatal(err)
	}
	mon, closeMon := authn.AsynqmonUI(monitoringOptions(redisOpt))
	t.Cleanup(func() { _ = closeMon() })
	api := &apiServer{client: e.api.client, logger: e.logger, recs: recs, completions: e.api}
	srv := httptest.NewServer(serveMux(api, authn, mon, prometheus.NewRegistry(), e.cfg.DataDir, nil))
	t.Cleanup(srv.Close)
	return srv, recs
}

// TestServeGuardsTheLoopAndCompletionRoutes checks, on the routes
// `producer serve` builds, that the interactive and loop routes refuse a
// request without a token (401) and a read-only token's POST (403), and
// that a token with the right reaches the handler.
func TestServeGuardsTheLoopAndCompletionRoutes(t *testing.T) {
	e := newGenEnv(t, "")
	const reader, writer = "reader-secret-0123456789", "writer-secret-0123456789"
	// Both act as user guard, so the reader may read the session the
	// writer makes.
	srv, _ := serveTestServer(t, e, reader+" guard read\n"+writer+" guard submit,read\n")
	do := func(method, path, body, token string) int {
		t.Helper()
		code, _ := callAs(t, srv.URL, token, method, path, body)
		return code
	}
	for _, r := range []struct{ method, path, body string }{
		{http.MethodPost, "/v1/completions", `{}`},
		{http.MethodPost, "/v1/chat/completions", `{}`},
		{http.MethodPost, "/v1/sessions", `{"id":"sess-guard"}`},
		{http.MethodGet, "/v1/sessions/sess-guard", ``},
		{http.MethodPost, "/v1/generations/gen-none/feedback", `{"action":"accept"}`},
		{http.MethodGet, "/v1/generations/gen-none", ``},
		{http.MethodGet, "/v1/loop/metrics", ``},
	} {
		name := r.method + " " + r.path
		if code := do(r.method, r.path, r.body, ""); code != http.StatusUnauthorized {
			t.Errorf("%s without a token: %d, want 401", name, code)
		}
		if code := do(r.method, r.path, r.body, "not-a-token-0123456789"); code != http.StatusUnauthorized {
			t.Errorf("%s with an unknown token: %d, want 401", name, code)
		}
		readCode := do(r.method, r.path, r.body, reader)
		switch {
		case r.method == http.MethodPost && readCode != http.StatusForbidden:
			t.Errorf("%s with a read-only token: %d, want 403", name, readCode)
		case r.method == http.MethodGet && (readCode == http.StatusUnauthorized || readCode == http.StatusForbidden || readCode == http.StatusMethodNotAllowed):
			t.Errorf("%s with a read token: %d, want the handler's answer", name, readCode)
		}
		// The token with the right reaches the route's handler: neither
		// refused by the guard nor unrouted (404 comes from the handlers
		// only for an unknown id, so it is checked per route below).
		if code := do(r.method, r.path, r.body, writer); code == http.StatusUnauthorized || code == http.StatusForbidden || code == http.StatusMethodNotAllowed {
			t.Errorf("%s with a submit token: %d, want the handler's answer", name, code)
		}
	}
	// Routed, not merely unguarded: what the handlers say.
	if code := do(http.MethodGet, "/v1/sessions/sess-guard", "", reader); code != http.StatusOK {
		t.Errorf("GET the session made through the guard: %d, want 200", code)
	}
	if code := do(http.MethodGet, "/v1/loop/metrics", "", reader); code != http.StatusOK {
		t.Errorf("GET /v1/loop/metrics: %d, want 200", code)
	}
	if code := do(http.MethodPost, "/v1/completions", `{}`, writer); code != http.StatusBadRequest {
		t.Errorf("POST /v1/completions {}: %d, want the handler's 400", code)
	}
	for _, path := range []string{"/monitoring/", "/dashboard"} {
		if code := do(http.MethodGet, path, "", ""); code != http.StatusUnauthorized {
			t.Errorf("GET %s without a token: %d, want 401", path, code)
		}
	}
}
