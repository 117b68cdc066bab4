package artifact

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"
)

// testStore runs the behaviour every Store must have.
func testStore(t *testing.T, s Store) {
	ctx := context.Background()
	if err := PutBytes(ctx, s, "batches/b1/output.jsonl", []byte("one\n")); err != nil {
		t.Fatal(err)
	}
	if err := PutBytes(ctx, s, "batches/b1/output.jsonl", []byte("two\n")); err != nil {
		t.Fatal(err)
	}
	got, err := ReadAll(ctx, s, "batches/b1/output.jsonl", 1<<20)
	if err != nil || string(got) != "two\n" {
		t.Fatalf("after overwrite: %q, %v; want \"two\\n\"", got, err)
	}
	info, err := s.Stat(ctx, "batches/b1/output.jsonl")
	if err != nil || info.Size != 4 || info.Key != "batches/b1/output.jsonl" {
		t.Fatalf("stat = %+v, %v", info, err)
	}
	if _, err := ReadAll(ctx, s, "batches/b1/output.jsonl", 2); err == nil {
		t.Fatal("ReadAll over its limit succeeded")
	}

	if _, err := s.Get(ctx, "batches/none"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("get of a missing key: %v; want ErrNotFound", err)
	}
	if _, err := s.Stat(ctx, "batches/none"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("stat of a missing key: %v; want ErrNotFound", err)
	}

	for _, k := range []string{"batches/b1/chunks/0.jsonl", "batches/b1/chunks/1.jsonl", "batches/b2/x"} {
		if err := PutBytes(ctx, s, k, []byte(k)); err != nil {
			t.Fatal(err)
		}
	}
	keys, err := s.List(ctx, "batches/b1/")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"batches/b1/chunks/0.jsonl", "batches/b1/chunks/1.jsonl", "batches/b1/output.jsonl"}
	if strings.Join(keys, ",") != strings.Join(want, ",") {
		t.Fatalf("list = %v; want %v", keys, want)
	}
	if keys, err := s.List(ctx, "nothing/"); err != nil || len(keys) != 0 {
		t.Fatalf("list of an empty prefix = %v, %v", keys, err)
	}

	if err := s.Delete(ctx, "batches/b2/x"); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx, "batches/b2/x"); err != nil {
		t.Fatalf("second delete: %v; want nil", err)
	}
	if _, err := s.Get(ctx, "batches/b2/x"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("get after delete: %v", err)
	}

	// A failed Put leaves the previous object whole.
	failing := io.MultiReader(strings.NewReader("partial"), errReader{})
	if err := s.Put(ctx, "batches/b1/output.jsonl", failing); err == nil {
		t.Fatal("put from a failing reader succeeded")
	}
	got, err = ReadAll(ctx, s, "batches/b1/output.jsonl", 1<<20)
	if err != nil || string(got) != "two\n" {
		t.Fatalf("after a failed put: %q, %v; want the old object", got, err)
	}

	// Larger than one NATS chunk (128 KiB), so multi-chunk objects round-trip.
	big := bytes.Repeat([]byte("0123456789abcdef"), 40_000)
	if err := PutBytes(ctx, s, "big", big); err != nil {
		t.Fatal(err)
	}
	if got, err := ReadAll(ctx, s, "big", 1<<22); err != nil || !bytes.Equal(got, big) {
		t.Fatalf("big object: %d bytes, %v", len(got), err)
	}

	for _, k := range badKeys {
		if err := PutBytes(ctx, s, k, []byte("x")); !errors.Is(err, ErrBadKey) {
			t.Errorf("put %q: %v; want ErrBadKey", k, err)
		}
		if _, err := s.Get(ctx, k); !errors.Is(err, ErrBadKey) {
			t.Errorf("get %q: %v; want ErrBadKey", k, err)
		}
	}
	if _, err := s.List(ctx, "batches"); !errors.Is(err, ErrBadKey) {
		t.Errorf("list without a trailing slash: %v; want ErrBadKey", err)
	}
}

var badKeys = []string{
	"", "/etc/passwd", "../escape", "a/../../b", "a//b", "a/./b", "a/", ".hidden", "a/.tmp",
	`a\b`, "a\x00b", "a b", "C:/x", strings.Repeat("k", MaxKeyLen+1),
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errors.New("reader broke") }

func TestValidateKey(t *testing.T) {
	for _, k := range []string{"a", "batches/batch_1/output.jsonl", "x/y-z_1.2"} {
		if err := ValidateKey(k); err != nil {
			t.Errorf("ValidateKey(%q) = %v", k, err)
		}
	}
	for _, k := range badKeys {
		if err := ValidateKey(k); !errors.Is(err, ErrBadKey) {
			t.Errorf("ValidateKey(%q) = %v; want ErrBadKey", k, err)
		}
	}
}
