package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/tandem-ai/tandem/generation"
	"github.com/tandem-ai/tandem/loop"
)

// The tokens of the user-binding tests: alice and bob act as themselves;
// backend may act for anyone (a service in front of many end users).
const (
	aliceToken   = "alice-secret-0123456789ab"
	bobToken     = "bob-secret-0123456789abcd"
	backendToken = "backend-secret-0123456789"
)

// userEnv is a producer (serveMux, with a token file) over real Redis, an
// embedded nats-server and an interactive worker, holding generation
// gen-alice of user alice.
type userEnv struct {
	*genEnv
	srv  string
	recs *recsAPI
}

func newUserEnv(t *testing.T) *userEnv {
	t.Helper()
	e := newGenEnv(t, "")
	e.startWorker(t)
	srv, recs := serveTestServer(t, e, aliceToken+" alice submit,read\n"+bobToken+" bob submit,read\n"+
		backendToken+" backend submit,read,impersonate\n")
	g := loop.Generation{ID: "gen-alice", User: "alice", Template: "tpl-a", Model: "builtin:tiny", Prompt: "Say hi", Text: "hello there", Source: "personalize"}
	if err := loop.NewStore(e.rdb, loop.StoreOptions{}).Save(context.Background(), g); err != nil {
		t.Fatal(err)
	}
	return &userEnv{genEnv: e, srv: srv.URL, recs: recs}
}

// callAs sends body (none when "") to base+path with token (none when "")
// and returns the status and the trimmed answer.
func callAs(t *testing.T, base, token, method, path, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, base+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(b))
}

// completionUser creates a completion as token with body and returns the
// user its generation record holds.
func completionUser(t *testing.T, e *genEnv, base, token, body string) string {
	t.Helper()
	code, msg := callAs(t, base, token, "POST", "/v1/completions", body)
	var out generation.CompletionResponse
	if code != http.StatusOK || json.Unmarshal([]byte(msg), &out) != nil {
		t.Fatalf("POST /v1/completions %s: %d %s", body, code, msg)
	}
	return waitRecord(t, e, out.ID).User
}

// createSession creates a session as token with body and returns it.
func createSession(t *testing.T, base, token, body string) loop.Session {
	t.Helper()
	code, msg := callAs(t, base, token, "POST", "/v1/sessions", body)
	var s loop.Session
	if code != http.StatusCreated || json.Unmarshal([]byte(msg), &s) != nil {
		t.Fatalf("POST /v1/sessions %s: %d %s", body, code, msg)
	}
	return s
}

