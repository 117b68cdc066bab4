package artifact

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/tandem-ai/tandem/limits"
)

// Store keeps objects by key. Implementations are safe for concurrent use.
type Store interface {
	// Put stores r's bytes under key, replacing any previous object
	// atomically: readers see the old object or the complete new one.
	Put(ctx context.Context, key string, r io.Reader) error
	// Get opens key for reading; the caller closes it. A missing key gives
	// an error wrapping ErrNotFound.
	Get(ctx context.Context, key string) (io.ReadCloser, error)
	// Stat describes key, or returns an error wrapping ErrNotFound.
	Stat(ctx context.Context, key string) (Info, error)
	// Delete removes key; a missing key is not an error.
	Delete(ctx context.Context, key string) error
	// List returns the keys that start with prefix, sorted. prefix is ""
	// or a valid key followed by "/".
	List(ctx context.Context, prefix string) ([]string, error)
	// Location names key for people: a file path for Local, a
	// nats-object:// URL for NATS.
	Location(key string) string
	// ID tells stores apart: two processes whose stores have the same ID
	// see the same objects. It starts with the kind ("local:", "nats:"),
	// which DescribeID keeps.
	ID(ctx context.Context) (string, error)
	// Close releases the store's resources (not the NATS connection, which
	// belongs to the caller).
	Close() error
}

// Info describes a stored object.
type Info struct {
	Key     string    `json:"key"`
	Size    int64     `json:"size"`
	ModTime time.Time `json:"mod_time"`
}

// DescribeID names the store an ID stands for, for people and without
// paths: "local" or "nats:BUCKET".
func DescribeID(id string) string {
	kind, rest, _ := strings.Cut(id, ":")
	if kind == "nats" {
		bucket, _, _ := strings.Cut(rest, "@")
		return kind + ":" + bucket
	}
	return kind
}

// ErrNotFound is wrapped by errors for keys that hold no object.
var ErrNotFound = errors.New("artifact: not found")

// ErrBadKey is wrapped by errors for keys that fail ValidateKey.
var ErrBadKey = errors.New("artifact: bad key")

// MaxKeyLen bounds a key; keys are file paths and object names.
const MaxKeyLen = limits.ArtifactKeyLen

// ValidateKey reports whether key is a well-formed relative key: 1 to
// MaxKeyLen bytes, segments separated by "/", each segment non-empty, not
// "." or "..", not starting with "." (reserved for temporary files), and made
// of A-Z a-z 0-9 . _ - only. The narrow alphabet rules out absolute paths,
// backslashes, NUL bytes and every other way of naming a parent directory,
// before the store's own confinement is even reached.
func ValidateKey(key string) error {
	if key == "" {
		return fmt.Errorf("%w: empty", ErrBadKey)
	}
	if len(key) > MaxKeyLen {
		return fmt.Errorf("%w: %d bytes, limit %d", ErrBadKey, len(key), MaxKeyLen)
	}
	for i, seg := range strings.Split(key, "/") {
		switch {
		case seg == "":
			return fmt.Errorf("%w: %q has an empty segment %d (leading, trailing or double slash)", ErrBadKey, key, i)
		case seg == "." || seg == "..":
			return fmt.Errorf("%w: %q has a %q segment", ErrBadKey, key, seg)
		case seg[0] == '.':
			return fmt.Errorf("%w: %q has segment %q starting with a dot", ErrBadKey, key, seg)
		}
		for j := 0; j < len(seg); j++ {
			if !keyByte(seg[j]) {
				return fmt.Errorf("%w: %q has %q in segment %q (allowed: A-Z a-z 0-9 . _ -)", ErrBadKey, key, seg[j], seg)
			}
		}
	}
	return nil
}

// validatePrefix accepts "" or a valid key followed by "/".
func validatePrefix(prefix string) error {
	if prefix == "" {
		return nil
	}
	if !strings.HasSuffix(prefix, "/") {
		return fmt.Errorf("%w: prefix %q must end with /", ErrBadKey, prefix)
	}
	return ValidateKey(strings.TrimSuffix(prefix, "/"))
}

func keyByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-'
}

// PutBytes stores b under key.
func PutBytes(ctx context.Context, s Store, key string, b []byte) error {
	return s.Put(ctx, key, bytes.NewReader(b))
}

// ReadAll reads the object under key, refusing objects larger than limit
// bytes so a corrupt or hostile object cannot exhaust memory.
func ReadAll(ctx context.Context, s Store, key string, limit int64) ([]byte, error) {
	rc, err := s.Get(ctx, key)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, limit+1))
	if err != nil {
		return nil, fmt.Errorf("artifact: read %s: %w", key, err)
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("artifact: %s is larger than %d bytes", key, limit)
	}
	return b, nil
}
