package recsys

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// redisDB is this package's own Redis database; tests flush only it.
const redisDB = 14

// redisClient connects to the test Redis (TANDEM_TEST_REDIS_ADDR, default
// 127.0.0.1:6379), DB 14, flushed before and after. Tests that use it do not
// run in parallel with each other.
func redisClient(t *testing.T) *redis.Client {
	t.Helper()
	addr := os.Getenv("TANDEM_TEST_REDIS_ADDR")
	if addr == "" {
		addr = "127.0.0.1:6379"
	}
	rdb := redis.NewClient(&redis.Options{Addr: addr, DB: redisDB})
	ctx := context.Background()
	if err := rdb.FlushDB(ctx).Err(); err != nil {
		t.Fatalf("Redis at %s (DB %d) is needed: %v", addr, redisDB, err)
	}
	t.Cleanup(func() {
		rdb.FlushDB(context.Background())
		rdb.Close()
	})
	return rdb
}

// generationLists gives n users a list whose items name the generation, so
// a reader can tell which generation each list came from.
func generationLists(label string, n int) iter.Seq2[string, []Scored] {
	return func(yield func(string, []Scored) bool) {
		for u := range n {
			items := []Scored{{Item: label + "-a", Score: 2}, {Item: label + "-b", Score: 1}}
			if !yield(SynthUser(u), items) {
				return
			}
		}
	}
}

func TestRedisPublishGetUpdate(t *testing.T) {
	rdb := redisClient(t)
	ctx := context.Background()
	s := NewRedisStore(rdb, RedisStoreOptions{Grace: time.Minute, Batch: 7})
	if _, ok, err := s.Get(ctx, "u1"); ok || err != nil {
		t.Fatalf("Get before any publish: ok=%v err=%v", ok, err)
	}
	g1, n, err := s.Publish(ctx, generationLists("g1", 20))
	if err != nil || n != 20 {
		t.Fatalf("Publish: %d users, %v", n, err)
	}
	got, ok, err := s.Get(ctx, "u3")
	if err != nil || !ok || len(got) != 2 || got[0].Item != "g1-a" {
		t.Fatalf("Get u3 = %v %v %v", got, ok, err)
	}
	if ttl := rdb.TTL(ctx, ServeGenKey(g1)).Val(); ttl != -1 {
		t.Fatalf("served generation has TTL %v, want none", ttl)
	}
	g2, _, err := s.Publish(ctx, generationLists("g2", 10))
	if err != nil {
		t.Fatal(err)
	}
	if cur, _ := s.Current(ctx); cur != g2 || g2 <= g1 {
		t.Fatalf("current %d, published %d then %d", cur, g1, g2)
	}
	if ttl := rdb.TTL(ctx, ServeGenKey(g1)).Val(); ttl <= 0 || ttl > time.Minute {
		t.Fatalf("replaced generation TTL %v, want (0, 1m]", ttl)
	}
	if _, ok, _ := s.Get(ctx, "u15"); ok {
		t.Fatal("u15 is not in generation 2 but Get found a list")
	}
	gen, err := s.UpdateUser(ctx, "u15", []Scored{{Item: "fresh", Score: 0.5}})
	if err != nil || gen != g2 {
		t.Fatalf("UpdateUser: gen %d, %v; want %d", gen, err, g2)
	}
	if got, ok, _ := s.Get(ctx, "u15"); !ok || got[0].Item != "fresh" {
		t.Fatalf("after UpdateUser, u15 = %v", got)
	}
	// An empty list is stored as such, distinct from "no list".
	if _, err := s.UpdateUser(ctx, "u16", nil); err != nil {
		t.Fatal(err)
	}
	if got, ok, _ := s.Get(ctx, "u16"); !ok || got == nil || len(got) != 0 {
		t.Fatalf("empty list read back as %v, %v", got, ok)
	}
	if _, err := s.UpdateUser(ctx, "", nil); !errors.Is(err, ErrBadInput) {
		t.Fatalf("empty user accepted: %v", err)
	}
}

