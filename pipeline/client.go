package pipeline

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
)

// Client enqueues jobs and inspects queues. One go-redis connection pool is
// shared by the asynq client, the inspector and callers of Redis, so a
// producer holds one pool, not three. Safe for concurrent use.
type Client struct {
	rdb  redis.UniversalClient
	aq   *asynq.Client
	insp *asynq.Inspector
	reg  *Registry
	// keeper registers the queues enqueued to again and again, so they
	// come back after a Redis restart (see QueueRegisterInterval).
	keeper *queueKeeper
}

// ClientOption configures NewClient.
type ClientOption func(*Client)

// WithRegistry makes Enqueue apply reg's per-kind defaults (queue, retries,
// timeout) and check raw payloads of registered kinds.
func WithRegistry(reg *Registry) ClientOption {
	return func(c *Client) { c.reg = reg }
}

// NewClient validates cfg and connects lazily: no command is sent until the
// first enqueue. Use Ping to fail fast.
func NewClient(cfg Config, opts ...ClientOption) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	rdb, err := cfg.RedisClient()
	if err != nil {
		return nil, err
	}
	c := &Client{
		rdb:  rdb,
		aq:   asynq.NewClientFromRedisClient(rdb),
		insp: asynq.NewInspectorFromRedisClient(rdb),
	}
	c.keeper = newQueueKeeper(queueKeeperParams{rdb: rdb})
	for _, o := range opts {
		o(c)
	}
	return c, nil
}

// Close closes the shared connection pool.
func (c *Client) Close() error {
	c.keeper.shutdown()
	// The asynq client and inspector were built on our pool and refuse to
	// close it themselves; closing it here ends all three.
	return c.rdb.Close()
}

// Ping checks that Redis answers.
func (c *Client) Ping(ctx context.Context) error {
	if err := c.rdb.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("redis ping: %w", err)
	}
	return nil
}

// Inspector returns an asynq inspector on the client's pool (queue sizes,
// task states, archived tasks). Do not Close it; Close the Client.
func (c *Client) Inspector() *asynq.Inspector { return c.insp }

// Redis returns the client's go-redis pool for Tandem's own keys (see
// keys.go). Do not Close it; Close the Client.
func (c *Client) Redis() redis.UniversalClient { return c.rdb }

// Registry returns the registry given by WithRegistry, or nil.
func (c *Client) Registry() *Registry { return c.reg }

// NewTask validates args, marshals them to JSON and returns an asynq task
// with the kind's defaults from KindOptioner (if args has one) followed by
// opts.
func NewTask[T JobArgs](args T, opts ...asynq.Option) (*asynq.Task, error) {
	kind, payload, err := encodeArgs(args)
	if err != nil {
		return nil, err
	}
	base := KindOptions{}
	if ko, ok := any(args).(KindOptioner); ok {
		base = ko.KindOptions()
	}
	if err := base.validate(); err != nil {
		return nil, fmt.Errorf("%T.KindOptions: %w", args, err)
	}
	return asynq.NewTask(kind, payload, append(base.withDefaults().asynqOptions(), opts...)...), nil
}

// Enqueue validates args and enqueues them as a job. Options apply in this
// order, later winning: the defaults of T (KindOptioner), those given to
// Register in the client's registry, then opts. Invalid args are refused
// with a permanent error naming the field, before anything reaches Redis.
func Enqueue[T JobArgs](ctx context.Context, c *Client, args T, opts ...asynq.Option) (*asynq.TaskInfo, error) {
	kind, payload, err := encodeArgs(args)
	if err != nil {
		return nil, err
	}
	ko := KindOptions{}
	if k, ok := any(args).(KindOptioner); ok {
		ko = k.KindOptions()
		if err := ko.validate(); err != nil {
			return nil, fmt.Errorf("%T.KindOptions: %w", args, err)
		}
	}
	if e := c.reg.entry(kind); e != nil {
		ko = ko.merge(e.regOpts)
	}
	return c.enqueue(ctx, kind, payload, ko, opts)
}

