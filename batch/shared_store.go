package batch

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tandem-ai/tandem/artifact"
	"github.com/tandem-ai/tandem/pipeline"
)

// A batch's chunk inputs are written by the producer and read by workers,
// so both must use one artifact store (artifact.Store.ID). Workers
// advertise theirs in Redis; Create refuses a batch that no running worker
// could read, and a worker that cannot find an input fails the batch at
// once rather than retrying.

// storesKey maps the artifact store ID of running workers to when that
// advertisement lapses (unix seconds).
const storesKey = pipeline.BatchKeyPrefix + "stores"

// storeTTL is how long an advertisement lasts; workers renew theirs three
// times in it.
const storeTTL = 30 * time.Second

// CodeInputMissing is the batch error code of a batch whose input a worker
// did not find in its artifact store.
const CodeInputMissing = "input_missing"

// ErrStoreNotShared is wrapped by Create's error when workers run and none
// of them uses this service's artifact store.
var ErrStoreNotShared = errors.New("no running worker shares this producer's artifact store")

// storeFix says how to give producers and workers one artifact store.
const storeFix = "give the producer and the workers one store: " + artifact.EnvStore + "=nats on all of them " +
	"(the default where TANDEM_NATS_URL is set), or the same TANDEM_DATA_DIR or " + artifact.EnvStore + "=local:DIR on a disk they share"

// scriptAdvertise records store ARGV[1] as used until ARGV[2] and drops
// the stores whose time ran out before ARGV[3], in one step, so that no
// renewal is dropped as stale; the hash itself lapses ARGV[4] seconds
// after the last advertisement, when every worker has gone.
var scriptAdvertise = redis.NewScript(`
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  if tonumber(all[i + 1]) < tonumber(ARGV[3]) then redis.call('HDEL', KEYS[1], all[i]) end
end
redis.call('EXPIRE', KEYS[1], ARGV[4])
return 1
`)

// advertiseStore records this worker's artifact store now and every
// storeTTL/3 until stop is called. Stopping leaves the record to lapse:
// other workers may share the store.
func (s *Service) advertiseStore(ctx context.Context) (stop func(), err error) {
	id, err := s.Artifacts.ID(ctx)
	if err != nil {
		return nil, err
	}
	renew := func(ctx context.Context) error {
		now := s.now()
		return scriptAdvertise.Run(ctx, s.Store.rdb, []string{storesKey}, id, now.Add(storeTTL).Unix(), now.Unix(), int(storeTTL.Seconds())).Err()
	}
	if err := renew(ctx); err != nil {
		return nil, fmt.Errorf("batch: advertise the artifact store: %w", err)
	}
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(storeTTL / 3)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			if err := renew(ctx); err != nil && ctx.Err() == nil {
				s.Logger.Warn("batch: the artifact store advertisement was not renewed", "err", err)
			}
		}
	}()
	return func() { cancel(); <-done }, nil
}

// checkWorkersShareStore refuses when workers run and none advertises this
// service's store. With no worker running the batch is accepted: it waits
// for one (scale from zero), and a worker on another store fails it at once.
func (s *Service) checkWorkersShareStore(ctx context.Context) error {
	ads, err := s.Store.rdb.HGetAll(ctx, storesKey).Result()
	if err != nil {
		return fmt.Errorf("batch: worker artifact stores: %w", err)
	}
	mine, err := s.Artifacts.ID(ctx)
	if err != nil {
		return err
	}
	var others []string
	for id, until := range ads {
		if n, _ := strconv.ParseInt(until, 10, 64); n < s.now().Unix() {
			continue
		}
		if id == mine {
			return nil
		}
		d := artifact.DescribeID(id)
		if d == artifact.DescribeID(mine) {
			d += " elsewhere"
		}
		others = append(others, d)
	}
	if len(others) == 0 {
		return nil
	}
	slices.Sort(others)
	return fmt.Errorf("%w: it is %s, the workers use %s, so they could not read the batch's input; %s",
		ErrStoreNotShared, artifact.DescribeID(mine), strings.Join(slices.Compact(others), ", "), storeFix)
}

// failInputMissing fails batch b at once because what, an input of it, is
// not in this worker's artifact store: the producer wrote it to another
// store, and no retry would find it. The batch is sealed as failed, so its
// finalisation merges what finished chunks wrote (those rows keep their
// results), reports the other rows, announces the failure and removes the
// waiting chunks and the expiry task. A batch already sealed or ended
// (cancelled) keeps its own end.
func (r *Runner) failInputMissing(ctx context.Context, b *Batch, what string) error {
	p := r.inputMissing(ctx, what)
	seal, err := r.Store.SealFailed(ctx, b.ID)
	if err != nil {
		return err
	}
	if !seal.Sealed {
		return nil
	}
	if err := r.Store.SetErrors(ctx, b.ID, []Problem{p}); err != nil {
		r.Logger.Warn("batch: failed, but its reason was not recorded", "batch", b.ID, "reason", p.Message, "err", err)
	}
	r.Metrics.chunk(CodeInputMissing)
	if err := r.enqueueFinalize(ctx, b.ID); err != nil {
		r.Logger.Warn("batch: failed, but its finalisation was not enqueued; its expiry task finishes it", "batch", b.ID, "err", err)
	}
	return pipeline.Permanent(fmt.Errorf("batch %s: %s", b.ID, p.Message))
}

// onStoreOf reports whether this worker's artifact store is the one b's
// producer wrote its inputs to: there, a missing input may yet appear (a
// shared disk that shows a file late) and the chunk retries; elsewhere no
// retry would find it.
func (r *Runner) onStoreOf(ctx context.Context, b *Batch) bool {
	id, err := r.Artifacts.ID(ctx)
	return err == nil && b.store != "" && id == b.store
}

// inputMissing is the problem of an input (what) missing from this
// worker's artifact store.
func (r *Runner) inputMissing(ctx context.Context, what string) Problem {
	store := "unknown"
	if id, err := r.Artifacts.ID(ctx); err == nil {
		store = artifact.DescribeID(id)
	}
	return Problem{Code: CodeInputMissing, Message: fmt.Sprintf(
		"%s is not in this worker's artifact store (%s): the producer that created the batch wrote it to another store. To run it, %s, then submit the batch again",
		what, store, storeFix)}
}
