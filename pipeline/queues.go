package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
)

// Why queues are registered again and again: asynq's inspector (queue
// lists, queue sizes, task lookups, the queue metrics) knows only the
// queues in the set asynqQueuesKey, and an asynq client adds a queue to it
// only on its first enqueue to that queue: it remembers, per process, that
// it did. A Redis that restarts without persistence comes back without the
// set, and the clients that stay up never add their queues again, so every
// task enqueued since sits in a queue the inspector calls "not found" until
// the processes restart. Each Client and Server therefore adds the queues
// it knows to the set every QueueRegisterInterval (a queueKeeper), and the
// lookups that must not wait for it (TaskInfo) register the queue they ask
// about when asynq says it does not know it.

// QueueRegisterInterval is how often a Client adds the queues it enqueued
// to, and a Server the queues it serves, to asynq's set of queue names:
// after a Redis restart that lost the set, queue lists, queue metrics and
// job status are back within this time. One SADD per process per interval.
const QueueRegisterInterval = time.Second

// RegisterQueues adds queues to asynq's set of queue names, the set its
// inspector reads. Adding a queue already there changes nothing.
func RegisterQueues(ctx context.Context, rdb redis.UniversalClient, queues ...string) error {
	if len(queues) == 0 {
		return nil
	}
	members := make([]any, len(queues))
	for i, q := range queues {
		members[i] = q
	}
	if err := rdb.SAdd(ctx, asynqQueuesKey, members...).Err(); err != nil {
		return fmt.Errorf("register queues %v: %w", queues, err)
	}
	return nil
}

// TaskInfo is insp.GetTaskInfo, except that when asynq does not know the
// queue (asynq.ErrQueueNotFound) it registers the queue and asks once more:
// after a Redis restart that lost asynq's set of queue names, tasks
// enqueued since are in queues the set does not name yet. A queue that
// holds nothing is registered all the same and the answer is then
// asynq.ErrTaskNotFound.
func TaskInfo(ctx context.Context, rdb redis.UniversalClient, insp *asynq.Inspector, queue, id string) (*asynq.TaskInfo, error) {
	info, err := insp.GetTaskInfo(queue, id)
	if !errors.Is(err, asynq.ErrQueueNotFound) {
		return info, err
	}
	if err := RegisterQueues(ctx, rdb, queue); err != nil {
		return nil, err
	}
	return insp.GetTaskInfo(queue, id)
}

// queueKeeperParams configures a queueKeeper.
type queueKeeperParams struct {
	rdb redis.UniversalClient
	// queues are known from the start (a server's); add learns more.
	queues []string
	// interval between registrations; 0 means QueueRegisterInterval.
	interval time.Duration
	logger   *slog.Logger
}

// queueKeeper registers the queues it knows in asynq's set of queue names
// at start and then every interval, until shutdown: the background part
// that brings queues back after a Redis restart. Safe for concurrent use.
type queueKeeper struct {
	rdb      redis.UniversalClient
	interval time.Duration
	logger   *slog.Logger
	known    sync.Map // queue name -> struct{}

	mu      sync.Mutex
	started bool
	closed  bool
	cancel  context.CancelFunc
	stopped chan struct{}
}

func newQueueKeeper(p queueKeeperParams) *queueKeeper {
	k := &queueKeeper{rdb: p.rdb, interval: p.interval, logger: p.logger}
	if k.interval <= 0 {
		k.interval = QueueRegisterInterval
	}
	if k.logger == nil {
		k.logger = slog.Default()
	}
	for _, q := range p.queues {
		k.known.Store(q, struct{}{})
	}
	return k
}

// add makes queue known and starts the keeper if it was not running: a
// client's keeper starts with its first enqueue, so a client that enqueues
// nothing sends nothing. One map read when queue is already known.
func (k *queueKeeper) add(queue string) {
	if _, known := k.known.Load(queue); known {
		return
	}
	k.known.Store(queue, struct{}{})
	k.start()
}

// start registers the known queues now and then every interval, in the
// background. Starting twice, or after shutdown, does nothing.
func (k *queueKeeper) start() {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.started || k.closed {
		return
	}
	k.started = true
	ctx, cancel := context.WithCancel(context.Background())
	k.cancel, k.stopped = cancel, make(chan struct{})
	go k.run(ctx)
}

// shutdown stops the keeper and waits for it. Safe to call more than once,
// and on a keeper never started.
func (k *queueKeeper) shutdown() {
	k.mu.Lock()
	running := k.started && !k.closed
	k.closed = true
	k.mu.Unlock()
	if running {
		k.cancel()
		<-k.stopped
	}
}

func (k *queueKeeper) run(ctx context.Context) {
	defer close(k.stopped)
	tick := time.NewTicker(k.interval)
	defer tick.Stop()
	for {
		if err := RegisterQueues(ctx, k.rdb, k.queues()...); err != nil && ctx.Err() == nil {
			// Redis is away; the next tick tries again. The server's
			// health check and the callers' own errors report the outage.
			k.logger.Debug("queue registration failed", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// queues returns the known queues, sorted.
func (k *queueKeeper) queues() []string {
	var qs []string
	k.known.Range(func(q, _ any) bool {
		qs = append(qs, q.(string))
		return true
	})
	sort.Strings(qs)
	return qs
}
