package main

import (
	"net/http"
	"strings"
	"testing"
)

// TestServingChangesTakeTheAdminRight checks that a submit token may not
// replace what every user is served (the promoted model, the published
// recommendation lists), through POST /v1/jobs, POST /v1/finetunes or the
// promote route, while an admin token passes that check.
func TestServingChangesTakeTheAdminRight(t *testing.T) {
	e := newGenEnv(t, "")
	const submitter, admin = "submit-secret-0123456789", "admin-secret-01234567890"
	srv, _ := serveTestServer(t, e, submitter+" client submit,read\n"+admin+" ops admin\n")
	do := func(path, body, token string) (int, string) {
		t.Helper()
		return callAs(t, srv.URL, token, http.MethodPost, path, body)
	}
	for _, c := range []struct{ path, body, field string }{
		{"/v1/jobs", `{"kind":"recs-rebuild","args":{"interactions":"i.jsonl","publish":true}}`, "publish"},
		{"/v1/jobs", `{"kind":"finetune-feedback","args":{"model":"m"}}`, "finetune-feedback"},
		{"/v1/jobs", `{"kind":"finetune","args":{"model":"builtin:tiny","data":"d.txt","out":"o","register":"m","promote":true}}`, "promote"},
		{"/v1/finetunes", `{"model":"builtin:tiny","data":"d.txt","out":"o","register":"m","promote":true}`, "promote"},
		{"/v1/models/m/promote", `{"version":1}`, "promoting"},
	} {
		code, body := do(c.path, c.body, submitter)
		if code != http.StatusForbidden || !strings.Contains(body, c.field) || !strings.Contains(body, "admin") {
			t.Errorf("POST %s %s with a submit token: %d %s, want 403 naming %s and the admin right", c.path, c.body, code, body, c.field)
		}
		if code, body := do(c.path, c.body, admin); code == http.StatusForbidden || code == http.StatusBadRequest {
			t.Errorf("POST %s %s with an admin token: %d %s, want it past the check", c.path, c.body, code, body)
		}
	}
	// The same jobs that change nothing for others stay open to submit.
	if code, body := do("/v1/jobs", `{"kind":"recs-rebuild","args":{"interactions":"i.jsonl","out":"recs.jsonl"}}`, submitter); code != http.StatusAccepted {
		t.Errorf("a rebuild into a file with a submit token: %d %s, want 202", code, body)
	}
}
