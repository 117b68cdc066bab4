package pipeline

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"runtime/debug"
	"sort"
	"strings"
	"sync"

	"github.com/hibiken/asynq"
)

// Registry maps job kinds to their workers and enqueue defaults. Register
// every kind at start-up, before Handler, Mux or a Client uses the registry;
// handlers built earlier do not see later kinds.
type Registry struct {
	mu    sync.RWMutex
	kinds map[string]*kindEntry
}

// kindEntry is one registered kind with its type erased: the generic part
// (decode into T, call Worker[T]) is captured in closures at Register time.
type kindEntry struct {
	opts    KindOptions // regOpts over the type's KindOptions, zero fields filled with defaults
	regOpts KindOptions // as given to Register; Enqueue lays them over a value's own KindOptions
	handle  asynq.HandlerFunc
	run     func(ctx context.Context, payload []byte) error
	check   func(payload []byte) error
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry {
	return &Registry{kinds: make(map[string]*kindEntry)}
}

// Register adds w as the worker of T's kind. opts override the defaults T
// declares through KindOptioner. It panics on a duplicate or malformed kind
// or bad options: those are programming errors found at start-up.
func Register[T JobArgs](r *Registry, w Worker[T], opts KindOptions) {
	var zero T
	kind := zero.Kind()
	if err := ValidateKind(kind); err != nil {
		panic(fmt.Sprintf("pipeline.Register[%T]: %v", zero, err))
	}
	if w == nil {
		panic(fmt.Sprintf("pipeline.Register(%s): nil worker", kind))
	}
	if err := opts.validate(); err != nil {
		panic(fmt.Sprintf("pipeline.Register(%s): %v", kind, err))
	}
	var base KindOptions
	if ko, ok := any(zero).(KindOptioner); ok {
		base = ko.KindOptions()
		if err := base.validate(); err != nil {
			panic(fmt.Sprintf("pipeline.Register(%s): %T.KindOptions: %v", kind, zero, err))
		}
	}
	e := &kindEntry{
		opts:    base.merge(opts).withDefaults(),
		regOpts: opts,
		handle: func(ctx context.Context, t *asynq.Task) error {
			args, err := decodeArgs[T](kind, t.Payload())
			if err != nil {
				return err
			}
			job := &Job[T]{Args: args, ResultWriter: t.ResultWriter()}
			job.ID, _ = asynq.GetTaskID(ctx)
			job.Queue, _ = asynq.GetQueueName(ctx)
			job.Retried, _ = asynq.GetRetryCount(ctx)
			job.MaxRetry, _ = asynq.GetMaxRetry(ctx)
			return w.Work(ctx, job)
		},
		check: func(payload []byte) error {
			_, err := decodeArgs[T](kind, payload)
			return err
		},
	}
	e.run = func(ctx context.Context, payload []byte) error {
		args, err := decodeArgs[T](kind, payload)
		if err != nil {
			return err
		}
		job := &Job[T]{ID: execJobID(), Queue: e.opts.Queue, MaxRetry: e.opts.MaxRetry, Args: args}
		return w.Work(ctx, job)
	}

	r.mu.Lock()
	defer r.mu.Unlock()
	if _, dup := r.kinds[kind]; dup {
		panic(fmt.Sprintf("pipeline.Register: kind %q registered twice", kind))
	}
	r.kinds[kind] = e
}

// Kinds returns the registered kinds, sorted.
func (r *Registry) Kinds() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	kinds := make([]string, 0, len(r.kinds))
	for k := range r.kinds {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	return kinds
}

// Options returns kind's enqueue defaults with zero fields filled.
func (r *Registry) Options(kind string) (KindOptions, bool) {
	e := r.entry(kind)
	if e == nil {
		return KindOptions{}, false
	}
	return e.opts, true
}

// Check decodes and validates payload as kind's args without running
// anything: the same test a worker applies before Work.
func (r *Registry) Check(kind string, payload []byte) error {
	e := r.entry(kind)
	if e == nil {
		return r.unknownKind(kind)
	}
	return e.check(payload)
}

func (r *Registry) entry(kind string) *kindEntry {
	if r == nil {
		return nil
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.kinds[kind]
}

func (r *Registry) unknownKind(kind string) error {
	return fmt.Errorf("%w %q (registered: %s)", asynq.ErrHandlerNotFound, kind, strings.Join(r.Kinds(), ", "))
}

// Handler returns an asynq.Handler that routes each task to its kind's worker
// by exact match, through mw (mw[0] outermost). Each kind's middleware chain is
// built once here rather than per task, as asynq.ServeMux would.
//
// A task of an unregistered kind fails with a transient error wrapping
// asynq.ErrHandlerNotFound: during a rolling deploy a newer producer can
// enqueue a kind the older workers lack, and a retry reaches a newer worker.
func (r *Registry) Handler(mw ...asynq.MiddlewareFunc) asynq.Handler {
	r.mu.RLock()
	defer r.mu.RUnlock()
	d := &dispatcher{routes: make(map[string]asynq.Handler, len(r.kinds))}
	for kind, e := range r.kinds {
		d.routes[kind] = Chain(e.handle, mw...)
	}
	d.notFound = Chain(asynq.HandlerFunc(func(ctx context.Context, t *asynq.Task) error {
		return r.unknownKind(t.Type())
	}), mw...)
	return d
}

type dispatcher struct {
	routes   map[string]asynq.Handler
	notFound asynq.Handler
}

func (d *dispatcher) ProcessTask(ctx context.Context, t *asynq.Task) error {
	if h, ok := d.routes[t.Type()]; ok {
		return h.ProcessTask(ctx, t)
	}
	return d.notFound.ProcessTask(ctx, t)
}

// Mux returns the registered kinds as an asynq.ServeMux, for code that wants
// to add its own handlers beside them. Each kind gets its middleware chain
// once; a kind's handler refuses task types that only share its prefix
// (ServeMux matches by prefix). Server uses Handler, which is cheaper.
func (r *Registry) Mux(mw ...asynq.MiddlewareFunc) *asynq.ServeMux {
	r.mu.RLock()
	defer r.mu.RUnlock()
	mux := asynq.NewServeMux()
	for kind, e := range r.kinds {
		exact := func(ctx context.Context, t *asynq.Task) error {
			if t.Type() != kind {
				return r.unknownKind(t.Type())
			}
			return e.handle(ctx, t)
		}
		mux.Handle(kind, Chain(asynq.HandlerFunc(exact), mw...))
	}
	return mux
}

// Exec runs one job of kind in-process, without Redis: the same decode,
// validation and Work as a queued run, for `worker exec`, laptops and tests.
// The kind's Timeout bounds the run. A panic in Work comes back as a
// *PanicError carrying the stack.
func (r *Registry) Exec(ctx context.Context, kind string, payload []byte) (err error) {
	e := r.entry(kind)
	if e == nil {
		return r.unknownKind(kind)
	}
	ctx, cancel := context.WithTimeout(ctx, e.opts.Timeout)
	defer cancel()
	defer func() {
		if v := recover(); v != nil {
			err = &PanicError{Kind: kind, Value: v, Stack: debug.Stack()}
		}
	}()
	return e.run(ctx, payload)
}

// Chain wraps h in mw so that mw[0] runs first (outermost), the order
// asynq.ServeMux.Use applies.
func Chain(h asynq.Handler, mw ...asynq.MiddlewareFunc) asynq.Handler {
	for i := len(mw) - 1; i >= 0; i-- {
		h = mw[i](h)
	}
	return h
}

// execJobID names an in-process run; it only has to be unique enough to tell
// runs apart in logs and artifact paths.
func execJobID() string {
	var b [8]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on supported platforms
	return "exec-" + hex.EncodeToString(b[:])
}