// EnqueueRaw enqueues an already-encoded payload, for callers that hold JSON
// rather than a typed value (the HTTP API, the scheduler). If the kind is
// registered, the payload is checked as a worker would check it and the
// kind's defaults apply; an unregistered kind gets DefaultMaxRetry,
// DefaultTimeout and QueueDefault unless opts say otherwise.
func (c *Client) EnqueueRaw(ctx context.Context, kind string, payload []byte, opts ...asynq.Option) (*asynq.TaskInfo, error) {
	return c.enqueueRaw(ctx, kind, payload, opts, false)
}

// EnqueueRawIdempotent is EnqueueRaw for callers that send an enqueue again
// when they did not hear back (a timeout, a dropped connection, a Redis
// restart): when the task ID in opts is taken by a task of the same kind
// and payload in the same queue, the earlier enqueue went through, and that
// task is returned with no error. A task ID taken by another kind or
// payload is still asynq.ErrTaskIDConflict.
func (c *Client) EnqueueRawIdempotent(ctx context.Context, kind string, payload []byte, opts ...asynq.Option) (*asynq.TaskInfo, error) {
	return c.enqueueRaw(ctx, kind, payload, opts, true)
}

func (c *Client) enqueueRaw(ctx context.Context, kind string, payload []byte, opts []asynq.Option, idempotent bool) (*asynq.TaskInfo, error) {
	if err := ValidateKind(kind); err != nil {
		return nil, Permanent(err)
	}
	if len(payload) > MaxPayloadBytes {
		return nil, Permanent(fmt.Errorf("%s payload is %d bytes, over the limit of %d", kind, len(payload), MaxPayloadBytes))
	}
	var ko KindOptions
	if e := c.reg.entry(kind); e != nil {
		if err := e.check(payload); err != nil {
			return nil, err
		}
		ko = e.opts
	}
	info, err := c.enqueue(ctx, kind, payload, ko, opts)
	if idempotent && errors.Is(err, asynq.ErrTaskIDConflict) {
		return c.sameTask(ctx, kind, payload, append(ko.withDefaults().asynqOptions(), opts...), err)
	}
	return info, err
}

// sameTask returns the task holding the ID that an enqueue of kind and
// payload with options all was refused for (conflict), when it has that
// kind and payload; otherwise conflict.
func (c *Client) sameTask(ctx context.Context, kind string, payload []byte, all []asynq.Option, conflict error) (*asynq.TaskInfo, error) {
	var queue, id string
	for _, o := range all { // later options win, as in asynq
		switch o.Type() {
		case asynq.QueueOpt:
			queue, _ = o.Value().(string)
		case asynq.TaskIDOpt:
			id, _ = o.Value().(string)
		}
	}
	info, err := TaskInfo(ctx, c.rdb, c.insp, queue, id)
	switch {
	case errors.Is(err, asynq.ErrTaskNotFound):
		return nil, conflict // gone since: it was there when asynq refused
	case err != nil:
		return nil, fmt.Errorf("enqueue %s: task ID %q is taken, and reading the task that holds it failed: %w", kind, id, err)
	case info.Type != kind || !bytes.Equal(info.Payload, payload):
		return nil, conflict
	}
	c.keeper.add(info.Queue)
	return info, nil
}

// enqueue fills ko's zero fields with defaults and puts opts after them.
func (c *Client) enqueue(ctx context.Context, kind string, payload []byte, ko KindOptions, opts []asynq.Option) (*asynq.TaskInfo, error) {
	all := append(ko.withDefaults().asynqOptions(), opts...)
	info, err := c.aq.EnqueueContext(ctx, asynq.NewTask(kind, payload), all...)
	if err != nil {
		return nil, fmt.Errorf("enqueue %s: %w", kind, err)
	}
	c.keeper.add(info.Queue)
	return info, nil
}
