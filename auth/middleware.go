package auth

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strings"

	"github.com/tandem-ai/tandem/internal/apierror"
)

// Options configure an Authenticator.
type Options struct {
	// TokenFile is the token file. "" makes the Authenticator open (every
	// request allowed), unless RequireTokens is set.
	TokenFile string
	// RequireTokens makes New fail when TokenFile is "", for deployments
	// that must never run open.
	RequireTokens bool
	// Realm names the protected space in WWW-Authenticate. Default "tandem".
	Realm string
	// Logger gets the open-mode warning and reload messages. Default
	// slog.Default().
	Logger *slog.Logger
}

// Authenticator checks requests against a Store, or allows everything when
// it has none (open mode).
type Authenticator struct {
	store  *Store // nil: open
	realm  string
	logger *slog.Logger
}

// ErrNoTokenFile is returned by New when RequireTokens is set and no token
// file is given.
var ErrNoTokenFile = errors.New("auth: no API token file given, and tokens are required")

// New loads the token file, or returns an open Authenticator (logging a
// warning) when there is none.
func New(opts Options) (*Authenticator, error) {
	a := &Authenticator{realm: opts.Realm, logger: opts.Logger}
	if a.realm == "" {
		a.realm = "tandem"
	}
	if a.logger == nil {
		a.logger = slog.Default()
	}
	if opts.TokenFile == "" {
		if opts.RequireTokens {
			return nil, ErrNoTokenFile
		}
		a.logger.Warn("API authentication is OFF: no token file given, every request is allowed with every right; set a token file before exposing this address")
		return a, nil
	}
	st, err := NewStore(opts.TokenFile)
	if err != nil {
		return nil, err
	}
	a.store = st
	return a, nil
}

// Open reports whether a allows every request.
func (a *Authenticator) Open() bool { return a.store == nil }

// Store returns the token store, nil when open. Use it for WatchSIGHUP.
func (a *Authenticator) Store() *Store { return a.store }

type principalKey struct{}

// PrincipalFrom returns the principal a request authenticated as.
func PrincipalFrom(ctx context.Context) (Principal, bool) {
	p, ok := ctx.Value(principalKey{}).(Principal)
	return p, ok
}

// anonymous is the principal of every request to an open Authenticator.
var anonymous = Principal{Name: "anonymous", Rights: AllRights}

// errMalformed means the request carried an Authorization header that is
// neither Bearer nor Basic.
var errMalformed = errors.New("malformed Authorization header; want: Bearer <token>")

// tokenOf extracts the presented token: a Bearer token, or the password of
// Basic authentication (browsers, for the monitoring UI).
func tokenOf(r *http.Request) (string, error) {
	h := r.Header.Get("Authorization")
	if h == "" {
		return "", nil
	}
	scheme, rest, ok := strings.Cut(h, " ")
	if !ok {
		return "", errMalformed
	}
	switch strings.ToLower(scheme) {
	case "bearer":
		tok := strings.TrimSpace(rest)
		if tok == "" || len(tok) > MaxTokenLen {
			return "", errMalformed
		}
		return tok, nil
	case "basic":
		_, pw, ok := r.BasicAuth()
		if !ok || pw == "" || len(pw) > MaxTokenLen {
			return "", errMalformed
		}
		return pw, nil
	}
	return "", errMalformed
}

// authenticate returns the request's principal, or writes a 401.
func (a *Authenticator) authenticate(w http.ResponseWriter, r *http.Request, basic bool) (Principal, bool) {
	if a.store == nil {
		return anonymous, true
	}
	tok, err := tokenOf(r)
	challenge := `Bearer realm="` + a.realm + `"`
	if basic {
		challenge = `Basic realm="` + a.realm + `", charset="UTF-8"`
	}
	switch {
	case err != nil:
		w.Header().Set("WWW-Authenticate", challenge+`, error="invalid_request"`)
		writeError(w, http.StatusUnauthorized, "unauthorized", err.Error())
		return Principal{}, false
	case tok == "":
		w.Header().Set("WWW-Authenticate", challenge)
		writeError(w, http.StatusUnauthorized, "unauthorized", "authentication required: send Authorization: Bearer <token>")
		return Principal{}, false
	}
	p, ok := a.store.Tokens().Lookup(tok)
	if !ok {
		w.Header().Set("WWW-Authenticate", challenge+`, error="invalid_token"`)
		writeError(w, http.StatusUnauthorized, "unauthorized", "unknown token")
		a.logger.Warn("api auth: unknown token", "remote", r.RemoteAddr, "method", r.Method, "path", r.URL.Path)
		return Principal{}, false
	}
	return p, true
}

func forbid(w http.ResponseWriter, p Principal, want Rights) {
	writeError(w, http.StatusForbidden, "forbidden", "token "+p.Name+" lacks the "+want.String()+" right")
}

// Require lets through requests whose token has every right of want, with
// the Principal in the request's context.
func (a *Authenticator) Require(want Rights, h http.Handler) http.Handler {
	return a.Protect(func(*http.Request) Rights { return want }, h)
}

// Policy picks the rights a request needs.
type Policy func(r *http.Request) Rights

// ByMethod is the API's policy: reads (GET, HEAD, OPTIONS) need read,
// everything else (creating and cancelling jobs and batches) needs submit.
func ByMethod(r *http.Request) Rights {
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
		return RightRead
	}
	return RightSubmit
}

// Protect guards h with the rights policy picks per request.
func (a *Authenticator) Protect(policy Policy, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, ok := a.authenticate(w, r, false)
		if !ok {
			return
		}
		if want := policy(r); !p.Rights.Has(want) {
			forbid(w, p, want)
			return
		}
		h.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), principalKey{}, p)))
	})
}

// Monitoring guards the monitoring UI: it needs read; admins get full, the
// others readOnly (asynqmon built with ReadOnly: true, which hides and
// refuses its actions). Whatever the handler, a request that is not a read
// (GET, HEAD) needs admin, so a read-only token cannot act even if the
// read-only handler had a gap. Challenges use Basic so browsers prompt (the
// token is the password; the user name is ignored).
func (a *Authenticator) Monitoring(readOnly, full http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, ok := a.authenticate(w, r, true)
		if !ok {
			return
		}
		isRead := r.Method == http.MethodGet || r.Method == http.MethodHead
		switch {
		case !p.Rights.Has(RightRead):
			forbid(w, p, RightRead)
			return
		case !isRead && !p.Rights.Has(RightAdmin):
			forbid(w, p, RightAdmin)
			return
		}
		h := readOnly
		if p.Rights.Has(RightAdmin) {
			h = full
		}
		h.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), principalKey{}, p)))
	})
}

// apiError is the API's error body (package apierror), in OpenAI's shape.
type apiError = apierror.Body

func writeError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Cache-Control", "no-store")
	apierror.Write(w, status, code, "", msg)
}
