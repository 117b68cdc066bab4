package main

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tandem-ai/tandem/feedback"
	"github.com/tandem-ai/tandem/pipeline"
)

// intakeEnv is the loop environment (generation gen-1 of user u1, template
// tpl-a) behind a token file with a submit token, which acts as user u1,
// and an admin token.
type intakeEnv struct {
	*loopEnv
	submit, admin string
}

func newIntakeEnv(t *testing.T) *intakeEnv {
	t.Helper()
	submit, admin := strings.Repeat("s", 40), strings.Repeat("a", 40)
	file := filepath.Join(t.TempDir(), "tokens")
	if err := os.WriteFile(file, []byte(submit+" u1 submit,read\n"+admin+" ops admin\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return &intakeEnv{loopEnv: newLoopEnv(t, file), submit: submit, admin: admin}
}

func (e *intakeEnv) postAs(t *testing.T, token, path, body string) (int, string) {
	t.Helper()
	return callAs(t, e.srv.URL, token, "POST", path, body)
}

// lastEvent is the last event stored on subject tandem.feedback.<typ>.
func (e *intakeEnv) lastEvent(t *testing.T, typ string) feedback.Event {
	t.Helper()
	return lastFeedbackEvent(t, e.recs, typ)
}

// lastFeedbackEvent is the last event stored on subject
// tandem.feedback.<typ> of recs's bus.
func lastFeedbackEvent(t *testing.T, recs *recsAPI, typ string) feedback.Event {
	t.Helper()
	ctx := context.Background()
	st, err := recs.bus.JS.Stream(ctx, pipeline.StreamFeedback)
	if err != nil {
		t.Fatal(err)
	}
	m, err := st.GetLastMsgForSubject(ctx, pipeline.FeedbackSubject(typ))
	if err != nil {
		t.Fatal(err)
	}
	var ev feedback.Event
	if err := json.Unmarshal(m.Data, &ev); err != nil {
		t.Fatal(err)
	}
	return ev
}

// TestFeedbackForgedOrOutOfRangeIsRefused (issue 22, findings 3 and 7): an
// ordinary submit token can no longer give feedback on a generation that
// does not exist or is another user's, nor send values off their scale;
// nothing refused reaches the bus.
func TestFeedbackForgedOrOutOfRangeIsRefused(t *testing.T) {
	e := newIntakeEnv(t)
	pad := func(prefix string, n int) string { // a click event of exactly n bytes
		return prefix + strings.Repeat("x", n-len(prefix)-2) + `"}`
	}
	for _, tc := range []struct {
		name, path, body string
		code             int
		want             string
	}{
		{"forged generation id", "/v1/feedback",
			`{"user":"u1","event":"accepted","generation_id":"gen-made-up","action":"accept","model":"evil","prompt":"p","completion":"c"}`,
			404, `{"error":{"code":"not_found","message":"generation not found: gen-made-up"}}`},
		{"another user's generation", "/v1/feedback",
			`{"user":"u2","item":"tpl-a","kind":"template","event":"accepted","generation_id":"gen-1","action":"accept"}`,
			403, `{"error":{"code":"forbidden","message":"another user: field \"user\": token u1 acts only as user \"u1\", not \"u2\" (acting for other users needs the impersonate right)"}}`},
		{"edit text on another user's generation", "/v1/feedback",
			`{"user":"u2","item":"tpl-a","kind":"template","event":"edited","generation_id":"gen-1","action":"edit","edited_text":"pwned","prompt":"x","completion":"y"}`,
			403, `{"error":{"code":"forbidden","message":"another user: field \"user\": token u1 acts only as user \"u1\", not \"u2\" (acting for other users needs the impersonate right)"}}`},
		{"edit text as another user on the generation route", "/v1/generations/gen-1/feedback",
			`{"action":"edit","edited_text":"pwned","user":"u2"}`,
			403, `{"error":{"code":"forbidden","message":"another user: field \"user\": token u1 acts only as user \"u1\", not \"u2\" (acting for other users needs the impersonate right)"}}`},
		{"rating 99", "/v1/feedback", `{"user":"u1","item":"i1","event":"rating","value":99}`,
			400, `{"error":{"code":"invalid_event","message":"bad feedback: field \"value\": 99 is out of range for event \"rating\": want [1, 5]"}}`},
		{"rating 1e9", "/v1/feedback", `{"user":"u1","item":"i1","event":"rating","value":1e9}`,
			400, `{"error":{"code":"invalid_event","message":"bad feedback: field \"value\": 1e+09 is out of range for event \"rating\": want [1, 5]"}}`},
		{"rating -1e6", "/v1/feedback", `{"user":"u1","item":"i1","event":"rating","value":-1e6}`,
			400, `{"error":{"code":"invalid_event","message":"bad feedback: field \"value\": -1e+06 is out of range for event \"rating\": want [1, 5]"}}`},
		{"a click worth 1e9", "/v1/feedback", `{"user":"u1","item":"i1","event":"click","value":1e9}`,
			400, `{"error":{"code":"invalid_event","message":"bad feedback: field \"value\": 1e+09 is out of range for event \"click\": want [1, 100]"}}`},
		{"a negative rejection", "/v1/feedback", `{"user":"u1","item":"i1","event":"rejected","value":-1e6}`,
			400, `{"error":{"code":"invalid_event","message":"bad feedback: field \"value\": -1e+06 is out of range for event \"rejected\": want [1, 100]"}}`},
		{"a rating of a generation worth 99", "/v1/generations/gen-1/feedback", `{"action":"rate","value":99}`,
			400, `{"error":{"code":"invalid_feedback","message":"bad feedback: field \"value\": a rating must be an integer in [1, 5], got 99"}}`},
		{"a 66,000-byte event", "/v1/feedback", pad(`{"user":"u1","item":"i1","event":"click","pad":"`, 66000),
			413, `{"error":{"code":"too_large","message":"body: over the limit of 65536 bytes"}}`},
		{"event type disagreeing with the action", "/v1/feedback",
			`{"user":"u1","event":"click","generation_id":"gen-1","action":"accept"}`,
			400, `{"error":{"code":"invalid_event","message":"bad feedback: field \"event\": \"click\" does not go with action \"accept\", which is \"accepted\""}}`},
		{"item kind disagreeing with the generation's", "/v1/feedback",
			`{"user":"u1","item":"tpl-a","kind":"topic","event":"accepted","generation_id":"gen-1","action":"accept"}`,
			400, `{"error":{"code":"invalid_event","message":"bad feedback: field \"item\": generation gen-1's item is \"tpl-a\" (kind \"template\"), not \"tpl-a\" (kind \"topic\")"}}`},
		{"an id that is not the generation's", "/v1/feedback",
			`{"id":"mine-1","user":"u1","event":"accepted","generation_id":"gen-1","action":"accept"}`,
			400, `{"error":{"code":"invalid_event","message":"bad feedback: field \"id\": feedback \"accept\" on generation gen-1 has the id \"fb-accept-gen-1\", not \"mine-1\""}}`},
	} {
		code, body := e.postAs(t, e.submit, tc.path, tc.body)
		if code != tc.code || !sameError(body, tc.want) {
			t.Errorf("%s: POST %s = %d %s\nwant %d %s", tc.name, tc.path, code, body, tc.code, tc.want)
		}
	}
	if n := e.streamMsgs(t); n != 0 {
		t.Fatalf("%d events published by refused requests", n)
	}

	// The texts, model and item are the record's whatever the event says.
	code, body := e.postAs(t, e.submit, "/v1/feedback",
		`{"user":"u1","event":"edited","generation_id":"gen-1","action":"edit","edited_text":"Hi!","prompt":"forged","completion":"forged","model":"evil","template":"evil"}`)
	if code != http.StatusAccepted || !strings.Contains(body, `"id":"fb-edit-gen-1"`) {
		t.Fatalf("own edit: %d %s", code, body)
	}
	if ev := e.lastEvent(t, "edited"); ev.User != "u1" || ev.Prompt != "Say hi" || ev.Completion != "hello there" || ev.Model != "builtin:tiny" ||
		ev.Template != "tpl-a" || ev.Item != "tpl-a" || ev.EditedText != "Hi!" {
		t.Fatalf("published %+v, want the record's texts, model and item", ev)
	}
	// An admin token may act for another user; the event is the
	// generation's user's.
	code, body = e.postAs(t, e.admin, "/v1/feedback", `{"user":"ops","event":"accepted","generation_id":"gen-1","action":"accept"}`)
	if code != http.StatusAccepted {
		t.Fatalf("admin for another user: %d %s", code, body)
	}
	if ev := e.lastEvent(t, "accepted"); ev.User != "u1" || ev.GenerationID != "gen-1" {
		t.Fatalf("admin's feedback published as %+v", ev)
	}
}

// TestFeedbackReusedIDIsAConflict (issue 22, finding 7): an event id names
// one content. The same content again is a no-op (202); other content
// under it is 409 naming the id, on either route, and is not published.
func TestFeedbackReusedIDIsAConflict(t *testing.T) {
	e := newIntakeEnv(t)
	post := func(path, body string) (int, string) { return e.postAs(t, e.submit, path, body) }
	if code, body := post("/v1/feedback", `{"id":"ev-1","user":"u1","item":"i1","event":"click"}`); code != http.StatusAccepted {
		t.Fatalf("first: %d %s", code, body)
	}
	if code, body := post("/v1/feedback", `{"id":"ev-1","user":"u1","item":"i1","event":"click","ts":1700000000}`); code != http.StatusAccepted {
		t.Fatalf("the same content again (restamped): %d %s", code, body)
	}
	code, body := post("/v1/feedback", `{"id":"ev-1","user":"u1","item":"i2","event":"click"}`)
	if want := `{"error":{"code":"conflict","message":"reused event id: event id \"ev-1\" was used before for other content; give new content a new id"}}`; code != http.StatusConflict || !sameError(body, want) {
		t.Fatalf("other content under ev-1: %d %s\nwant 409 %s", code, body, want)
	}
	if code, body := post("/v1/generations/gen-1/feedback", `{"action":"edit","edited_text":"Hi!"}`); code != http.StatusAccepted {
		t.Fatalf("edit: %d %s", code, body)
	}
	if code, body := post("/v1/generations/gen-1/feedback", `{"action":"edit","edited_text":"Hi!"}`); code != http.StatusAccepted {
		t.Fatalf("the same edit again: %d %s", code, body)
	}
	code, body = post("/v1/generations/gen-1/feedback", `{"action":"edit","edited_text":"Hello!"}`)
	if want := `{"error":{"code":"conflict","message":"reused event id: event id \"fb-edit-gen-1\" was used before for other content; give new content a new id"}}`; code != http.StatusConflict || !sameError(body, want) {
		t.Fatalf("another edit: %d %s\nwant 409 %s", code, body, want)
	}
	if n := e.streamMsgs(t); n != 2 {
		t.Fatalf("%d events stored, want 2 (the click and the first edit)", n)
	}
}
