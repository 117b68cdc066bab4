package main

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/tandem-ai/tandem/pipeline"
	"github.com/tandem-ai/tandem/recsys"
)

// recsTestRedisDB is the feedback, recommendation and loop tests' own
// Redis database (cmd/scheduler's feedback tests flush DB 7 and may run at
// the same time).
const recsTestRedisDB = 10

// newRecsTestAPI flushes the tests' Redis database and starts an embedded
// nats-server with the recs API connected to both.
func newRecsTestAPI(t *testing.T) (*redis.Client, *pipeline.EmbeddedNATS, *recsAPI) {
	t.Helper()
	ctx := context.Background()
	addr := os.Getenv("TANDEM_TEST_REDIS_ADDR")
	if addr == "" {
		addr = "127.0.0.1:6379"
	}
	rdb := redis.NewClient(&redis.Options{Addr: addr, DB: recsTestRedisDB})
	if err := rdb.FlushDB(ctx).Err(); err != nil {
		t.Fatalf("Redis at %s (DB %d) is needed: %v", addr, recsTestRedisDB, err)
	}
	t.Cleanup(func() { _ = rdb.FlushDB(context.Background()).Err(); _ = rdb.Close() })
	ns, err := pipeline.StartEmbeddedNATS(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Shutdown)
	cfg := pipeline.DefaultConfig()
	cfg.NATSURL = ns.URL()
	recs, err := newRecsAPI(ctx, cfg, rdb, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(recs.Close)
	return rdb, ns, recs
}

func TestRecsRoutes(t *testing.T) {
	ctx := context.Background()
	rdb, _, recs := newRecsTestAPI(t)
	logger := recs.logger
	mux := http.NewServeMux()
	(&apiServer{logger: logger, recs: recs}).recsRoutes(mux)
	srv := httptest.NewServer(openGuard(t, mux))
	t.Cleanup(srv.Close)

	post := func(body string) (int, string) {
		resp, err := http.Post(srv.URL+"/v1/feedback", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	for body, field := range map[string]string{
		`{"user":"u1","item":"i1","event":"teleport"}`: `event`,
		`{"user":"u1","event":"click"}`:                `item`,
		`[1,2]`:                                        `JSON`,
	} {
		if code, msg := post(body); code != http.StatusBadRequest || !strings.Contains(msg, field) {
			t.Errorf("POST %s = %d %s, want 400 naming %s", body, code, msg, field)
		}
	}
	code, msg := post(`{"user":"u1","item":"i1","event":"click","prompt":"kept"}`)
	if code != http.StatusAccepted {
		t.Fatalf("POST good event = %d %s", code, msg)
	}
	var ack struct{ ID, Subject string }
	if err := json.Unmarshal([]byte(msg), &ack); err != nil || ack.ID == "" || ack.Subject != "tandem.feedback.click" {
		t.Fatalf("answer %s (%v)", msg, err)
	}
	// The stored message carries the generated id and the extra field.
	stream, err := recs.bus.JS.Stream(ctx, pipeline.StreamFeedback)
	if err != nil {
		t.Fatal(err)
	}
	m, err := stream.GetLastMsgForSubject(ctx, "tandem.feedback.click")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(m.Data), ack.ID) || !strings.Contains(string(m.Data), `"prompt":"kept"`) {
		t.Fatalf("stored %s", m.Data)
	}

	get := func(user string) (int, string) {
		resp, err := http.Get(srv.URL + "/v1/users/" + user + "/recommendations?n=1")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, msg := get("u1"); code != http.StatusNotFound {
		t.Fatalf("GET before any list = %d %s", code, msg)
	}
	if code, msg := get(strings.Repeat("u", maxRecsUserBytes+1)); code != http.StatusBadRequest || !strings.Contains(msg, "id:") {
		t.Fatalf("GET with a user id over the limit = %d %s; want 400 naming id", code, msg)
	}
	if _, err := recs.store.UpdateUser(ctx, "u1", []recsys.Scored{{Item: "i2", Score: 2}, {Item: "i3", Score: 1}}); err != nil {
		t.Fatal(err)
	}
	code, msg = get("u1")
	var v recsView
	if err := json.Unmarshal([]byte(msg), &v); err != nil || code != http.StatusOK || len(v.Items) != 1 || v.Items[0].Item != "i2" {
		t.Fatalf("GET = %d %s (%v)", code, msg, err)
	}

	// Without NATS, feedback is refused with a reason.
	noBus, err := newRecsAPI(ctx, pipeline.DefaultConfig(), rdb, logger)
	if err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	noBus.postFeedback(rec, httptest.NewRequest("POST", "/v1/feedback", strings.NewReader(`{}`)))
	if rec.Code != http.StatusServiceUnavailable || !strings.Contains(rec.Body.String(), "NATS") {
		t.Fatalf("no bus: %d %s", rec.Code, rec.Body.String())
	}
}
