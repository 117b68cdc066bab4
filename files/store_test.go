package files

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/tandem-ai/tandem/artifact"
)

// The store uses Redis database 12 and flushes only it.
func newStore(t *testing.T) (*Store, artifact.Store) {
	t.Helper()
	if testing.Short() {
		t.Skip("needs Redis")
	}
	addr := os.Getenv("TANDEM_TEST_REDIS_ADDR")
	if addr == "" {
		addr = "127.0.0.1:6379"
	}
	rdb := redis.NewClient(&redis.Options{Addr: addr, DB: 12})
	if err := rdb.FlushDB(context.Background()).Err(); err != nil {
		t.Fatalf("redis at %s: %v", addr, err)
	}
	t.Cleanup(func() {
		_ = rdb.FlushDB(context.Background()).Err()
		rdb.Close()
	})
	arts, err := artifact.NewLocal(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { arts.Close() })
	return NewStore(rdb, arts), arts
}

func TestStoreKeepsListsAndDeletesFiles(t *testing.T) {
	s, arts := newStore(t)
	ctx := context.Background()
	var ids []string
	for i := range 3 {
		body := fmt.Sprintf("file %d\n", i)
		f, err := s.Create(ctx, strings.NewReader(body), fmt.Sprint("f", i, ".jsonl"), PurposeBatch, int64(len(body)))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, f.ID)
	}
	if err := artifact.PutBytes(ctx, arts, "batches/b1/output.jsonl", []byte("out\n")); err != nil {
		t.Fatal(err)
	}
	for range 2 { // the second registration is a no-op
		if err := s.RegisterResult(ctx, "b1", "output", "batches/b1/output.jsonl"); err != nil {
			t.Fatal(err)
		}
	}
	out := ResultID("b1", "output")
	if f, err := s.Get(ctx, out); err != nil || f.Purpose != PurposeBatchOutput || f.Bytes != 4 {
		t.Fatalf("result file: %v %+v", err, f)
	}
	// A result whose bytes are gone is not registered.
	if err := s.RegisterResult(ctx, "b1", "errors", "batches/b1/errors.jsonl"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, ResultID("b1", "errors")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("missing result: %v", err)
	}

	page := func(o ListOptions) ([]string, bool) {
		fs, more, err := s.List(ctx, o)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, f := range fs {
			got = append(got, f.ID)
		}
		return got, more
	}
	if got, more := page(ListOptions{Limit: 10}); fmt.Sprint(got) != fmt.Sprint([]string{out, ids[2], ids[1], ids[0]}) || more {
		t.Fatalf("newest first: %v %v", got, more)
	}
	if got, more := page(ListOptions{Limit: 2, Asc: true, Purpose: PurposeBatch}); fmt.Sprint(got) != fmt.Sprint(ids[:2]) || !more {
		t.Fatalf("oldest batch files: %v %v", got, more)
	}
	if got, more := page(ListOptions{Limit: 2, Asc: true, Purpose: PurposeBatch, After: ids[1]}); fmt.Sprint(got) != fmt.Sprint(ids[2:]) || more {
		t.Fatalf("after: %v %v", got, more)
	}

	rc, f, err := s.Open(ctx, ids[1])
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(rc)
	rc.Close()
	if string(b) != "file 1\n" || f.Filename != "f1.jsonl" {
		t.Fatalf("content %q of %+v", b, f)
	}
	if err := s.Delete(ctx, ids[1]); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, ids[1]); !errors.Is(err, ErrNotFound) {
		t.Fatalf("deleted: %v", err)
	}
	if got, _ := page(ListOptions{Limit: 10, Purpose: PurposeBatch}); len(got) != 2 {
		t.Fatalf("after delete: %v", got)
	}
	for _, bad := range []string{"", "file-x", "../etc", "file-" + strings.Repeat("g", 24)} {
		if _, err := s.Get(ctx, bad); !errors.Is(err, ErrNotFound) {
			t.Errorf("id %q: %v", bad, err)
		}
	}
}