// TestTokenActsOnlyAsItsUser (issue 22, finding 3): a token without the
// impersonate right acts as the user its name names. bob cannot give
// feedback on alice's generation, naming alice or not, nor send events,
// create completions or sessions as alice, nor read or continue what is
// hers; nothing refused reaches the bus. alice's own requests go through
// with her user filled in.
func TestTokenActsOnlyAsItsUser(t *testing.T) {
	e := newUserEnv(t)
	sess := createSession(t, e.srv, aliceToken, `{"instructions":"tone: casual"}`)
	if sess.User != "alice" {
		t.Fatalf("alice's session without a user: user %q, want alice", sess.User)
	}
	const actsOnly = `{"error":{"code":"forbidden","message":"another user: field \"user\": token bob acts only as user \"bob\", not \"alice\" (acting for other users needs the impersonate right)"}}`
	const notBobs = `{"error":{"code":"forbidden","message":"not the generation's user: field \"user\": generation gen-alice is not \"bob\"'s; only its own user may give feedback on it"}}`
	for _, tc := range []struct {
		name, method, path, body string
		want                     string
	}{
		{"edit naming alice", "POST", "/v1/generations/gen-alice/feedback", `{"action":"edit","edited_text":"pwned","user":"alice"}`, actsOnly},
		{"edit naming nobody", "POST", "/v1/generations/gen-alice/feedback", `{"action":"edit","edited_text":"pwned"}`, notBobs},
		{"event naming alice", "POST", "/v1/feedback", `{"user":"alice","event":"edited","generation_id":"gen-alice","action":"edit","edited_text":"pwned"}`, actsOnly},
		{"event naming nobody", "POST", "/v1/feedback", `{"event":"edited","generation_id":"gen-alice","action":"edit","edited_text":"pwned"}`, notBobs},
		{"a click as alice", "POST", "/v1/feedback", `{"user":"alice","item":"i1","event":"click"}`, actsOnly},
		{"an edit naming bob, and alice in another case", "POST", "/v1/feedback", `{"user":"bob","USER":"alice","event":"edited","generation_id":"gen-alice","action":"edit","edited_text":"pwned"}`,
			`{"error":{"code":"invalid_event","message":"field \"USER\": the field is spelt \"user\""}}`},
		{"a click naming alice as User", "POST", "/v1/feedback", `{"User":"alice","item":"i1","event":"click"}`,
			`{"error":{"code":"invalid_event","message":"field \"User\": the field is spelt \"user\""}}`},
		{"a completion as alice", "POST", "/v1/completions", `{"model":"builtin:tiny","prompt":"hi","max_tokens":2,"user":"alice"}`, actsOnly},
		{"a session as alice", "POST", "/v1/sessions", `{"user":"alice"}`, actsOnly},
		{"a completion in alice's session", "POST", "/v1/completions", `{"model":"builtin:tiny","prompt":"hi","max_tokens":2,"session":"` + sess.ID + `"}`,
			`{"error":{"code":"forbidden","message":"session: session ` + sess.ID + ` is not user \"bob\"'s; token bob may use only its own user's sessions (other users' need the impersonate right)"}}`},
		{"alice's session", "GET", "/v1/sessions/" + sess.ID, ``,
			`{"error":{"code":"forbidden","message":"session ` + sess.ID + ` is not user \"bob\"'s; token bob may use only its own user's sessions (other users' need the impersonate right)"}}`},
		{"alice's generation", "GET", "/v1/generations/gen-alice", ``,
			`{"error":{"code":"forbidden","message":"generation gen-alice is not user \"bob\"'s; token bob may use only its own user's generations (other users' need the impersonate right)"}}`},
		{"alice's recommendations", "GET", "/v1/users/alice/recommendations", ``,
			`{"error":{"code":"forbidden","message":"id: token bob reads only user \"bob\"'s recommendations, not \"alice\"'s (other users' need the impersonate right)"}}`},
	} {
		want := http.StatusForbidden
		if strings.Contains(tc.want, `"invalid_event"`) {
			want = http.StatusBadRequest
		}
		if code, body := callAs(t, e.srv, bobToken, tc.method, tc.path, tc.body); code != want || !sameError(body, tc.want) {
			t.Errorf("bob, %s: %s %s = %d %s\nwant %d %s", tc.name, tc.method, tc.path, code, body, want, tc.want)
		}
	}
	if n := feedbackStreamMsgs(t, e.recs); n != 0 {
		t.Fatalf("%d feedback events published by refused requests", n)
	}

	// alice's own: her user filled in where she names none.
	if code, body := callAs(t, e.srv, aliceToken, "POST", "/v1/generations/gen-alice/feedback", `{"action":"edit","edited_text":"Hi!"}`); code != http.StatusAccepted {
		t.Fatalf("alice's edit: %d %s", code, body)
	}
	if ev := lastFeedbackEvent(t, e.recs, "edited"); ev.User != "alice" || ev.EditedText != "Hi!" {
		t.Fatalf("alice's edit published as %+v", ev)
	}
	if code, body := callAs(t, e.srv, aliceToken, "POST", "/v1/feedback", `{"item":"i1","event":"click"}`); code != http.StatusAccepted {
		t.Fatalf("alice's click: %d %s", code, body)
	}
	if ev := lastFeedbackEvent(t, e.recs, "click"); ev.User != "alice" || ev.Item != "i1" {
		t.Fatalf("alice's click published as %+v", ev)
	}
	if code, body := callAs(t, e.srv, aliceToken, "GET", "/v1/generations/gen-alice", ``); code != http.StatusOK {
		t.Fatalf("alice reads her generation: %d %s", code, body)
	}
	if code, body := callAs(t, e.srv, aliceToken, "GET", "/v1/users/alice/recommendations", ``); code != http.StatusNotFound {
		t.Fatalf("alice reads her (empty) recommendations: %d %s, want the handler's 404", code, body)
	}
	if u := completionUser(t, e.genEnv, e.srv, aliceToken, `{"model":"builtin:tiny","prompt":"hi","max_tokens":2,"session":"`+sess.ID+`"}`); u != "alice" {
		t.Fatalf("alice's completion in her session recorded for %q", u)
	}
}

