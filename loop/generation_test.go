package loop

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// redisDB is this package's own Redis database; tests flush only it.
const redisDB = 6

func redisClient(t *testing.T) *redis.Client {
	t.Helper()
	addr := os.Getenv("TANDEM_TEST_REDIS_ADDR")
	if addr == "" {
		addr = "127.0.0.1:6379"
	}
	rdb := redis.NewClient(&redis.Options{Addr: addr, DB: redisDB})
	if err := rdb.FlushDB(context.Background()).Err(); err != nil {
		t.Fatalf("Redis at %s (DB %d) is needed: %v", addr, redisDB, err)
	}
	t.Cleanup(func() {
		rdb.FlushDB(context.Background())
		rdb.Close()
	})
	return rdb
}

func TestStoreSaveGetRecent(t *testing.T) {
	rdb := redisClient(t)
	ctx := context.Background()
	s := NewStore(rdb, StoreOptions{RecentMax: 3, TTL: time.Minute})
	base := time.Date(2026, 11, 29, 10, 0, 0, 0, time.UTC)
	for i, id := range []string{"g1", "g2", "g3", "g4"} {
		g := Generation{ID: id, User: "u1", Template: "tpl-a", Prompt: "p", Text: "text " + id, CreatedAt: base.Add(time.Duration(i) * time.Second)}
		if err := s.Save(ctx, g); err != nil {
			t.Fatal(err)
		}
	}
	g, err := s.Get(ctx, "g2")
	if err != nil || g.Text != "text g2" || g.Template != "tpl-a" || !g.CreatedAt.Equal(base.Add(time.Second)) {
		t.Fatalf("Get g2 = %+v, %v", g, err)
	}
	if ttl := rdb.TTL(ctx, RecordKey("g2")).Val(); ttl <= 0 || ttl > time.Minute {
		t.Fatalf("record TTL = %v, want (0, 1m]", ttl)
	}
	recent, err := s.Recent(ctx, 10)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, r := range recent {
		ids = append(ids, r.ID)
	}
	if strings.Join(ids, ",") != "g4,g3,g2" {
		t.Fatalf("Recent = %v, want newest first and trimmed to 3", ids)
	}
	// An expired record drops out of the index.
	rdb.Del(ctx, RecordKey("g3"))
	recent, _ = s.Recent(ctx, 10)
	if len(recent) != 2 || rdb.ZCard(ctx, RecentKey()).Val() != 2 {
		t.Fatalf("after expiry: %d records, index %d; want 2 and 2", len(recent), rdb.ZCard(ctx, RecentKey()).Val())
	}
	if _, err := s.Get(ctx, "nope"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get unknown: %v, want ErrNotFound", err)
	}
}

func TestStoreRefusesAndCuts(t *testing.T) {
	rdb := redisClient(t)
	ctx := context.Background()
	s := NewStore(rdb, StoreOptions{})
	for _, g := range []Generation{
		{ID: ""},
		{ID: "a.b"},
		{ID: "ok", User: "bad\nuser"},
		{ID: "ok", Template: strings.Repeat("t", MaxRecordIDBytes+1)},
	} {
		if err := s.Save(ctx, g); err == nil {
			t.Errorf("Save(%+v) accepted", g)
		}
	}
	long := strings.Repeat("é", MaxRecordTextBytes) // 2 bytes per rune
	if err := s.Save(ctx, Generation{ID: "long", Text: long}); err != nil {
		t.Fatal(err)
	}
	g, err := s.Get(ctx, "long")
	if err != nil {
		t.Fatal(err)
	}
	if len(g.Text) > MaxRecordTextBytes || !strings.HasPrefix(long, g.Text) || len(g.Text) < MaxRecordTextBytes-1 {
		t.Fatalf("stored text is %d bytes, want cut to <= %d at a rune boundary", len(g.Text), MaxRecordTextBytes)
	}
}
