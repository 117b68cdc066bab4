package adversarial

import (
	"strings"
	"testing"
	"time"
)

// completion asks for a short completion as token for user and returns
// its id, which is its generation's id.
func (s *stack) completion(t *testing.T, token, user string) string {
	t.Helper()
	var c struct{ ID string }
	waitFor(t, 2*time.Minute, "a completion", func() error {
		r := s.call(t, "POST", "/v1/completions", token, map[string]any{"model": "builtin:tiny", "prompt": "Hello", "max_tokens": 4, "user": user})
		if r.Status != 200 {
			return errorf("%s", r)
		}
		r.json(t, &c)
		return nil
	})
	return c.ID
}

// forgedFeedback: feedback for anyone's generation (an edit of another
// user's reply, made-up generation ids) was accepted, replaced fine-tune
// samples and moved the loop metrics.
func forgedFeedback(t *testing.T, s *stack) {
	gen := s.completion(t, tokenAlice, "alice")
	metrics := func() string { return string(s.call(t, "GET", "/v1/loop/metrics?hours=1", tokenAdmin, nil).Body) }
	before := metrics()
	for _, tc := range []struct {
		name   string
		path   string
		body   map[string]any
		status int
		words  []string
	}{
		{"an edit of alice's reply, as bob", "/v1/feedback",
			map[string]any{"user": "bob", "event": "edited", "generation_id": gen, "action": "edit", "edited_text": "pwned"}, 403, []string{"user"}},
		{"an edit of alice's reply, naming alice", "/v1/feedback",
			map[string]any{"user": "alice", "event": "edited", "generation_id": gen, "action": "edit", "edited_text": "pwned"}, 403, []string{"user"}},
		{"an edit of alice's reply, naming bob and alice in another case", "/v1/feedback",
			map[string]any{"user": "bob", "USER": "alice", "event": "edited", "generation_id": gen, "action": "edit", "edited_text": "pwned"}, 400, []string{"USER"}},
		{"an accept of alice's reply on its route", "/v1/generations/" + gen + "/feedback",
			map[string]any{"action": "accept", "user": "alice"}, 403, []string{"user"}},
		{"a made-up generation", "/v1/feedback",
			map[string]any{"user": "bob", "event": "accepted", "generation_id": "cmpl-made-up", "action": "accept"}, 404, []string{"cmpl-made-up"}},
	} {
		t.Run(tc.name, func(t *testing.T) { refused(t, s.call(t, "POST", tc.path, tokenBob, tc.body), tc.status, tc.words...) })
	}
	if after := metrics(); after != before {
		t.Errorf("refused feedback moved the loop metrics:\nbefore %s\nafter  %s", before, after)
	}
	// Alice's own feedback is taken.
	if r := s.call(t, "POST", "/v1/generations/"+gen+"/feedback", tokenAlice, map[string]any{"action": "accept"}); r.Status != 202 {
		t.Fatalf("alice's accept of her own reply: %s", r)
	}
}

// feedbackValues: ratings of 99, 1e9 and -1e6, an oversized event and a
// reused id with other content were accepted, and one user's 1e9 put an
// item into every list.
func feedbackValues(t *testing.T, s *stack) {
	for _, v := range []float64{99, 1e9, -1e6} {
		r := s.call(t, "POST", "/v1/feedback", tokenBob, map[string]any{"user": "bob", "item": "tpl-x", "kind": "template", "event": "rating", "value": v})
		refused(t, r, 400, "value")
	}
	big := map[string]any{"user": "bob", "item": "tpl-x", "kind": "template", "event": "click", "value": 1, "note": strings.Repeat("n", 66000)}
	refused(t, s.call(t, "POST", "/v1/feedback", tokenBob, big), 413)
	first := map[string]any{"id": "bob-click-1", "user": "bob", "item": "tpl-a", "kind": "template", "event": "click", "value": 1}
	if r := s.call(t, "POST", "/v1/feedback", tokenBob, first); r.Status != 202 {
		t.Fatalf("a valid click: %s", r)
	}
	if r := s.call(t, "POST", "/v1/feedback", tokenBob, first); r.Status != 202 {
		t.Fatalf("the same click again (idempotent): %s", r)
	}
	other := map[string]any{"id": "bob-click-1", "user": "bob", "item": "tpl-b", "kind": "template", "event": "click", "value": 1}
	refused(t, s.call(t, "POST", "/v1/feedback", tokenBob, other), 409, "bob-click-1")
}
