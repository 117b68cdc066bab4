package artifact

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"github.com/tandem-ai/tandem/atomicfile"
)

// Local is a Store in a directory. Every access goes through an os.Root
// opened on that directory, so a key can never resolve outside it: ".." and
// absolute paths are refused by ValidateKey, and a symbolic link planted
// inside the directory that points outside is refused by os.Root.
type Local struct {
	dir  string // absolute
	root *os.Root
}

// NewLocal opens (creating it if needed) dir as a store.
func NewLocal(dir string) (*Local, error) {
	if dir == "" {
		return nil, errors.New("artifact: local store directory is empty")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("artifact: local store %s: %w", dir, err)
	}
	if err := os.MkdirAll(abs, 0o755); err != nil {
		return nil, fmt.Errorf("artifact: local store: %w", err)
	}
	root, err := os.OpenRoot(abs)
	if err != nil {
		return nil, fmt.Errorf("artifact: local store: %w", err)
	}
	return &Local{dir: abs, root: root}, nil
}

// Dir is the store's absolute directory.
func (l *Local) Dir() string { return l.dir }

// Put writes r to key atomically through atomicfile.WriteIn: a temporary
// file beside key, synced and renamed over it inside the root, then the
// directory synced so the rename survives a power cut.
func (l *Local) Put(ctx context.Context, key string, r io.Reader) error {
	if err := ValidateKey(key); err != nil {
		return err
	}
	if dir := path.Dir(key); dir != "." {
		if err := l.root.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("artifact: put %s: %w", key, err)
		}
	}
	err := atomicfile.WriteIn(l.root, key, func(w io.Writer) error {
		_, err := io.Copy(w, ctxReader{ctx: ctx, r: r})
		return err
	})
	if err != nil {
		return fmt.Errorf("artifact: put %s: %w", key, err)
	}
	return nil
}

// Get opens key.
func (l *Local) Get(_ context.Context, key string) (io.ReadCloser, error) {
	if err := ValidateKey(key); err != nil {
		return nil, err
	}
	f, err := l.root.Open(key)
	if err != nil {
		return nil, l.wrap("get", key, err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, l.wrap("get", key, err)
	}
	if !st.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("artifact: get %s: %w (not a regular file)", key, ErrNotFound)
	}
	return f, nil
}

// Stat describes key.
func (l *Local) Stat(_ context.Context, key string) (Info, error) {
	if err := ValidateKey(key); err != nil {
		return Info{}, err
	}
	st, err := l.root.Stat(key)
	if err != nil {
		return Info{}, l.wrap("stat", key, err)
	}
	if !st.Mode().IsRegular() {
		return Info{}, fmt.Errorf("artifact: stat %s: %w (not a regular file)", key, ErrNotFound)
	}
	return Info{Key: key, Size: st.Size(), ModTime: st.ModTime()}, nil
}

// Delete removes key.
func (l *Local) Delete(_ context.Context, key string) error {
	if err := ValidateKey(key); err != nil {
		return err
	}
	if err := l.root.Remove(key); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("artifact: delete %s: %w", key, err)
	}
	// Remove directories the delete left empty; Remove refuses non-empty
	// ones, which ends the climb.
	for dir := path.Dir(key); dir != "."; dir = path.Dir(dir) {
		if l.root.Remove(dir) != nil {
			break
		}
	}
	return nil
}

// List walks the directory under prefix. Temporary files of unfinished
// Puts (names starting with a dot) are left out.
func (l *Local) List(_ context.Context, prefix string) ([]string, error) {
	if err := validatePrefix(prefix); err != nil {
		return nil, err
	}
	start := "."
	if prefix != "" {
		start = strings.TrimSuffix(prefix, "/")
	}
	var keys []string
	err := fs.WalkDir(l.root.FS(), start, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) && p == start {
				return fs.SkipAll
			}
			return err
		}
		if strings.HasPrefix(d.Name(), ".") && p != "." {
			if d.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		if d.Type().IsRegular() {
			keys = append(keys, p)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("artifact: list %s: %w", prefix, err)
	}
	sort.Strings(keys)
	return keys, nil
}

// Location is the object's file path.
func (l *Local) Location(key string) string { return filepath.Join(l.dir, filepath.FromSlash(key)) }

// idFile holds a Local store's random id. Keys cannot start with a dot, so
// no key reaches it, and List leaves it out.
const idFile = ".store-id"

// ID is "local:" and a random id kept in the directory, written by the
// first caller: processes that share the directory (one machine, or a
// shared disk) get the same ID, any other directory another.
func (l *Local) ID(context.Context) (string, error) {
	b, err := l.root.ReadFile(idFile)
	if errors.Is(err, fs.ErrNotExist) {
		// Written aside, then linked into place: Link refuses an existing
		// name, so of two processes creating it at once one id wins, and
		// nobody reads a half-written file.
		tmp := idFile + ".tmp-" + randomID()
		if err := l.root.WriteFile(tmp, []byte(randomID()), 0o644); err != nil {
			return "", fmt.Errorf("artifact: store id: %w", err)
		}
		err = l.root.Link(tmp, idFile)
		_ = l.root.Remove(tmp)
		if err != nil && !errors.Is(err, fs.ErrExist) {
			return "", fmt.Errorf("artifact: store id: %w", err)
		}
		b, err = l.root.ReadFile(idFile)
	}
	if err != nil {
		return "", fmt.Errorf("artifact: store id: %w", err)
	}
	return "local:" + strings.TrimSpace(string(b)), nil
}

func randomID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read does not fail on supported platforms
	return hex.EncodeToString(b[:])
}

// Close releases the directory handle.
func (l *Local) Close() error { return l.root.Close() }

func (l *Local) wrap(op, key string, err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("artifact: %s %s: %w", op, key, ErrNotFound)
	}
	return fmt.Errorf("artifact: %s %s: %w", op, key, err)
}

// ctxReader stops a long copy when ctx is cancelled.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
