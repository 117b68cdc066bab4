package pipeline

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
)

// optArgs declares its own kind options.
type optArgs struct {
	Q string `json:"q"`
}

func (optArgs) Kind() string { return "test:opts" }
func (a optArgs) KindOptions() KindOptions {
	return KindOptions{Queue: "from-args", MaxRetry: 7, Timeout: time.Minute}
}

type slowArgs struct{}

func (slowArgs) Kind() string { return "test:slow" }

func TestExec(t *testing.T) {
	t.Parallel()
	reg := NewRegistry()
	var got *Job[echoArgs]
	Register(reg, WorkFunc[echoArgs](func(_ context.Context, job *Job[echoArgs]) error {
		if job.Args.Text == "explode" {
			panic("kaboom")
		}
		got = job
		return nil
	}), KindOptions{Queue: "interactive", MaxRetry: NoRetry})
	Register(reg, WorkFunc[slowArgs](func(ctx context.Context, _ *Job[slowArgs]) error {
		<-ctx.Done()
		return ctx.Err()
	}), KindOptions{Timeout: 20 * time.Millisecond})
	ctx := context.Background()

	if err := reg.Exec(ctx, "test:echo", []byte(`{"text":"hi","n":2}`)); err != nil {
		t.Fatal(err)
	}
	if got.Args != (echoArgs{Text: "hi", N: 2}) || got.Queue != "interactive" || got.MaxRetry != 0 ||
		!strings.HasPrefix(got.ID, "exec-") || got.ResultWriter != nil {
		t.Errorf("job = %+v", got)
	}

	for _, tc := range []struct {
		payload, want string
	}{
		{`{"text":"hi","nope":true}`, `unknown field "nope"`},
		{`{"text":""}`, "text: required"},
		{`{"text":"x","n":"two"}`, "field n"},
		{`{"text":"x"}garbage`, "data after"},
		{``, "empty payload"},
		{`[1]`, "(top level)"},
		{`{"text":"` + strings.Repeat("a", MaxPayloadBytes) + `"}`, "over the limit"},
	} {
		err := reg.Exec(ctx, "test:echo", []byte(tc.payload))
		if err == nil || !IsPermanent(err) || !strings.Contains(err.Error(), tc.want) {
			short := tc.payload
			if len(short) > 40 {
				short = short[:40] + "..."
			}
			t.Errorf("Exec(%s) = %v; want a permanent error containing %q", short, err, tc.want)
		}
	}

	err := reg.Exec(ctx, "test:echo", []byte(`{"text":"explode"}`))
	var pe *PanicError
	if !errors.As(err, &pe) || pe.Value != "kaboom" || !strings.Contains(string(pe.Stack), "registry_test.go") {
		t.Errorf("panic: got %v; want a PanicError with the stack", err)
	}
	if IsPermanent(err) {
		t.Error("a plain panic was classed permanent")
	}

	if err := reg.Exec(ctx, "test:slow", []byte(`{}`)); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("slow job = %v; want the kind's timeout", err)
	}
	err = reg.Exec(ctx, "test:missing", []byte(`{}`))
	if !errors.Is(err, asynq.ErrHandlerNotFound) || !strings.Contains(err.Error(), "test:echo, test:slow") {
		t.Errorf("unknown kind = %v; want ErrHandlerNotFound listing the kinds", err)
	}
}

func TestRegistryOptionsAndKinds(t *testing.T) {
	t.Parallel()
	reg := NewRegistry()
	noop := WorkFunc[echoArgs](func(context.Context, *Job[echoArgs]) error { return nil })
	Register(reg, noop, KindOptions{})
	Register(reg, WorkFunc[optArgs](func(context.Context, *Job[optArgs]) error { return nil }), KindOptions{MaxRetry: 2})

	if got := reg.Kinds(); strings.Join(got, ",") != "test:echo,test:opts" {
		t.Errorf("Kinds = %v", got)
	}
	if o, ok := reg.Options("test:echo"); !ok || o != (KindOptions{Queue: QueueDefault, MaxRetry: DefaultMaxRetry, Timeout: DefaultTimeout}) {
		t.Errorf("defaults = %+v, %v", o, ok)
	}
	// Register's options override the type's own.
	if o, _ := reg.Options("test:opts"); o != (KindOptions{Queue: "from-args", MaxRetry: 2, Timeout: time.Minute}) {
		t.Errorf("merged = %+v", o)
	}
	if _, ok := reg.Options("nope"); ok {
		t.Error("Options of an unknown kind")
	}

	mustPanic(t, "duplicate kind", func() { Register(reg, noop, KindOptions{}) })
	mustPanic(t, "bad queue", func() { Register(NewRegistry(), noop, KindOptions{Queue: "has space"}) })
	mustPanic(t, "bad retry", func() { Register(NewRegistry(), noop, KindOptions{MaxRetry: -5}) })
	mustPanic(t, "nil worker", func() { Register[echoArgs](NewRegistry(), nil, KindOptions{}) })
	mustPanic(t, "bad kind", func() {
		Register(NewRegistry(), WorkFunc[badKindArgs](func(context.Context, *Job[badKindArgs]) error { return nil }), KindOptions{})
	})
}

