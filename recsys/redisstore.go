package recsys

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// Redis keys of the serving store. KeyPrefix equals pipeline.RecsKeyPrefix
// (a test checks it); it is repeated here so that recsys does not import the
// job plumbing.
const (
	// KeyPrefix is the prefix of every key recsys writes.
	KeyPrefix = "tandem:recs:"
	// KeyServeCurrent holds the number of the generation readers use.
	KeyServeCurrent = KeyPrefix + "serve:current"
	// KeyServeSeq counts generations; INCR hands out the next number.
	KeyServeSeq = KeyPrefix + "serve:seq"
	// KeyServeGenPrefix + N is generation N: a hash from user ID to the
	// user's list as JSON ([{"item":...,"score":...},...], best first).
	KeyServeGenPrefix = KeyPrefix + "serve:gen:"
)

// ServeGenKey is the hash key of generation gen.
func ServeGenKey(gen int64) string { return KeyServeGenPrefix + strconv.FormatInt(gen, 10) }

// ErrStaleGeneration is returned by Publish when a newer generation was
// swapped in while this one was being written; the older one is dropped.
var ErrStaleGeneration = errors.New("recsys: a newer generation is already being served")

// RedisStoreOptions configures a RedisStore. Zero fields take the defaults.
type RedisStoreOptions struct {
	// Grace is how long a replaced generation lives on after a swap, so a
	// reader that read the pointer just before the swap still finds its
	// generation whole. Default 10 minutes.
	Grace time.Duration
	// BuildTTL expires a generation whose publisher died before the swap.
	// Default 6 hours.
	BuildTTL time.Duration
	// Batch is the number of users written per round trip. Default 500.
	Batch int
	// MaxIDBytes bounds user IDs. Default 256.
	MaxIDBytes int
}

// RedisStore serves precomputed recommendation lists from Redis. A rebuild
// writes a whole new generation under its own key, then swaps the pointer
// KeyServeCurrent in one transaction, so a reader sees the old complete set
// or the new complete set, never a half-written one. Between rebuilds,
// UpdateUser rewrites one user's list in the current generation.
type RedisStore struct {
	rdb  redis.UniversalClient
	opts RedisStoreOptions
}

// NewRedisStore wraps a go-redis client.
func NewRedisStore(rdb redis.UniversalClient, opts RedisStoreOptions) *RedisStore {
	if opts.Grace <= 0 {
		opts.Grace = 10 * time.Minute
	}
	if opts.BuildTTL <= 0 {
		opts.BuildTTL = 6 * time.Hour
	}
	if opts.Batch <= 0 {
		opts.Batch = 500
	}
	if opts.MaxIDBytes <= 0 {
		opts.MaxIDBytes = 256
	}
	return &RedisStore{rdb: rdb, opts: opts}
}

// Publish writes every user's list as a new generation and makes it the
// current one. Users absent from recs read as having no list. It returns the
// generation number and the number of users written. On error the new
// generation is never served and expires after BuildTTL.
func (s *RedisStore) Publish(ctx context.Context, recs iter.Seq2[string, []Scored]) (gen int64, users int, err error) {
	gen, err = s.rdb.Incr(ctx, KeyServeSeq).Result()
	if err != nil {
		return 0, 0, fmt.Errorf("recsys: publish: new generation: %w", err)
	}
	key := ServeGenKey(gen)
	fields := make([]any, 0, 2*s.opts.Batch)
	flush := func() error {
		if len(fields) == 0 {
			return nil
		}
		_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			p.HSet(ctx, key, fields...)
			p.Expire(ctx, key, s.opts.BuildTTL)
			return nil
		})
		fields = fields[:0]
		return err
	}
	for user, items := range recs {
		if err := s.checkUser(user); err != nil {
			return gen, users, err
		}
		b, err := encodeList(items)
		if err != nil {
			return gen, users, err
		}
		fields = append(fields, user, b)
		users++
		if len(fields) == cap(fields) {
			if err := flush(); err != nil {
				return gen, users, fmt.Errorf("recsys: publish generation %d: %w", gen, err)
			}
		}
	}
	if err := flush(); err != nil {
		return gen, users, fmt.Errorf("recsys: publish generation %d: %w", gen, err)
	}
	// A duplicate user in recs would leave fewer fields than users; either
	// way the set is not what the caller meant to serve.
	if n, err := s.rdb.HLen(ctx, key).Result(); err != nil {
		return gen, users, fmt.Errorf("recsys: publish generation %d: %w", gen, err)
	} else if n != int64(users) {
		return gen, users, fmt.Errorf("recsys: publish generation %d: %d users written, %d stored (duplicate user IDs?)", gen, users, n)
	}
	if err := s.swap(ctx, gen); err != nil {
		return gen, users, err
	}
	return gen, users, nil
}

