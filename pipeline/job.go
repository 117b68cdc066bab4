package pipeline

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/hibiken/asynq"

	"github.com/tandem-ai/tandem/limits"
)

// MaxPayloadBytes bounds a job's JSON arguments. Jobs carry references
// (a batch ID, a chunk index, a dataset path), never bulk data: bulk data goes
// to the artifact store. The bound keeps a bad producer from filling Redis.
const MaxPayloadBytes = limits.PayloadBytes

// JobArgs is a job's typed arguments. Kind names the job kind; it is called on
// the zero value, must be constant for the type, and never changes once jobs
// of that kind exist (it is how queued work finds its handler).
type JobArgs interface {
	Kind() string
}

// Validator is optionally implemented by JobArgs. Validate is called before
// a job is enqueued and again before it runs, since a task may have been
// enqueued raw or by an older producer. Return InvalidField errors so the
// message names the field.
type Validator interface {
	Validate() error
}

// KindOptioner is optionally implemented by JobArgs to carry the kind's own
// defaults, so a producer that registers no workers still enqueues with the
// right queue, retry budget and timeout. Options given to Register win over
// these, and per-call asynq options win over both.
type KindOptioner interface {
	KindOptions() KindOptions
}

// Defaults for a zero KindOptions field.
const (
	DefaultMaxRetry = limits.DefaultJobRetries
	DefaultTimeout  = limits.DefaultJobTimeout
	// NoRetry as KindOptions.MaxRetry makes the first failure final.
	NoRetry = -1
)

// KindOptions are a kind's enqueue defaults.
type KindOptions struct {
	// Queue is where jobs of the kind go. Default QueueDefault.
	Queue string
	// MaxRetry is how many times a transient failure is retried before the
	// job is archived. 0 means DefaultMaxRetry; NoRetry means none.
	MaxRetry int
	// Timeout bounds one run; the handler's ctx is cancelled when it passes.
	// 0 means DefaultTimeout.
	Timeout time.Duration
}

// withDefaults fills zero fields.
func (o KindOptions) withDefaults() KindOptions {
	if o.Queue == "" {
		o.Queue = QueueDefault
	}
	switch {
	case o.MaxRetry == 0:
		o.MaxRetry = DefaultMaxRetry
	case o.MaxRetry < 0:
		o.MaxRetry = 0
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	return o
}

// merge returns o with the non-zero fields of over applied.
func (o KindOptions) merge(over KindOptions) KindOptions {
	if over.Queue != "" {
		o.Queue = over.Queue
	}
	if over.MaxRetry != 0 {
		o.MaxRetry = over.MaxRetry
	}
	if over.Timeout != 0 {
		o.Timeout = over.Timeout
	}
	return o
}

func (o KindOptions) validate() error {
	if o.Queue != "" {
		if err := ValidateQueueName(o.Queue); err != nil {
			return err
		}
	}
	if o.MaxRetry < NoRetry {
		return fmt.Errorf("MaxRetry %d: use NoRetry (-1) for no retries", o.MaxRetry)
	}
	if o.Timeout < 0 {
		return fmt.Errorf("negative Timeout %v", o.Timeout)
	}
	return nil
}

// asynqOptions turns filled-in options into asynq options.
func (o KindOptions) asynqOptions() []asynq.Option {
	return []asynq.Option{asynq.Queue(o.Queue), asynq.MaxRetry(o.MaxRetry), asynq.Timeout(o.Timeout)}
}

// Job is one run of a job: its typed arguments and where it stands.
type Job[T JobArgs] struct {
	ID       string
	Queue    string
	Retried  int // retries so far; 0 on the first run
	MaxRetry int
	Args     T
	// ResultWriter stores a small result beside the task (shown by asynqmon).
	// It is nil under Registry.Exec, which has no Redis.
	ResultWriter *asynq.ResultWriter
}

// Worker runs jobs of one kind. Work honours ctx: it is cancelled at the
// kind's timeout and when a stopping worker's shutdown timeout runs out.
type Worker[T JobArgs] interface {
	Work(ctx context.Context, job *Job[T]) error
}

// WorkFunc adapts a function to Worker.
type WorkFunc[T JobArgs] func(ctx context.Context, job *Job[T]) error

// Work calls f.
func (f WorkFunc[T]) Work(ctx context.Context, job *Job[T]) error { return f(ctx, job) }

// encodeArgs validates args and marshals them to a payload within
// MaxPayloadBytes.
func encodeArgs[T JobArgs](args T) (kind string, payload []byte, err error) {
	kind = args.Kind()
	if err := ValidateKind(kind); err != nil {
		return "", nil, fmt.Errorf("%T: %w", args, err)
	}
	if v, ok := any(args).(Validator); ok {
		if err := v.Validate(); err != nil {
			return "", nil, Permanent(fmt.Errorf("invalid %s args: %w", kind, err))
		}
	}
	payload, err = json.Marshal(args)
	if err != nil {
		return "", nil, fmt.Errorf("encode %s args: %w", kind, err)
	}
	if len(payload) > MaxPayloadBytes {
		return "", nil, Permanent(fmt.Errorf("%s args are %d bytes, over the limit of %d; pass large data by reference",
			kind, len(payload), MaxPayloadBytes))
	}
	return kind, payload, nil
}

// decodeArgs is the one way a payload becomes typed args, shared by the
// asynq handler, Exec and schedule checks. Every failure is permanent: a
// payload that does not decode today will not decode on retry.
func decodeArgs[T JobArgs](kind string, payload []byte) (T, error) {
	var args T
	if len(payload) > MaxPayloadBytes {
		return args, Permanent(fmt.Errorf("%s payload is %d bytes, over the limit of %d", kind, len(payload), MaxPayloadBytes))
	}
	dec := json.NewDecoder(bytes.NewReader(payload))
	// Unknown fields are refused rather than dropped: they mean a producer and
	// a worker disagree about the args, and silently ignoring a field (say a
	// misspelt "max_tokens") does the wrong work.
	dec.DisallowUnknownFields()
	if err := dec.Decode(&args); err != nil {
		return args, Permanent(fmt.Errorf("decode %s args: %w", kind, describeJSONError(err)))
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return args, Permanent(fmt.Errorf("decode %s args: data after the JSON object", kind))
	}
	if v, ok := any(args).(Validator); ok {
		if err := v.Validate(); err != nil {
			return args, Permanent(fmt.Errorf("invalid %s args: %w", kind, err))
		}
	}
	return args, nil
}

// describeJSONError rewrites encoding/json errors so they name the field and
// the offset, which its own messages do only in part.
func describeJSONError(err error) error {
	var te *json.UnmarshalTypeError
	var se *json.SyntaxError
	switch {
	case errors.As(err, &te):
		field := te.Field
		if field == "" {
			field = "(top level)"
		}
		return fmt.Errorf("field %s: got JSON %s, want %s (offset %d): %w", field, te.Value, te.Type, te.Offset, err)
	case errors.As(err, &se):
		return fmt.Errorf("syntax error at offset %d: %w", se.Offset, err)
	case errors.Is(err, io.EOF):
		return errors.New("empty payload")
	}
	return err
}
