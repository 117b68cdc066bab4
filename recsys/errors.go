package recsys

import (
	"errors"
	"fmt"
)

// ErrBadInput marks errors caused by the input rather than by the system:
// a job handler that sees errors.Is(err, ErrBadInput) should fail the job
// permanently instead of retrying it.
var ErrBadInput = errors.New("recsys: bad input")

// InputError reports one bad record: the line it came from (0 when the
// record did not come from a file, e.g. a feedback event), the field at
// fault and why.
type InputError struct {
	Line  int
	Field string
	Err   error
}

func (e *InputError) Error() string {
	switch {
	case e.Line > 0 && e.Field != "":
		return fmt.Sprintf("line %d: field %q: %v", e.Line, e.Field, e.Err)
	case e.Line > 0:
		return fmt.Sprintf("line %d: %v", e.Line, e.Err)
	case e.Field != "":
		return fmt.Sprintf("field %q: %v", e.Field, e.Err)
	}
	return e.Err.Error()
}

// Unwrap exposes the cause.
func (e *InputError) Unwrap() error { return e.Err }

// Is makes every InputError match ErrBadInput.
func (e *InputError) Is(target error) bool { return target == ErrBadInput }

func fieldErr(field, format string, args ...any) *InputError {
	return &InputError{Field: field, Err: fmt.Errorf(format, args...)}
}

// atLine stamps a line number on err when it is an InputError without one;
// other errors (a cancelled context, a failed write) pass through unchanged.
func atLine(err error, line int) error {
	var ie *InputError
	if errors.As(err, &ie) && ie.Line == 0 {
		cp := *ie
		cp.Line = line
		return &cp
	}
	return err
}