// TestImpersonateTokenActsForAnyUser: a token with the impersonate right
// (a backend serving many end users) names any user: it creates
// completions and sessions as alice, gives her feedback, and reads her
// generation and session.
func TestImpersonateTokenActsForAnyUser(t *testing.T) {
	e := newUserEnv(t)
	if u := completionUser(t, e.genEnv, e.srv, backendToken, `{"model":"builtin:tiny","prompt":"hi","max_tokens":2,"user":"alice"}`); u != "alice" {
		t.Fatalf("backend's completion for alice recorded for %q", u)
	}
	sess := createSession(t, e.srv, backendToken, `{"user":"alice"}`)
	if sess.User != "alice" {
		t.Fatalf("backend's session for alice: user %q", sess.User)
	}
	if code, body := callAs(t, e.srv, backendToken, "GET", "/v1/sessions/"+sess.ID, ``); code != http.StatusOK {
		t.Fatalf("backend reads alice's session: %d %s", code, body)
	}
	if code, body := callAs(t, e.srv, backendToken, "POST", "/v1/generations/gen-alice/feedback", `{"action":"rate","value":4,"user":"alice"}`); code != http.StatusAccepted {
		t.Fatalf("backend rates for alice: %d %s", code, body)
	}
	if ev := lastFeedbackEvent(t, e.recs, "rating"); ev.User != "alice" || ev.Value != 4 {
		t.Fatalf("backend's rating published as %+v", ev)
	}
	if code, body := callAs(t, e.srv, backendToken, "POST", "/v1/feedback", `{"user":"alice","item":"i1","event":"click"}`); code != http.StatusAccepted {
		t.Fatalf("backend's click for alice: %d %s", code, body)
	}
	if code, body := callAs(t, e.srv, backendToken, "GET", "/v1/generations/gen-alice", ``); code != http.StatusOK {
		t.Fatalf("backend reads alice's generation: %d %s", code, body)
	}
}

// TestOpenAPIActsForAnyUser: with no token file (the laptop default, `make
// demo`) every request is the anonymous principal with every right, so
// requests name whatever user they like, as before tokens named users.
func TestOpenAPIActsForAnyUser(t *testing.T) {
	e := newGenEnv(t, "")
	e.startWorker(t)
	if u := completionUser(t, e, e.srv.URL, "", `{"model":"builtin:tiny","prompt":"hi","max_tokens":2,"user":"alice"}`); u != "alice" {
		t.Fatalf("open completion for alice recorded for %q", u)
	}
	if u := completionUser(t, e, e.srv.URL, "", `{"model":"builtin:tiny","prompt":"hi","max_tokens":2}`); u != "" {
		t.Fatalf("open completion naming nobody recorded for %q, want no user", u)
	}
	sess := createSession(t, e.srv.URL, "", `{"user":"bob"}`)
	if code, body := callAs(t, e.srv.URL, "", "GET", "/v1/sessions/"+sess.ID, ``); code != http.StatusOK || sess.User != "bob" {
		t.Fatalf("open session of bob: %+v; GET %d %s", sess, code, body)
	}
}
