package auth

import (
	"errors"
	"net/http"

	"github.com/hibiken/asynqmon"
)

// AsynqmonUI builds the asynqmon web UI behind a: a read-only instance
// (asynqmon's ReadOnly, which hides the UI's actions and refuses non-GET API
// calls) for read tokens, and a full one for admin tokens (see Monitoring).
// An open Authenticator builds only the full one. Close the returned
// function's instances when the server stops.
func (a *Authenticator) AsynqmonUI(opts asynqmon.Options) (h http.Handler, closeUI func() error) {
	opts.ReadOnly = false
	full := asynqmon.New(opts)
	if a.Open() {
		return a.Monitoring(full, full), full.Close
	}
	opts.ReadOnly = true
	ro := asynqmon.New(opts)
	return a.Monitoring(ro, full), func() error { return errors.Join(ro.Close(), full.Close()) }
}
