package main

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/tandem-ai/tandem/feedback"
	"github.com/tandem-ai/tandem/loop"
	"github.com/tandem-ai/tandem/pipeline"
)

// feedbackEvents returns every event on the FEEDBACK stream, in order.
func feedbackEvents(t *testing.T, recs *recsAPI) []feedback.Event {
	t.Helper()
	ctx := context.Background()
	st, err := recs.bus.JS.Stream(ctx, pipeline.StreamFeedback)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []feedback.Event
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		ev, err := feedback.Decode("", m.Data)
		if err != nil || !ev.OnGeneration() || m.Header.Get("Nats-Msg-Id") != ev.ID {
			t.Fatalf("message %d: %s (%v, id header %q)", seq, m.Data, err, m.Header.Get("Nats-Msg-Id"))
		}
		out = append(out, ev)
	}
	return out
}

// The chat's commands reach the FEEDBACK stream through the HTTP API: each
// with its action and the generation id of the reply it names, a repeated
// rating is not sent, a new rating is sent as a revision of the first, and
// a regenerated reply takes the old one's place in the session.
func TestChatFeedbackCommands(t *testing.T) {
	e := newGenEnv(t, "")
	e.startWorker(t)
	srv, recs := chatServer(t, e)
	stdin := strings.Join([]string{
		"/accept",      // no reply yet
		"Hello there",  // reply #1
		"/accept",      // on #1
		"Tell me more", // reply #2
		"/rate 2",      // on #2
		"/rate 2",      // the same rating again: not sent
		"/rate 5",      // a new rating of #2: its revision
		"/regenerate",  // regenerate feedback on #2, then a new #2
		"/reject",      // on the new #2
		"/edit #1 A better first reply.",
		"/rate #7 3",
		"/rate 9",
		"/regenerate #1", // not the last reply
		"/accept #1 now",
		"/bogus",
		"/help",
	}, "\n") + "\n"
	stdout, stderr, err := runChat(t, srv, stdin, "--token", chatToken, "--max-tokens", "4", "--user", "u3", "--template", "tpl-chat")
	if err != nil {
		t.Fatalf("chat: %v\n%s", err, stderr)
	}
	for _, want := range []string{
		"/accept: no reply yet",
		"reply #1: accept sent (accepted event on tpl-chat, id fb-accept-cmpl-",
		"reply #2 is already rated 2; not sent",
		"reply #2: rating 5 in place of 2 sent (rating event on tpl-chat, id fb-rate-cmpl-",
		"reply #2 regenerated",
		"/rate: no reply #7 (replies are #1 to #2)",
		`field "value"`,
		"/regenerate: only the last reply (#2) can be regenerated",
		`/accept: unexpected "now"`,
		`unknown command "/bogus"`,
		"/rate [#N] R",
	} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	}

	sessID, _, _ := strings.Cut(strings.TrimPrefix(stderr, "session "), "\n")
	sess, err := loop.NewSessionStore(e.rdb, loop.SessionOptions{}).Get(context.Background(), sessID)
	if err != nil {
		t.Fatal(err)
	}
	if len(sess.Turns) != 2 || sess.Turns[0].Prompt != "Hello there" || sess.Turns[1].Prompt != "Tell me more" {
		t.Fatalf("session turns %+v: want Hello there, then the regenerated Tell me more", sess.Turns)
	}
	first, second := sess.Turns[0].GenerationID, sess.Turns[1].GenerationID

	events := feedbackEvents(t, recs)
	var got []string
	for _, ev := range events {
		got = append(got, fmt.Sprintf("%s %s %g", ev.Action, ev.GenerationID, ev.Value))
		id := feedback.EventID(ev.GenerationID, ev.Action)
		if ev.Action == feedback.ActionRate {
			id = feedback.RevisionID(ev.GenerationID, ev.Revision)
		}
		if ev.User != "u3" || ev.Item != "tpl-chat" || ev.ItemKind != "template" || ev.ID != id {
			t.Errorf("event %+v: want u3's feedback on template tpl-chat", ev)
		}
	}
	if len(events) != 6 {
		t.Fatalf("%d events, want 6: %v", len(events), got)
	}
	replaced := events[3].GenerationID // the regenerate feedback names the old #2
	want := []string{
		"accept " + first + " 1",
		"rate " + replaced + " 2",
		"rate " + replaced + " 5",
		"regenerate " + replaced + " 1",
		"reject " + second + " 1",
		"edit " + first + " 1",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") || replaced == second || replaced == first {
		t.Fatalf("events:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if events[2].Revision != 1 || events[2].Previous != 2 {
		t.Fatalf("the second rating %+v: want revision 1, replacing 2", events[2])
	}
	if events[5].EditedText != "A better first reply." {
		t.Fatalf("edit event %+v", events[5])
	}

	// The new reply was asked without the one it replaces in its context,
	// and every reply streamed to stdout.
	store := loop.NewStore(e.rdb, loop.StoreOptions{})
	texts := map[string]string{}
	for _, id := range []string{first, replaced, second} {
		g, err := store.Get(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		texts[id] = g.Text
		if id == second && strings.Count(g.Prompt, "Tell me more") != 1 {
			t.Fatalf("the regenerated reply's prompt holds the replaced turn:\n%s", g.Prompt)
		}
	}
	if want := texts[first] + "\n" + texts[replaced] + "\n" + texts[second] + "\n"; stdout != want {
		t.Fatalf("stdout %q, want the three replies %q", stdout, want)
	}

	// A resumed session numbers the replies it holds; regenerating a turn
	// that is not the session's last is refused by the API.
	_, stderr, err = runChat(t, srv, "/rate #1 4\n", "--token", chatToken, "--session", sessID)
	if err != nil || !strings.Contains(stderr, "2 earlier replies") || !strings.Contains(stderr, "reply #1: rating 4 sent") {
		t.Fatalf("resumed chat: %v\n%s", err, stderr)
	}
	if events := feedbackEvents(t, recs); len(events) != 7 || events[6].Action != feedback.ActionRate || events[6].GenerationID != first || events[6].Value != 4 {
		t.Fatalf("after the resumed chat's rating: %+v", events[len(events)-1])
	}
	// Another chat on the session does not know of that rating; the API
	// does, and sends nothing for the same one.
	_, stderr, err = runChat(t, srv, "/rate #1 4\n", "--token", chatToken, "--session", sessID)
	if err != nil || !strings.Contains(stderr, "reply #1 is already rated 4; nothing sent") || len(feedbackEvents(t, recs)) != 7 {
		t.Fatalf("the same rating from another chat: %v\n%s", err, stderr)
	}
	code, msg := e.postJSON(t, "/v1/completions", fmt.Sprintf(`{"model":"builtin:tiny","prompt":"x","session":%q,"replaces":%q}`, sessID, first), nil)
	if code != http.StatusBadRequest || !strings.Contains(msg, "replaces") {
		t.Fatalf("replacing a turn that is not the last: %d %s", code, msg)
	}
	if code, msg := e.postJSON(t, "/v1/completions", `{"model":"builtin:tiny","prompt":"x","replaces":"cmpl-1"}`, nil); code != http.StatusBadRequest || !strings.Contains(msg, "replaces") {
		t.Fatalf("replaces without a session: %d %s", code, msg)
	}
}

// TestChatRegeneratesWithoutAUser: a chat started without --user cannot
// send feedback (there is nobody to credit it to), but /regenerate still
// asks for a new reply, and says why no feedback went out.
func TestChatRegeneratesWithoutAUser(t *testing.T) {
	e := newGenEnv(t, "")
	e.startWorker(t)
	srv, recs := chatServer(t, e)
	_, stderr, err := runChat(t, srv, "Hello there\n/regenerate\n/accept\n", "--token", chatToken, "--max-tokens", "4")
	if err != nil {
		t.Fatalf("chat: %v\n%s", err, stderr)
	}
	for _, want := range []string{"regenerate feedback not sent", "--user", "reply #1 regenerated"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	}
	// Other feedback still reports the refusal.
	if !strings.Contains(stderr, "feedback on reply #1: HTTP 400") {
		t.Errorf("/accept without a user: stderr lacks the refusal:\n%s", stderr)
	}
	sessID, _, _ := strings.Cut(strings.TrimPrefix(stderr, "session "), "\n")
	sess, err := loop.NewSessionStore(e.rdb, loop.SessionOptions{}).Get(context.Background(), sessID)
	if err != nil {
		t.Fatal(err)
	}
	if len(sess.Turns) != 1 || sess.Turns[0].Prompt != "Hello there" {
		t.Fatalf("session turns %+v: want the one regenerated turn", sess.Turns)
	}
	if events := feedbackEvents(t, recs); len(events) != 0 {
		t.Fatalf("%d feedback events from a chat without a user", len(events))
	}
}