// swap points KeyServeCurrent at gen, keeps gen's hash and gives the
// replaced one Grace to live, all in one MULTI/EXEC guarded by WATCH.
func (s *RedisStore) swap(ctx context.Context, gen int64) error {
	for attempt := 0; attempt < 10; attempt++ {
		err := s.rdb.Watch(ctx, func(tx *redis.Tx) error {
			old, err := currentOf(ctx, tx)
			if err != nil {
				return err
			}
			if old >= gen {
				return ErrStaleGeneration
			}
			_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
				p.Set(ctx, KeyServeCurrent, gen, 0)
				p.Persist(ctx, ServeGenKey(gen))
				if old > 0 {
					p.Expire(ctx, ServeGenKey(old), s.opts.Grace)
				}
				return nil
			})
			return err
		}, KeyServeCurrent)
		if errors.Is(err, redis.TxFailedErr) {
			continue // the pointer moved under us: look again
		}
		if err != nil {
			return fmt.Errorf("recsys: swap to generation %d: %w", gen, err)
		}
		return nil
	}
	return fmt.Errorf("recsys: swap to generation %d: pointer kept changing", gen)
}

type getter interface {
	Get(ctx context.Context, key string) *redis.StringCmd
}

func currentOf(ctx context.Context, c getter) (int64, error) {
	v, err := c.Get(ctx, KeyServeCurrent).Int64()
	if errors.Is(err, redis.Nil) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("recsys: reading %s: %w", KeyServeCurrent, err)
	}
	return v, nil
}

// Current returns the generation being served, 0 when none.
func (s *RedisStore) Current(ctx context.Context) (int64, error) {
	return currentOf(ctx, s.rdb)
}

// Get returns the user's list from the current generation, and false when
// there is no generation or no list for the user.
func (s *RedisStore) Get(ctx context.Context, user string) ([]Scored, bool, error) {
	gen, err := s.Current(ctx)
	if err != nil || gen == 0 {
		return nil, false, err
	}
	lists, err := s.GetAt(ctx, gen, user)
	if err != nil {
		return nil, false, err
	}
	return lists[0], lists[0] != nil, nil
}

// GetAt reads several users' lists from one generation, so a caller that
// needs a consistent view of many users pins the generation (Current) and
// reads from it. A missing user gives a nil list. A generation replaced
// longer than Grace ago is gone: every list reads nil.
func (s *RedisStore) GetAt(ctx context.Context, gen int64, users ...string) ([][]Scored, error) {
	if len(users) == 0 {
		return nil, nil
	}
	vals, err := s.rdb.HMGet(ctx, ServeGenKey(gen), users...).Result()
	if err != nil {
		return nil, fmt.Errorf("recsys: reading generation %d: %w", gen, err)
	}
	out := make([][]Scored, len(users))
	for i, v := range vals {
		str, ok := v.(string)
		if !ok {
			continue
		}
		var l []Scored
		if err := json.Unmarshal([]byte(str), &l); err != nil {
			return nil, fmt.Errorf("recsys: generation %d, user %q: bad stored list: %w", gen, users[i], err)
		}
		if l == nil {
			l = []Scored{}
		}
		out[i] = l
	}
	return out, nil
}

// Exists reports whether generation gen is still stored: a replaced
// generation is deleted Grace after the swap. A generation that is gone
// never comes back (numbers are not reused), so a caller that finds gen
// after GetAt knows the lists it read were gen's.
func (s *RedisStore) Exists(ctx context.Context, gen int64) (bool, error) {
	n, err := s.rdb.Exists(ctx, ServeGenKey(gen)).Result()
	if err != nil {
		return false, fmt.Errorf("recsys: looking for generation %d: %w", gen, err)
	}
	return n == 1, nil
}

// UpdateUser replaces one user's list in the current generation (creating
// a generation when none exists yet), for the incremental path: after
// Model.Apply, the consumer recomputes the user's list and stores it here.
// The write is tied to the pointer with WATCH, so it lands in the
// generation being served even when a swap happens at the same moment. A
// rebuild that started before the update and swaps in after it will serve
// its own, older list for the user until the next update.
func (s *RedisStore) UpdateUser(ctx context.Context, user string, items []Scored) (int64, error) {
	if err := s.checkUser(user); err != nil {
		return 0, err
	}
	b, err := encodeList(items)
	if err != nil {
		return 0, err
	}
	for attempt := 0; attempt < 10; attempt++ {
		var gen int64
		err := s.rdb.Watch(ctx, func(tx *redis.Tx) error {
			cur, err := currentOf(ctx, tx)
			if err != nil {
				return err
			}
			gen = cur
			fresh := gen == 0
			if fresh {
				if gen, err = s.rdb.Incr(ctx, KeyServeSeq).Result(); err != nil {
					return err
				}
			}
			_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
				if fresh {
					p.Set(ctx, KeyServeCurrent, gen, 0)
				}
				p.HSet(ctx, ServeGenKey(gen), user, b)
				return nil
			})
			return err
		}, KeyServeCurrent)
		if errors.Is(err, redis.TxFailedErr) {
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("recsys: update user %q: %w", user, err)
		}
		return gen, nil
	}
	return 0, fmt.Errorf("recsys: update user %q: pointer kept changing", user)
}

func (s *RedisStore) checkUser(user string) error {
	if user == "" || len(user) > s.opts.MaxIDBytes {
		return fmt.Errorf("%w: user ID of %d bytes (want 1..%d)", ErrBadInput, len(user), s.opts.MaxIDBytes)
	}
	return nil
}

func encodeList(items []Scored) ([]byte, error) {
	if items == nil {
		items = []Scored{}
	}
	b, err := json.Marshal(items)
	if err != nil {
		return nil, fmt.Errorf("recsys: encoding a list: %w", err) // a NaN score
	}
	return b, nil
}
