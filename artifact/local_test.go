package artifact

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func newLocal(t *testing.T) *Local {
	t.Helper()
	l, err := NewLocal(filepath.Join(t.TempDir(), "artifacts"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func TestLocalStore(t *testing.T) {
	l := newLocal(t)
	testStore(t, l)
	if got := l.Location("a/b"); got != filepath.Join(l.Dir(), "a", "b") {
		t.Fatalf("Location = %q", got)
	}
	// No temporary files survive, failed Put included.
	err := filepath.Walk(l.Dir(), func(p string, fi os.FileInfo, err error) error {
		if err == nil && strings.Contains(fi.Name(), ".tmp-") {
			t.Errorf("temporary file left behind: %s", p)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

// A symbolic link inside the store that points outside must not let a key
// read or write there.
func TestLocalRefusesSymlinkEscape(t *testing.T) {
	l := newLocal(t)
	ctx := context.Background()
	outside := t.TempDir()
	if err := os.WriteFile(filepath.Join(outside, "secret"), []byte("secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(l.Dir(), "escape")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(outside, "secret"), filepath.Join(l.Dir(), "secretlink")); err != nil {
		t.Fatal(err)
	}
	// Relative links that climb out are refused too.
	rel, err := filepath.Rel(l.Dir(), outside)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(rel, filepath.Join(l.Dir(), "relescape")); err != nil {
		t.Fatal(err)
	}

	for _, key := range []string{"escape/secret", "secretlink", "relescape/secret"} {
		if rc, err := l.Get(ctx, key); err == nil {
			b, _ := io.ReadAll(rc)
			rc.Close()
			t.Errorf("get %s read %q from outside the store", key, b)
		}
		if _, err := l.Stat(ctx, key); err == nil {
			t.Errorf("stat %s succeeded through an escaping link", key)
		}
	}
	for _, key := range []string{"escape/planted", "relescape/planted", "escape/sub/planted"} {
		if err := PutBytes(ctx, l, key, []byte("x")); err == nil {
			t.Errorf("put %s succeeded through an escaping link", key)
		}
	}
	entries, err := os.ReadDir(outside)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 {
		t.Fatalf("files were written outside the store: %v", entries)
	}
	if _, err := l.List(ctx, "escape/"); err == nil {
		t.Error("list through an escaping link succeeded")
	}
}

// While a Put is in progress, readers see the previous object.
func TestLocalPutIsAtomic(t *testing.T) {
	l := newLocal(t)
	ctx := context.Background()
	if err := PutBytes(ctx, l, "k", []byte("old")); err != nil {
		t.Fatal(err)
	}
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() { done <- l.Put(ctx, "k", pr) }()
	if _, err := pw.Write([]byte("new-part-1 ")); err != nil {
		t.Fatal(err)
	}
	// The write above has been consumed by Put's copy; the object is still old.
	if got, err := ReadAll(ctx, l, "k", 100); err != nil || string(got) != "old" {
		t.Fatalf("mid-put read %q, %v; want old", got, err)
	}
	if _, err := pw.Write([]byte("new-part-2")); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got, err := ReadAll(ctx, l, "k", 100); err != nil || string(got) != "new-part-1 new-part-2" {
		t.Fatalf("after put: %q, %v", got, err)
	}
}

func TestLocalCancelledPut(t *testing.T) {
	l := newLocal(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := l.Put(ctx, "k", strings.NewReader("data")); !errors.Is(err, context.Canceled) {
		t.Fatalf("put with a cancelled ctx: %v", err)
	}
	if _, err := l.Stat(context.Background(), "k"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a cancelled put left an object: %v", err)
	}
}

func TestOpen(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(context.Background(), Options{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if l, ok := s.(*Local); !ok || l.Dir() != filepath.Join(dir, "artifacts") {
		t.Fatalf("default store = %#v", s)
	}
	if _, err := Open(context.Background(), Options{Spec: "nats"}); err == nil {
		t.Fatal("nats store without a connection opened")
	}
	if _, err := Open(context.Background(), Options{Spec: "s3:bucket"}); err == nil || !strings.Contains(err.Error(), EnvStore) {
		t.Fatalf("unknown spec: %v", err)
	}
	if _, err := Open(context.Background(), Options{}); err == nil {
		t.Fatal("local store without a data dir opened")
	}
}

// Two opens of one directory have one ID, a second directory another, and
// the file holding it is no key: List leaves it out.
func TestLocalID(t *testing.T) {
	ctx := context.Background()
	a := newLocal(t)
	again, err := NewLocal(a.Dir())
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	other := newLocal(t)
	idA, errA := a.ID(ctx)
	idAgain, errAgain := again.ID(ctx)
	idOther, errOther := other.ID(ctx)
	if err := errors.Join(errA, errAgain, errOther); err != nil {
		t.Fatal(err)
	}
	if idA != idAgain || idA == idOther || !strings.HasPrefix(idA, "local:") || DescribeID(idA) != "local" {
		t.Fatalf("IDs: %q, reopened %q, other directory %q", idA, idAgain, idOther)
	}
	if keys, err := a.List(ctx, ""); err != nil || len(keys) != 0 {
		t.Fatalf("List after ID: %v, %v", keys, err)
	}
}
