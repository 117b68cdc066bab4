package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"

	"github.com/tandem-ai/tandem/auth"
)

// Tokens are bound to users (docs/SECURITY.md, Principals): a token acts
// as the user its name names, unless it has the impersonate right. These
// helpers apply that on the routes that take or show a user's things:
// completions, sessions, feedback, generation records and recommendations.

// principalOf is the request's principal. The API's token guard
// (auth.Authenticator.Protect, on every /v1 route) always sets one, the
// open guard the anonymous principal with every right; a request that
// passed no guard gets the zero Principal, which acts as nobody.
func principalOf(r *http.Request) auth.Principal {
	p, _ := auth.PrincipalFrom(r.Context())
	return p
}

// actAs is the user a request acts as when it names user (field is the
// field that names it): auth.Principal.ActAs. A refusal is answered 403
// naming the field, and ok is false.
func actAs(w http.ResponseWriter, r *http.Request, field, user string) (string, bool) {
	u, err := principalOf(r).ActAs(field, user)
	if err != nil {
		writeError(w, http.StatusForbidden, "forbidden", err.Error())
		return "", false
	}
	return u, true
}

// otherUsers is the error of a token that may not impersonate reaching
// what belongs to another user: what names the thing ("generation gen-1"),
// things says what the token may use ("generations").
func otherUsers(p auth.Principal, what, things string) error {
	return fmt.Errorf("%s is not user %q's; token %s may use only its own user's %s (other users' need the impersonate right)", what, p.Name, p.Name, things)
}

// mayActFor reports whether the request's token may act for any user
// (the impersonate right, which admin implies): its feedback may name a
// user other than the generation's.
func mayActFor(r *http.Request) bool {
	return principalOf(r).Rights.Has(auth.RightImpersonate)
}

// bindEventUser returns a feedback event's bytes with its "user" bound to
// the request's token (actAs): filled in when absent, kept when it is the
// token's own or the token may impersonate. Anything else, and a body
// that is not a JSON object, is answered (403, 400) and ok is false.
func bindEventUser(w http.ResponseWriter, r *http.Request, body []byte) ([]byte, bool) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(body, &fields); err != nil || fields == nil {
		writeError(w, http.StatusBadRequest, codeInvalidEvent, "body: want one JSON object")
		return nil, false
	}
	// encoding/json matches struct fields without regard to case, so the
	// event's decoders would take "USER" (or "User") for the user this
	// check never saw: only the exact spelling is accepted.
	for k := range fields {
		if k != "user" && strings.EqualFold(k, "user") {
			writeParamError(w, http.StatusBadRequest, codeInvalidEvent, k, fmt.Sprintf(`field %q: the field is spelt "user"`, k))
			return nil, false
		}
	}
	var named string
	if raw, ok := fields["user"]; ok {
		if err := json.Unmarshal(raw, &named); err != nil {
			writeParamError(w, http.StatusBadRequest, codeInvalidEvent, "user", `field "user": want a string`)
			return nil, false
		}
	}
	user, ok := actAs(w, r, "user", named)
	if !ok {
		return nil, false
	}
	if user == named {
		return body, true
	}
	fields["user"], _ = json.Marshal(user)
	b, err := json.Marshal(fields)
	if err != nil {
		writeError(w, http.StatusBadRequest, codeInvalidEvent, "body: "+err.Error())
		return nil, false
	}
	return b, true
}

// everyUsers guards h, a view of every user's things (the loop dashboard),
// with the impersonate right: a token bound to one user gets 403.
func everyUsers(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if p := principalOf(r); !p.Rights.Has(auth.RightImpersonate) {
			writeError(w, http.StatusForbidden, "forbidden", "token "+p.Name+" lacks the impersonate right: this page shows every user's generations")
			return
		}
		h.ServeHTTP(w, r)
	})
}
