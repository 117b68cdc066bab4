package registry

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tandem-ai/tandem/model"
)

// testDB is the fine-tuning packages' Redis database. Tests in several
// packages share it and run at once, so none flushes it: each uses model
// names of its own and deletes their keys.
const testDB = 8

func testRedis(t *testing.T) redis.UniversalClient {
	t.Helper()
	addr := os.Getenv("TANDEM_TEST_REDIS_ADDR")
	if addr == "" {
		addr = "127.0.0.1:6379"
	}
	rdb := redis.NewClient(&redis.Options{Addr: addr, DB: testDB})
	ctx := context.Background()
	if err := rdb.Ping(ctx).Err(); err != nil {
		t.Fatalf("redis at %s: %v", addr, err)
	}
	t.Cleanup(func() { rdb.Close() })
	return rdb
}

// uniqueName returns a model name no other test run uses and deletes its
// keys at the end.
func uniqueName(t *testing.T, rdb redis.UniversalClient, base string) string {
	t.Helper()
	name := fmt.Sprintf("%s-%d", base, time.Now().UnixNano())
	t.Cleanup(func() {
		ctx := context.Background()
		rdb.Del(ctx, keySeq(name), keyVersions(name), keyPromoted(name))
		rdb.SRem(ctx, keyNames(), name)
	})
	return name
}

func saveModel(t *testing.T, dir string, seed int64) *model.Model {
	t.Helper()
	m, err := model.New(model.Config{NLayer: 1, NHead: 1, NEmbd: 8, NPositions: 8, VocabSize: 16, LayerNormEpsilon: 1e-5}, seed)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.SaveDir(dir); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestPromotionIsSeenByTheNextResolution(t *testing.T) {
	ctx := context.Background()
	tmp := t.TempDir()
	rdb := testRedis(t)
	reg := New(rdb, filepath.Join(tmp, "registry"))
	bot := uniqueName(t, rdb, "support-bot")

	m1 := saveModel(t, filepath.Join(tmp, "run1"), 1)
	m2 := saveModel(t, filepath.Join(tmp, "run2"), 2)
	v1, err := reg.Register(ctx, bot, filepath.Join(tmp, "run1"), Version{Parent: "scratch", DatasetSHA256: "abc", Metrics: map[string]float64{"dev_loss": 2}})
	if err != nil {
		t.Fatal(err)
	}
	v2, err := reg.Register(ctx, bot, filepath.Join(tmp, "run2"), Version{Parent: v1.Ref(), Metrics: map[string]float64{"dev_loss": 1.5}})
	if err != nil {
		t.Fatal(err)
	}
	if v1.Version != 1 || v2.Version != 2 {
		t.Fatalf("versions %d, %d", v1.Version, v2.Version)
	}
	// Nothing promoted yet: the bare name is an error, name@N works.
	if _, _, err := reg.Resolve(ctx, bot); !errors.Is(err, ErrNoPromoted) {
		t.Fatalf("unpromoted: %v", err)
	}
	if _, err := reg.Promote(ctx, bot, 1); err != nil {
		t.Fatal(err)
	}
	check := func(ref string, want *model.Model) {
		t.Helper()
		dir, ok, err := reg.Resolve(ctx, ref)
		if err != nil || !ok {
			t.Fatalf("resolve %s: %q %v %v", ref, dir, ok, err)
		}
		got, err := model.LoadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		for i := range got.Params {
			if got.Params[i] != want.Params[i] {
				t.Fatalf("resolve %s: %s holds other weights", ref, dir)
			}
		}
	}
	check(bot, m1)
	check(bot+"@2", m2)
	if _, err := reg.Promote(ctx, bot, 2); err != nil {
		t.Fatal(err)
	}
	check(bot, m2)

	vs, err := reg.Versions(ctx, bot)
	if err != nil || len(vs) != 2 || vs[0].Promoted || !vs[1].Promoted || vs[1].Parent != bot+"@1" {
		t.Fatalf("versions: %+v %v", vs, err)
	}
	names, err := reg.Names(ctx)
	if err != nil || !slices.Contains(names, bot) {
		t.Fatalf("names %v %v", names, err)
	}
	// Not registry references: the caller falls back to paths.
	for _, ref := range []string{"builtin:tiny", "/tmp/model", "other-model", "Bad Name"} {
		if _, ok, err := reg.Resolve(ctx, ref); ok || err != nil {
			t.Errorf("resolve %q: ok=%v err=%v, want a fallback", ref, ok, err)
		}
	}
	if _, _, err := reg.Resolve(ctx, bot+"@9"); !errors.Is(err, ErrNotFound) {
		t.Errorf("missing version: %v", err)
	}
	if _, err := reg.Promote(ctx, bot, 9); !errors.Is(err, ErrNotFound) {
		t.Errorf("promote missing: %v", err)
	}
}

func TestParseRef(t *testing.T) {
	for ref, want := range map[string]int{"a": 0, "a@3": 3, "a@v2": 2} {
		if _, v, err := ParseRef(ref); err != nil || v != want {
			t.Errorf("%s: %d %v", ref, v, err)
		}
	}
	for _, ref := range []string{"", "a@0", "a@x", "A", "a/b", "builtin:tiny"} {
		if _, _, err := ParseRef(ref); err == nil {
			t.Errorf("%q accepted", ref)
		}
	}
}
