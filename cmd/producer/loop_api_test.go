package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/tandem-ai/tandem/auth"
	"github.com/tandem-ai/tandem/feedback"
	"github.com/tandem-ai/tandem/loop"
	"github.com/tandem-ai/tandem/pipeline"
)

// loopEnv is Redis (the recs tests' DB), an embedded nats-server and the
// loop routes behind an authenticator.
type loopEnv struct {
	rdb      *redis.Client
	natsURL  string
	redisURL string
	recs     *recsAPI
	srv      *httptest.Server
	store    *loop.Store
}

func newLoopEnv(t *testing.T, tokenFile string) *loopEnv {
	t.Helper()
	ctx := context.Background()
	rdb, ns, recs := newRecsTestAPI(t)
	logger := recs.logger
	authn, err := auth.New(auth.Options{TokenFile: tokenFile, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	root, api := http.NewServeMux(), http.NewServeMux()
	root.Handle("/v1/", authn.Protect(auth.ByMethod, api))
	registerLoopRoutes(root, api, authn, prometheus.NewRegistry(), rdb, recs, logger)
	(&apiServer{logger: logger, recs: recs}).recsRoutes(api)
	srv := httptest.NewServer(root)
	t.Cleanup(srv.Close)
	e := &loopEnv{rdb: rdb, natsURL: ns.URL(), redisURL: fmt.Sprintf("redis://%s/%d", rdb.Options().Addr, recsTestRedisDB), recs: recs, srv: srv, store: loop.NewStore(rdb, loop.StoreOptions{})}
	g := loop.Generation{ID: "gen-1", User: "u1", Template: "tpl-a", Model: "builtin:tiny", Prompt: "Say hi", Text: "hello there", Source: "personalize"}
	if err := e.store.Save(ctx, g); err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *loopEnv) post(t *testing.T, path, body string) (int, string) {
	t.Helper()
	resp, err := http.Post(e.srv.URL+path, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func (e *loopEnv) streamMsgs(t *testing.T) uint64 {
	t.Helper()
	return feedbackStreamMsgs(t, e.recs)
}

// feedbackStreamMsgs is the number of events on the FEEDBACK stream of
// recs's bus.
func feedbackStreamMsgs(t *testing.T, recs *recsAPI) uint64 {
	t.Helper()
	st, err := recs.bus.JS.Stream(context.Background(), pipeline.StreamFeedback)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

func TestGenerationFeedbackRoute(t *testing.T) {
	e := newLoopEnv(t, "")
	ctx := context.Background()
	for body, want := range map[string]string{
		`{"action":"like"}`:                  `\"action\"`,
		`{"action":"rate"}`:                  `\"value\"`,
		`{"action":"rate","value":9}`:        `\"value\"`,
		`{"action":"edit"}`:                  `\"edited_text\"`,
		`{"action":"accept","extra":true}`:   `extra`,
		`{"action":"accept","value":"five"}`: `value`,
	} {
		if code, msg := e.post(t, "/v1/generations/gen-1/feedback", body); code != http.StatusBadRequest || !strings.Contains(msg, want) {
			t.Errorf("POST %s = %d %s, want 400 naming %s", body, code, msg, want)
		}
	}
	if code, msg := e.post(t, "/v1/generations/gen-nope/feedback", `{"action":"accept"}`); code != http.StatusNotFound {
		t.Errorf("unknown generation: %d %s", code, msg)
	}
	if n := e.streamMsgs(t); n != 0 {
		t.Fatalf("%d events published by refused requests", n)
	}
	code, msg := e.post(t, "/v1/generations/gen-1/feedback", `{"action":"edit","edited_text":"Hi there!"}`)
	var v feedbackView
	if err := json.Unmarshal([]byte(msg), &v); err != nil || code != http.StatusAccepted ||
		v.ID != "fb-edit-gen-1" || v.Event != "edited" || v.Item != "tpl-a" || v.Subject != "tandem.feedback.edited" {
		t.Fatalf("POST edit = %d %s", code, msg)
	}
	// The stored event carries what the recommender and the fine-tune
	// collector need; a resend is dropped by its id.
	if code, _ := e.post(t, "/v1/generations/gen-1/feedback", `{"action":"edit","edited_text":"Hi there!"}`); code != http.StatusAccepted {
		t.Fatalf("resend: %d", code)
	}
	if n := e.streamMsgs(t); n != 1 {
		t.Fatalf("%d events after a resend, want 1", n)
	}
	st, _ := e.recs.bus.JS.Stream(ctx, pipeline.StreamFeedback)
	m, err := st.GetLastMsgForSubject(ctx, "tandem.feedback.edited")
	if err != nil {
		t.Fatal(err)
	}
	ev, err := feedback.Decode("", m.Data)
	if err != nil || !ev.OnGeneration() || ev.User != "u1" || ev.Item != "tpl-a" || ev.ItemKind != "template" || ev.Completion != "hello there" ||
		ev.EditedText != "Hi there!" || ev.Prompt != "Say hi" || ev.Model != "builtin:tiny" || m.Header.Get("Nats-Msg-Id") != "fb-edit-gen-1" {
		t.Fatalf("stored %s (headers %v)", m.Data, m.Header)
	}

	// The metrics and the generation read back what the consumer counted.
	if _, err := loop.NewMetrics(e.rdb, loop.MetricsOptions{}).Record(ctx, ev, time.Now()); err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get(e.srv.URL + "/v1/loop/metrics?hours=2")
	if err != nil {
		t.Fatal(err)
	}
	var mv loop.MetricsView
	err = json.NewDecoder(resp.Body).Decode(&mv)
	resp.Body.Close()
	if err != nil || len(mv.Series) != 2 || mv.Total.All.Edit != 1 || *mv.Total.All.AcceptanceRate != 1 || mv.Total.Template["tpl-a"].Edit != 1 || mv.Series[1].All.Edit != 1 {
		t.Fatalf("GET /v1/loop/metrics: %+v %v", mv, err)
	}
	resp, err = http.Get(e.srv.URL + "/v1/generations/gen-1")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(b), `"edited":true`) || !strings.Contains(string(b), `"text":"hello there"`) {
		t.Fatalf("GET generation: %d %s", resp.StatusCode, b)
	}
	for path, want := range map[string]int{"/v1/loop/metrics?hours=0": 400, "/v1/generations/a.b": 400, "/v1/generations/none": 404} {
		resp, err := http.Get(e.srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("GET %s = %d, want %d", path, resp.StatusCode, want)
		}
	}
}

// TestGenerationFeedbackRerate: over the API a re-rating publishes a revision
// carrying the rating it replaces, the same rating again publishes
// nothing, and a resent revision is dropped by its id.
func TestGenerationFeedbackRerate(t *testing.T) {
	e := newLoopEnv(t, "")
	ctx := context.Background()
	rate := func(body string) feedbackView {
		t.Helper()
		code, msg := e.post(t, "/v1/generations/gen-1/feedback", body)
		var v feedbackView
		if err := json.Unmarshal([]byte(msg), &v); err != nil || code != http.StatusAccepted {
			t.Fatalf("POST %s = %d %s", body, code, msg)
		}
		return v
	}
	if v := rate(`{"action":"rate","value":2}`); v.ID != "fb-rate-gen-1" || v.Value != 2 || v.Revision != 0 || v.Unchanged {
		t.Fatalf("first rating: %+v", v)
	}
	if v := rate(`{"action":"rate","value":2}`); v.ID != "fb-rate-gen-1" || !v.Unchanged || e.streamMsgs(t) != 1 {
		t.Fatalf("the same rating: %+v, %d events; want unchanged and nothing published", v, e.streamMsgs(t))
	}
	v := rate(`{"action":"rate","value":5}`)
	if v.ID != "fb-rate-gen-1.r1" || v.Value != 5 || v.Previous != 2 || v.Revision != 1 || v.Unchanged || e.streamMsgs(t) != 2 {
		t.Fatalf("re-rating: %+v, %d events", v, e.streamMsgs(t))
	}
	st, _ := e.recs.bus.JS.Stream(ctx, pipeline.StreamFeedback)
	m, err := st.GetLastMsgForSubject(ctx, "tandem.feedback.rating")
	if err != nil {
		t.Fatal(err)
	}
	ev, err := feedback.Decode("", m.Data)
	if err != nil || !ev.OnGeneration() || ev.Value != 5 || ev.Previous != 2 || ev.Revision != 1 || ev.RatedAt.IsZero() || m.Header.Get("Nats-Msg-Id") != "fb-rate-gen-1.r1" {
		t.Fatalf("stored %s (headers %v)", m.Data, m.Header)
	}
	if err := publishFeedback(e.recs.bus)(ctx, ev); err != nil {
		t.Fatal(err)
	}
	if n := e.streamMsgs(t); n != 2 {
		t.Fatalf("%d events after resending the revision, want 2", n)
	}
}

func TestGenerationFeedbackCLI(t *testing.T) {
	e := newLoopEnv(t, "")
	cli := func(args ...string) (string, error) {
		var out, errOut bytes.Buffer
		err := run(context.Background(), append([]string{"feedback", "--redis-url", e.redisURL, "--nats-url", e.natsURL}, args...), &out, &errOut)
		return out.String(), err
	}
	out, err := cli("--generation", "gen-1", "--action", "rate", "--value", "4")
	var v feedbackView
	if err != nil || json.Unmarshal([]byte(out), &v) != nil || v.ID != "fb-rate-gen-1" || v.Event != "rating" {
		t.Fatalf("feedback --action rate: %s %v", out, err)
	}
	// Rating again with another value sends a revision; with the same
	// value, nothing.
	out, err = cli("--generation", "gen-1", "--action", "rate", "--value", "2")
	v = feedbackView{}
	if err != nil || json.Unmarshal([]byte(out), &v) != nil || v.ID != "fb-rate-gen-1.r1" || v.Revision != 1 || v.Previous != 4 || v.Value != 2 || v.Unchanged {
		t.Fatalf("feedback --action rate again: %s %v", out, err)
	}
	out, err = cli("--generation", "gen-1", "--action", "rate", "--value", "2")
	v = feedbackView{}
	if err != nil || json.Unmarshal([]byte(out), &v) != nil || v.ID != "fb-rate-gen-1.r1" || !v.Unchanged || e.streamMsgs(t) != 2 {
		t.Fatalf("feedback --action rate with the same value: %s %v, %d events", out, err, e.streamMsgs(t))
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--generation", "gen-1", "--action", "rate"}, `"value"`},
		{[]string{"--generation", "gen-1", "--action", "accept", "--user", "u2"}, "--user"},
		{[]string{"--generation", "gen-1", "--action", "edit"}, `"edited_text"`},
		{[]string{"--generation", "gen-404", "--action", "accept"}, "not found"},
		{[]string{"--action", "accept"}, "--generation"},
	} {
		if _, err := cli(tc.args...); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("feedback %v: %v, want an error naming %s", tc.args, err, tc.want)
		}
	}
	// The raw recommender form still works.
	if out, err := cli("--user", "u1", "--item", "i1", "--event", "regenerated"); err != nil || !strings.Contains(out, "tandem.feedback.regenerated") {
		t.Fatalf("raw event: %s %v", out, err)
	}
}

func TestDashboardBehindAuth(t *testing.T) {
	tok, own := strings.Repeat("r", 40), strings.Repeat("o", 40)
	file := filepath.Join(t.TempDir(), "tokens")
	if err := os.WriteFile(file, []byte(tok+" viewer read,impersonate\n"+own+" u1 read\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	e := newLoopEnv(t, file)
	get := func(path, password string) *http.Response {
		req, _ := http.NewRequest("GET", e.srv.URL+path, nil)
		if password != "" {
			req.SetBasicAuth("anyone", password)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	if r := get("/dashboard", ""); r.StatusCode != http.StatusUnauthorized || !strings.HasPrefix(r.Header.Get("WWW-Authenticate"), "Basic") {
		t.Fatalf("no token: %d %q", r.StatusCode, r.Header.Get("WWW-Authenticate"))
	}
	if r := get("/dashboard", tok); r.StatusCode != http.StatusOK || !strings.HasPrefix(r.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("read token: %d", r.StatusCode)
	}
	// The page lists every user's generations: a token bound to one user
	// (no impersonate right) may not see it.
	if r := get("/dashboard", own); r.StatusCode != http.StatusForbidden {
		t.Fatalf("read token of user u1: %d, want 403", r.StatusCode)
	}
	// A read token cannot give feedback: that needs submit.
	req, _ := http.NewRequest("POST", e.srv.URL+"/v1/generations/gen-1/feedback", strings.NewReader(`{"action":"accept"}`))
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("feedback with a read token: %d, want 403", resp.StatusCode)
	}
}
