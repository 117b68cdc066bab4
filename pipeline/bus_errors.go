package pipeline

import "errors"

// Errors of the NATS event bus. Callers test them with errors.Is.
var (
	// ErrBadSubject: a subject or id would be malformed or wider than meant.
	ErrBadSubject = errors.New("pipeline: bad NATS subject")
	// ErrBadMsgID: a Nats-Msg-Id is too long or holds control bytes.
	ErrBadMsgID = errors.New("pipeline: bad message id")
	// ErrEventTooLarge: an encoded event exceeds MaxEventBytes.
	ErrEventTooLarge = errors.New("pipeline: event too large")
	// ErrBusClosed: the Bus was closed.
	ErrBusClosed = errors.New("pipeline: bus closed")
	// ErrBadEvent marks a message no retry can fix (malformed, unknown kind).
	// A handler returns it through BadEvent; the message is dead-lettered at once.
	ErrBadEvent = errors.New("pipeline: bad event")
)

// badEventError carries the handler's reason and matches both ErrBadEvent and
// the reason under errors.Is / errors.As.
type badEventError struct{ reason error }

func (e *badEventError) Error() string   { return "bad event: " + e.reason.Error() }
func (e *badEventError) Unwrap() []error { return []error{ErrBadEvent, e.reason} }

// BadEvent wraps reason so that Consume dead-letters the message at once
// instead of retrying it. A nil reason still marks the event bad.
func BadEvent(reason error) error {
	if reason == nil {
		reason = errors.New("no reason given")
	}
	return &badEventError{reason: reason}
}

// IsBadEvent reports whether err (or anything it wraps) came from BadEvent.
func IsBadEvent(err error) bool { return errors.Is(err, ErrBadEvent) }
