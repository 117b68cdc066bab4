package recsys

import (
	"context"
	"errors"
	"fmt"
	"iter"

	"github.com/redis/go-redis/v9"
)

// PopularField is the field of a served generation that holds its
// cold-start list: the popularity fallback a user with no list of their own
// gets (see RecOptions.NoFallback). User IDs cannot contain control
// characters (events with them are refused), so it never names a user.
const PopularField = "\x00popular"

// Popular returns the cold-start list: the items the most users valued
// positively, best first, exactly what Recommend gives an unknown user.
func (m *Model) Popular(opts RecOptions) ([]Scored, error) {
	if err := opts.validate(); err != nil {
		return nil, err
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.recommendLocked(-1, opts), nil
}

// WithPopular yields popular under PopularField, then every list of recs.
// Hand it to RedisStore.Publish so that the cold-start list swaps in with
// the generation it was computed with.
func WithPopular(recs iter.Seq2[string, []Scored], popular []Scored) iter.Seq2[string, []Scored] {
	return func(yield func(string, []Scored) bool) {
		if !yield(PopularField, popular) {
			return
		}
		for u, l := range recs {
			if !yield(u, l) {
				return
			}
		}
	}
}

// Popular reads the cold-start list of generation gen; ok is false when
// the generation has none (it was created by UpdateUser, or published
// without WithPopular).
func (s *RedisStore) Popular(ctx context.Context, gen int64) (items []Scored, ok bool, err error) {
	lists, err := s.GetAt(ctx, gen, PopularField)
	if err != nil {
		return nil, false, err
	}
	return lists[0], lists[0] != nil, nil
}

// Users calls fn with every user that has a list in generation gen, in no
// particular order, skipping PopularField. It scans the generation's hash
// in batches (HSCAN), so a large generation is never read in one reply;
// a user added during the scan may be missed, and a user may be reported
// twice (HSCAN's guarantees). It stops at the first error fn returns.
func (s *RedisStore) Users(ctx context.Context, gen int64, fn func(user string) error) error {
	var cursor uint64
	for {
		kv, next, err := s.rdb.HScan(ctx, ServeGenKey(gen), cursor, "", int64(s.opts.Batch)).Result()
		if err != nil && !errors.Is(err, redis.Nil) {
			return fmt.Errorf("recsys: scanning generation %d: %w", gen, err)
		}
		for i := 0; i+1 < len(kv); i += 2 {
			if kv[i] == PopularField {
				continue
			}
			if err := fn(kv[i]); err != nil {
				return err
			}
		}
		if next == 0 {
			return nil
		}
		cursor = next
	}
}