func TestRedisUpdateUserCreatesFirstGeneration(t *testing.T) {
	rdb := redisClient(t)
	ctx := context.Background()
	s := NewRedisStore(rdb, RedisStoreOptions{})
	gen, err := s.UpdateUser(ctx, "u1", []Scored{{Item: "i1", Score: 1}})
	if err != nil || gen == 0 {
		t.Fatalf("UpdateUser with no generation: %d, %v", gen, err)
	}
	if got, ok, _ := s.Get(ctx, "u1"); !ok || got[0].Item != "i1" {
		t.Fatalf("Get u1 = %v", got)
	}
	// A later publish still swaps in above it.
	if g, _, err := s.Publish(ctx, generationLists("g", 3)); err != nil || g <= gen {
		t.Fatalf("Publish after UpdateUser: %d, %v", g, err)
	}
}

// TestRedisSwapIsAtomic runs readers against a store while generations are
// published one after another. Every read of a pinned generation must find
// the complete set of one generation, and every single Get must find a
// whole list from one generation.
func TestRedisSwapIsAtomic(t *testing.T) {
	rdb := redisClient(t)
	ctx := context.Background()
	const users = 300
	s := NewRedisStore(rdb, RedisStoreOptions{Batch: 10}) // many round trips per publish
	if _, _, err := s.Publish(ctx, generationLists("gen0", users)); err != nil {
		t.Fatal(err)
	}
	all := make([]string, users)
	for u := range all {
		all[u] = SynthUser(u)
	}
	var stop atomic.Bool
	var reads atomic.Int64
	errs := make(chan error, 8)
	var wg sync.WaitGroup
	for r := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				var err error
				if r%2 == 0 {
					err = readWholeGeneration(ctx, s, all)
				} else {
					err = readOneUser(ctx, s, all[int(reads.Load())%users])
				}
				if err != nil {
					errs <- err
					return
				}
				reads.Add(1)
			}
		}()
	}
	for g := 1; g <= 5; g++ {
		if _, _, err := s.Publish(ctx, generationLists(fmt.Sprintf("gen%d", g), users)); err != nil {
			t.Fatal(err)
		}
	}
	stop.Store(true)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if err := readWholeGeneration(ctx, s, all); err != nil {
		t.Fatal(err)
	}
	if got, _, _ := s.Get(ctx, "u0"); got[0].Item != "gen5-a" {
		t.Fatalf("after the last publish u0 reads %v", got)
	}
	t.Logf("%d reads during 5 publishes", reads.Load())
}

func readWholeGeneration(ctx context.Context, s *RedisStore, users []string) error {
	gen, err := s.Current(ctx)
	if err != nil {
		return err
	}
	lists, err := s.GetAt(ctx, gen, users...)
	if err != nil {
		return err
	}
	label := ""
	for i, l := range lists {
		if len(l) != 2 {
			return fmt.Errorf("generation %d: user %s has %v", gen, users[i], l)
		}
		if i == 0 {
			label = l[0].Item
		} else if l[0].Item != label {
			return fmt.Errorf("generation %d mixes %s and %s", gen, label, l[0].Item)
		}
	}
	return nil
}

func readOneUser(ctx context.Context, s *RedisStore, user string) error {
	l, ok, err := s.Get(ctx, user)
	if err != nil {
		return err
	}
	if !ok || len(l) != 2 || l[0].Item[:len(l[0].Item)-2] != l[1].Item[:len(l[1].Item)-2] {
		return fmt.Errorf("user %s read a partial list %v (found %v)", user, l, ok)
	}
	return nil
}

func TestRedisStalePublishRefused(t *testing.T) {
	rdb := redisClient(t)
	ctx := context.Background()
	s := NewRedisStore(rdb, RedisStoreOptions{})
	// A publisher that took generation 1 finishes after generation 2 swapped in.
	slow, err := rdb.Incr(ctx, KeyServeSeq).Result()
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Publish(ctx, generationLists("new", 3)); err != nil {
		t.Fatal(err)
	}
	if err := s.swap(ctx, slow); !errors.Is(err, ErrStaleGeneration) {
		t.Fatalf("swapping in an older generation: %v, want ErrStaleGeneration", err)
	}
	if got, _, _ := s.Get(ctx, "u1"); got[0].Item != "new-a" {
		t.Fatalf("u1 reads %v after a refused stale swap", got)
	}
}