type badKindArgs struct{}

func (badKindArgs) Kind() string { return "Bad Kind" }

func mustPanic(t *testing.T, what string, f func()) {
	t.Helper()
	defer func() {
		if recover() == nil {
			t.Errorf("%s: no panic", what)
		}
	}()
	f()
}

func TestHandlerAndMuxRouting(t *testing.T) {
	t.Parallel()
	reg := NewRegistry()
	var runs int
	Register(reg, WorkFunc[echoArgs](func(context.Context, *Job[echoArgs]) error { runs++; return nil }), KindOptions{})
	var seen []string
	mw := func(next asynq.Handler) asynq.Handler {
		return asynq.HandlerFunc(func(ctx context.Context, t *asynq.Task) error {
			seen = append(seen, t.Type())
			return next.ProcessTask(ctx, t)
		})
	}
	ctx := context.Background()
	for name, h := range map[string]asynq.Handler{"Handler": reg.Handler(mw), "Mux": reg.Mux(mw)} {
		runs, seen = 0, nil
		if err := h.ProcessTask(ctx, asynq.NewTask("test:echo", []byte(`{"text":"a"}`))); err != nil || runs != 1 {
			t.Errorf("%s: known kind: err %v, runs %d", name, err, runs)
		}
		// Unknown kinds, including one that only shares a prefix, fail
		// transiently: a newer worker may know them.
		for _, kind := range []string{"test:echo2", "other"} {
			err := h.ProcessTask(ctx, asynq.NewTask(kind, []byte(`{}`)))
			if !errors.Is(err, asynq.ErrHandlerNotFound) || IsPermanent(err) {
				t.Errorf("%s: kind %q: %v; want a transient not-found error", name, kind, err)
			}
		}
		if name == "Handler" && len(seen) != 3 {
			t.Errorf("Handler: middleware saw %v; want every task", seen)
		}
	}
}

func TestEnqueueOptionPrecedence(t *testing.T) {
	t.Parallel()
	b := setup(t)
	q := b.queue
	ctx := context.Background()

	// The type's own options apply without a registry entry.
	info, err := Enqueue(ctx, b.client, optArgs{}, asynq.Queue(q))
	if err != nil {
		t.Fatal(err)
	}
	if info.MaxRetry != 7 || info.Timeout != time.Minute || info.Queue != q {
		t.Errorf("type options: %+v", info)
	}
	task, err := NewTask(optArgs{Q: "x"})
	if err != nil || task.Type() != "test:opts" || string(task.Payload()) != `{"q":"x"}` {
		t.Errorf("NewTask = %v, %v", task, err)
	}

	// Registered options sit above the type's, per-call options above both.
	Register(b.reg, WorkFunc[optArgs](func(context.Context, *Job[optArgs]) error { return nil }),
		KindOptions{Queue: q, MaxRetry: 1})
	info, err = Enqueue(ctx, b.client, optArgs{})
	if err != nil {
		t.Fatal(err)
	}
	if info.Queue != q || info.MaxRetry != 1 || info.Timeout != time.Minute {
		t.Errorf("registered options: %+v", info)
	}
	info, err = Enqueue(ctx, b.client, optArgs{}, asynq.MaxRetry(4))
	if err != nil {
		t.Fatal(err)
	}
	if info.MaxRetry != 4 {
		t.Errorf("per-call option: MaxRetry %d; want 4", info.MaxRetry)
	}

	// An unregistered kind through EnqueueRaw gets the package defaults.
	info, err = b.client.EnqueueRaw(ctx, "test:unregistered", []byte(`{"any":"thing"}`), asynq.Queue(q))
	if err != nil {
		t.Fatal(err)
	}
	if info.MaxRetry != DefaultMaxRetry || info.Timeout != DefaultTimeout {
		t.Errorf("raw defaults: %+v", info)
	}
	if _, err := b.client.EnqueueRaw(ctx, "Bad Kind", nil); err == nil {
		t.Error("EnqueueRaw accepted a malformed kind")
	}
}
