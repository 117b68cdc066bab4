package pipeline

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/hibiken/asynq"
)

// Errors steer what asynq does with a failed job:
//
//   - Permanent(err): the input is bad and retrying cannot help. asynq archives
//     the task at once with err's message as its last error.
//   - any other error: transient. asynq retries after RetryBackoff's delay until
//     the kind's MaxRetry is spent, then archives.

// permanentError marks bad input. It unwraps to both the cause and
// asynq.SkipRetry, so errors.Is works for either and asynq archives the task
// without a retry, while Error() keeps the cause's message unchanged: that
// message is what an operator reads in asynqmon.
type permanentError struct{ err error }

func (e *permanentError) Error() string   { return e.err.Error() }
func (e *permanentError) Unwrap() []error { return []error{e.err, asynq.SkipRetry} }

// Permanent marks err as a permanent failure: the job is archived with err's
// message and never retried. Permanent(nil) is nil.
func Permanent(err error) error {
	if err == nil || IsPermanent(err) {
		return err
	}
	return &permanentError{err: err}
}

// IsPermanent reports whether err (or anything it wraps) is permanent, either
// through Permanent or by wrapping asynq.SkipRetry directly.
func IsPermanent(err error) bool {
	if err == nil {
		return false
	}
	var p *permanentError
	return errors.As(err, &p) || errors.Is(err, asynq.SkipRetry)
}

// FieldError names the argument field that failed validation. Job args'
// Validate methods return it (usually through InvalidField) so that the
// archived task's last error says which field to fix.
type FieldError struct {
	Field  string // JSON name of the field, dotted for nested fields
	Reason string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Reason }

// InvalidField returns a *FieldError for field with a formatted reason.
func InvalidField(field, format string, args ...any) error {
	return &FieldError{Field: field, Reason: fmt.Sprintf(format, args...)}
}

// PanicError is what a recovered panic becomes: Recover returns it from a
// handler and Registry.Exec from an in-process run. The stack is kept for the
// log line; Error() stays one line so it fits a task's last-error field.
type PanicError struct {
	Kind  string
	Value any
	Stack []byte
}

func (e *PanicError) Error() string { return fmt.Sprintf("panic in %s: %v", e.Kind, e.Value) }

// Unwrap exposes a panic value that is itself an error, so a handler that
// panics with Permanent(err) still gets archived instead of retried.
func (e *PanicError) Unwrap() error {
	if err, ok := e.Value.(error); ok {
		return err
	}
	return nil
}

// RetryBackoff returns an asynq.RetryDelayFunc with exponential backoff:
// the n-th retry (n from 0) waits base*2^n, capped at ceiling, of which the upper
// half is random. The jitter spreads the retries of jobs that failed together
// (a Redis blip, a GPU worker restart) so they do not return as one wave.
func RetryBackoff(base, ceiling time.Duration) asynq.RetryDelayFunc {
	if base <= 0 {
		base = time.Second
	}
	if ceiling < base {
		ceiling = base
	}
	return func(n int, _ error, _ *asynq.Task) time.Duration {
		d := base
		for i := 0; i < n; i++ {
			if d > ceiling/2 {
				d = ceiling
				break
			}
			d *= 2
		}
		if d > ceiling {
			d = ceiling
		}
		half := d / 2
		return half + rand.N(d-half+1)
	}
}
