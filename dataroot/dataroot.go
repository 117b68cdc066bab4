// Package dataroot confines the files Tandem reads and writes on a user's
// behalf to one directory, the data root (pipeline.Config.DataRoot:
// --data-root, TANDEM_DATA_ROOT). Job args and API requests name files:
// inputs, outputs, datasets, run directories, model directories. Every such
// name goes through a Root, so no payload can make a worker read or write
// anything else on its filesystem.
//
// A job kind with a file in its args uses the one Root its worker holds:
//
//	root, err := w.Deps.DataRoot()
//	if err != nil {
//		return err
//	}
//	f, err := root.Open("input", a.Input) // read
//	if err != nil {
//		return pipeline.Permanent(err) // a missing input stays missing
//	}
//	defer f.Close()
//	...
//	err = root.WriteFile("output", a.Output, func(w io.Writer) error {
//		return encode(w, results) // temp file + rename, inside the root
//	})
//
// The first argument is the field's JSON name; every error names it. The
// rules:
//
//   - a relative path is relative to the root: "in/prompts.jsonl";
//   - an absolute path inside the root is accepted and made relative
//     ("/data/in/prompts.jsonl" with root /data), so a producer may send
//     absolute paths of a shared volume;
//   - anything that resolves outside the root is refused: "..", an absolute
//     path elsewhere, a symbolic link that points out (to a file or to a
//     directory, on the way or at the end). The error is a *PathError
//     wrapping ErrEscape, marked pipeline.Permanent, so the job is archived
//     at once, never retried: `field "output": path "../x" escapes the data
//     root`;
//   - symbolic links that stay inside the root are followed, if relative.
//     os.Root refuses absolute link targets even when they point inside, so
//     links in the data root should be relative;
//   - a path that resolves into a reserved directory is refused as well:
//     the service's own state (the data dir with its artifact store and
//     registry), which may lie inside the root, as it does by default (data
//     root ".", data dir ".tandem"). The error wraps ErrReserved, is marked
//     permanent, and names what the directory is, never where it is:
//     `field "output": path ".tandem/artifacts/x" lies in the data dir
//     (TANDEM_DATA_DIR), which no job may read or write`. The check follows
//     the links on the way and compares directories by identity too, so
//     neither a link nor another spelling (".TANDEM" on a case-insensitive
//     disk) leads in. A root that lies inside a reserved directory is
//     refused by Open (ErrRootInReserved): every path would reach it.
//   - only regular files are opened: a FIFO, a device or a socket is
//     refused before it is opened, and files are opened without blocking
//     (O_NONBLOCK), so one swapped in after the check cannot hold a reader
//     until someone writes to it (OpenRegular).
//
// Errors name the field and the path as it was given, never the root's
// directory: they reach API clients (a job's error, an answer), who have
// no business knowing the server's layout. PathError.Root keeps it for
// logs.
//
// The confinement itself is os.Root's (Go 1.24+): every open, mkdir and
// rename resolves the name one component at a time from a directory handle
// and refuses any step out, so a link swapped in between a check and a use
// still cannot lead outside. Writes are atomic (atomicfile.WriteIn: a
// temporary file and a rename, both inside the root). Libraries that work on
// directories (finetune runs, model loading) take the *os.Root that OS or
// OpenDir returns, and stay confined the same way.
package dataroot

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"syscall"

	"github.com/tandem-ai/tandem/atomicfile"
	"github.com/tandem-ai/tandem/pipeline"
)

// ErrEscape is wrapped by errors for paths that resolve outside the root.
var ErrEscape = errors.New("escapes the data root")

// ErrReserved is wrapped by errors for paths that resolve into a reserved
// directory inside the root (see Reserved).
var ErrReserved = errors.New("lies in a reserved directory")

// ErrRootInReserved is wrapped by Open's error for a root that is a
// reserved directory or lies inside one.
var ErrRootInReserved = errors.New("every job path would reach the service's state")

// Reserved is a directory that no job path may reach: the service's own
// state. It may lie inside the root (the default layout) or elsewhere; the
// root may not lie inside it.
type Reserved struct {
	Dir  string // the directory; it need not exist yet
	What string // what it is, for messages: "the data dir (TANDEM_DATA_DIR)"
}

// reservedError is a PathError's cause for a path in a reserved directory.
type reservedError struct{ what string }

func (e reservedError) Error() string {
	return "lies in " + e.what + ", which no job may read or write"
}

func (e reservedError) Is(target error) bool { return target == ErrReserved }

// PathError is a path a Root refused or could not use. Escapes and
// malformed paths (empty, a NUL byte) are returned marked permanent; file
// system errors (not found, permission, disk full) are returned as they are,
// for the caller to judge: a missing input is permanent, a full disk is not.
type PathError struct {
	Field string // the field the path came from: "input", "output", "data"...
	Path  string // the path as given
	Root  string // the data root's directory ("" from CheckPath), for logs: Error leaves it out
	Op    string // the file operation that failed ("open", "mkdir"...), if one did
	Err   error  // ErrEscape, or the cause
}

func (e *PathError) Error() string {
	switch {
	case errors.Is(e.Err, ErrReserved):
		return fmt.Sprintf("field %q: path %q %v", e.Field, e.Path, e.Err)
	case errors.Is(e.Err, ErrEscape):
		return fmt.Sprintf("field %q: path %q escapes the data root", e.Field, e.Path)
	case e.Op != "":
		return fmt.Sprintf("field %q: %s %q: %v", e.Field, e.Op, e.Path, e.Err)
	}
	return fmt.Sprintf("field %q: path %q: %v", e.Field, e.Path, e.Err)
}

func (e *PathError) Unwrap() error { return e.Err }

// IsEscape reports whether err is, or wraps, a refused escape.
func IsEscape(err error) bool { return errors.Is(err, ErrEscape) }

// IsRefused reports whether err refuses a path for where it leads: out of
// the root (ErrEscape) or into a reserved directory (ErrReserved).
func IsRefused(err error) bool { return errors.Is(err, ErrEscape) || errors.Is(err, ErrReserved) }

// CheckPath is the check that needs no root: p must be non-empty, hold no
// NUL byte, and, when relative, not climb out ("../x", "a/../../x"). Args'
// Validate methods call it, so a producer refuses such paths before they
// are enqueued; whether an absolute path lies inside the root only a worker
// can tell (Root.Name).
func CheckPath(field, p string) error {
	switch {
	case p == "":
		return pipeline.Permanent(&PathError{Field: field, Path: p, Err: errors.New("empty")})
	case strings.IndexByte(p, 0) >= 0:
		return pipeline.Permanent(&PathError{Field: field, Path: p, Err: errors.New("holds a NUL byte")})
	case !filepath.IsAbs(p) && climbs(filepath.Clean(p)):
		return pipeline.Permanent(&PathError{Field: field, Path: p, Err: ErrEscape})
	}
	return nil
}

func climbs(clean string) bool {
	return clean == ".." || strings.HasPrefix(clean, ".."+string(filepath.Separator))
}

// Root is an open data root. It is safe for concurrent use; one per process
// is enough.
type Root struct {
	dir      string // absolute, as configured
	real     string // dir with symbolic links resolved
	root     *os.Root
	reserved []reservedDir // those inside the root
}

// reservedDir is a Reserved directory inside the root.
type reservedDir struct {
	what string
	abs  string // absolute, links resolved as far as it exists
	name string // slash-separated, relative to the root
}

// Open opens dir, which must exist and be a directory, as a data root. No
// path may reach the reserved directories; a dir that is one of them, or
// lies inside one, is refused (ErrRootInReserved).
func Open(dir string, reserved ...Reserved) (*Root, error) {
	if strings.TrimSpace(dir) == "" {
		return nil, errors.New("data root: no directory given")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("data root %s: %w", dir, err)
	}
	real, err := filepath.EvalSymlinks(abs)
	if err != nil {
		return nil, fmt.Errorf("data root: %w", err)
	}
	var inside []reservedDir
	for _, res := range reserved {
		rabs, err := filepath.Abs(res.Dir)
		if err != nil || strings.TrimSpace(res.Dir) == "" {
			return nil, fmt.Errorf("data root: reserved directory %q (%s): not a usable path", res.Dir, res.What)
		}
		rreal := resolveExisting(rabs)
		if rel, err := filepath.Rel(rreal, real); err == nil && !climbs(rel) && !filepath.IsAbs(rel) {
			return nil, fmt.Errorf("data root %s lies inside %s %s: %w; make them separate directories, or put the service's state inside the data root, where jobs may not name it",
				abs, res.What, rabs, ErrRootInReserved)
		}
		if rel, err := filepath.Rel(real, rreal); err == nil && !climbs(rel) && !filepath.IsAbs(rel) {
			inside = append(inside, reservedDir{what: res.What, abs: rreal, name: filepath.ToSlash(rel)})
		}
	}
	r, err := os.OpenRoot(abs)
	if err != nil {
		return nil, fmt.Errorf("data root: %w", err)
	}
	return &Root{dir: abs, real: real, root: r, reserved: inside}, nil
}

// resolveExisting resolves the links of p's longest existing prefix and
// appends the rest, so a directory that does not exist yet is placed where
// it will be created.
func resolveExisting(p string) string {
	var rest []string
	for cur := p; ; cur = filepath.Dir(cur) {
		if real, err := filepath.EvalSymlinks(cur); err == nil {
			for i := len(rest) - 1; i >= 0; i-- {
				real = filepath.Join(real, rest[i])
			}
			return real
		}
		if filepath.Dir(cur) == cur {
			return p
		}
		rest = append(rest, filepath.Base(cur))
	}
}

// Dir is the root's absolute directory.
func (r *Root) Dir() string { return r.dir }

// OS is the underlying os.Root, for libraries that take one. Names passed
// to it must come from Name: it refuses escapes, but with os.Root's plain
// error rather than a PathError.
func (r *Root) OS() *os.Root { return r.root }

// Close releases the directory handle.
func (r *Root) Close() error { return r.root.Close() }

// Name turns a path given in field into a slash-separated name inside the
// root, by the rules in the package comment. Whether it leads out is
// decided when the name is used (os.Root, one component at a time); whether
// it leads into a reserved directory is decided here, following the links
// that exist now. A link swapped in between this check and the use could
// still lead into a reserved directory; only someone who can write the data
// root's directories themselves can do that, and no job can.
func (r *Root) Name(field, p string) (string, error) {
	if err := CheckPath(field, p); err != nil {
		if pe := (*PathError)(nil); errors.As(err, &pe) {
			pe.Root = r.dir
		}
		return "", err
	}
	name, err := r.lexicalName(field, p)
	if err != nil {
		return "", err
	}
	if err := r.checkReserved(field, p, name); err != nil {
		return "", err
	}
	return name, nil
}

// lexicalName is Name without the reserved check.
func (r *Root) lexicalName(field, p string) (string, error) {
	c := filepath.Clean(p)
	if !filepath.IsAbs(c) {
		return filepath.ToSlash(c), nil
	}
	for _, base := range []string{r.dir, r.real} {
		if rel, err := filepath.Rel(base, c); err == nil && !climbs(rel) && !filepath.IsAbs(rel) {
			return filepath.ToSlash(rel), nil
		}
	}
	return "", r.escape(field, p)
}

// maxLinkHops bounds the links checkReserved follows for one path, as the
// kernel's own limit (ELOOP) does.
const maxLinkHops = 40

// checkReserved refuses a name that leads into a reserved directory: by its
// spelling (case-folded, so another spelling on a case-insensitive disk
// does not pass), through the links on its way, or by being the same
// directory under another name. Links that lead out of the root end the
// walk: using such a name is refused as an escape (os.Root), or, for an
// atomic write, replaces the link.
func (r *Root) checkReserved(field, p, name string) error {
	if len(r.reserved) == 0 {
		return nil
	}
	var ids []fs.FileInfo // the reserved directories that exist now
	for _, res := range r.reserved {
		st, err := os.Stat(res.abs)
		if err != nil || !st.IsDir() {
			st = nil
		}
		ids = append(ids, st)
	}
	// hit is the deepest reserved directory met on the way, so that the
	// message names the artifact store rather than the data dir around it.
	hit := -1
	check := func(n string, st fs.FileInfo) {
		for i, res := range r.reserved {
			if within(n, res.name) || st != nil && ids[i] != nil && st.IsDir() && os.SameFile(st, ids[i]) {
				if hit < 0 || len(res.name) > len(r.reserved[hit].name) {
					hit = i
				}
			}
		}
	}
	result := func() error {
		if hit < 0 {
			return nil
		}
		return pipeline.Permanent(&PathError{Field: field, Path: p, Root: r.dir, Err: reservedError{what: r.reserved[hit].what}})
	}
	var done []string
	rest := strings.Split(name, "/")
	for hops := 0; len(rest) > 0; {
		c := rest[0]
		rest = rest[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			if len(done) == 0 {
				return result() // out of the root: refused where it is used
			}
			done = done[:len(done)-1]
			continue
		}
		cur := path.Join(path.Join(done...), c)
		st, err := r.root.Lstat(cur)
		if err != nil {
			// Not there yet (or not readable): the rest is created as
			// spelt, so its spelling decides.
			check(path.Join(append([]string{cur}, rest...)...), nil)
			return result()
		}
		if st.Mode()&fs.ModeSymlink == 0 {
			check(cur, st)
			done = append(done, c)
			continue
		}
		if hops++; hops > maxLinkHops {
			return pipeline.Permanent(&PathError{Field: field, Path: p, Root: r.dir, Op: "resolve", Err: errors.New("too many levels of symbolic links")})
		}
		target, err := r.root.Readlink(cur)
		if err != nil || filepath.IsAbs(target) {
			return result() // os.Root refuses absolute targets where the name is used
		}
		rest = append(strings.Split(filepath.ToSlash(target), "/"), rest...)
	}
	check(path.Join(done...), nil)
	return result()
}

// within reports whether the slash name n is dir or lies under it,
// comparing case-insensitively.
func within(n, dir string) bool {
	if n == "" {
		n = "."
	}
	if len(n) < len(dir) || !strings.EqualFold(n[:len(dir)], dir) {
		return false
	}
	return len(n) == len(dir) || n[len(dir)] == '/'
}

// Path is the absolute path of a name inside the root, for results and
// messages ("written to /data/out/results.jsonl").
func (r *Root) Path(name string) string { return filepath.Join(r.dir, filepath.FromSlash(name)) }

// Open opens the regular file p for reading (OpenRegular: anything else is
// refused before it is opened).
func (r *Root) Open(field, p string) (*os.File, error) {
	return r.OpenFile(field, p, os.O_RDONLY, 0)
}

// ErrNotRegular is wrapped by the errors for a path that names something
// other than a regular file: a directory, a FIFO, a device, a socket.
var ErrNotRegular = errors.New("not a regular file")

// OpenRegular opens name inside root with os.OpenFile's flag and perm,
// refusing anything that is not a regular file (ErrNotRegular) before it is
// opened: a FIFO would hold its reader, and a worker slot, until someone
// opened it for writing. The name is checked first (a stat through root),
// then opened with O_NONBLOCK, which a regular file ignores and a FIFO or
// device swapped in after the check turns into an immediate answer, and
// checked again on the open file. Every reader of job files goes through it.
func OpenRegular(root *os.Root, name string, flag int, perm os.FileMode) (*os.File, error) {
	if st, err := root.Stat(name); err == nil && !st.Mode().IsRegular() {
		return nil, &fs.PathError{Op: "open", Path: name, Err: ErrNotRegular}
	}
	f, err := root.OpenFile(name, flag|syscall.O_NONBLOCK, perm)
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err == nil && !st.Mode().IsRegular() {
		err = ErrNotRegular
	}
	if err != nil {
		f.Close()
		return nil, &fs.PathError{Op: "open", Path: name, Err: err}
	}
	return f, nil
}

// ReadFile reads the regular file p whole, refusing one larger than limit
// bytes.
func (r *Root) ReadFile(field, p string, limit int64) ([]byte, error) {
	f, err := r.Open(field, p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	tooLarge := &PathError{Field: field, Path: p, Root: r.dir, Op: "read", Err: fmt.Errorf("larger than the limit of %d bytes", limit)}
	if st, err := f.Stat(); err == nil && st.Size() > limit {
		return nil, tooLarge // refused before anything is read
	}
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, &PathError{Field: field, Path: p, Root: r.dir, Op: "read", Err: err}
	}
	if int64(len(b)) > limit {
		return nil, tooLarge // it grew while being read
	}
	return b, nil
}

// Stat describes p, following links that stay inside the root.
func (r *Root) Stat(field, p string) (fs.FileInfo, error) {
	name, err := r.Name(field, p)
	if err != nil {
		return nil, err
	}
	st, err := r.root.Stat(name)
	if err != nil {
		return nil, r.wrap(field, p, err)
	}
	return st, nil
}

// WriteFile writes p atomically through fill (atomicfile.WriteIn): readers
// see the old file or the whole new one. Missing parent directories are
// created.
func (r *Root) WriteFile(field, p string, fill func(w io.Writer) error) error {
	name, err := r.Name(field, p)
	if err != nil {
		return err
	}
	if err := r.mkdirAll(field, p, path.Dir(name)); err != nil {
		return err
	}
	if err := atomicfile.WriteIn(r.root, name, fill); err != nil {
		return r.wrap(field, p, err)
	}
	return nil
}

// OpenFile opens the regular file p with os.OpenFile's flags (OpenRegular:
// anything else is refused before it is opened); with os.O_CREATE, missing
// parent directories are created. For appends and other writes that are not
// whole-file replacements (use WriteFile for those).
func (r *Root) OpenFile(field, p string, flag int, perm os.FileMode) (*os.File, error) {
	name, err := r.Name(field, p)
	if err != nil {
		return nil, err
	}
	if flag&os.O_CREATE != 0 {
		if err := r.mkdirAll(field, p, path.Dir(name)); err != nil {
			return nil, err
		}
	}
	f, err := OpenRegular(r.root, name, flag, perm)
	if err != nil {
		return nil, r.wrap(field, p, err)
	}
	return f, nil
}

// MkdirAll creates the directory p and its parents, and returns its name
// inside the root.
func (r *Root) MkdirAll(field, p string) (string, error) {
	name, err := r.Name(field, p)
	if err != nil {
		return "", err
	}
	return name, r.mkdirAll(field, p, name)
}

func (r *Root) mkdirAll(field, p, name string) error {
	if name == "." {
		return nil
	}
	if err := r.root.MkdirAll(name, 0o755); err != nil {
		return r.wrap(field, p, err)
	}
	return nil
}

// OpenDir opens the directory p as an os.Root of its own, for code that
// works inside one directory (a fine-tune's run directory, a model
// directory). It stays confined: nothing under it can reach outside the data
// root either. Close it when done.
func (r *Root) OpenDir(field, p string) (*os.Root, error) {
	name, err := r.Name(field, p)
	if err != nil {
		return nil, err
	}
	d, err := r.root.OpenRoot(name)
	if err != nil {
		return nil, r.wrap(field, p, err)
	}
	return d, nil
}

func (r *Root) escape(field, p string) error {
	return pipeline.Permanent(&PathError{Field: field, Path: p, Root: r.dir, Err: ErrEscape})
}

// wrap turns an os.Root error into a PathError naming the field: an escape
// os.Root caught (a symbolic link pointing out) becomes ErrEscape, marked
// permanent; anything else keeps its cause.
func (r *Root) wrap(field, p string, err error) error {
	if osEscape(err) {
		return r.escape(field, p)
	}
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return &PathError{Field: field, Path: p, Root: r.dir, Op: strings.TrimSuffix(pe.Op, "at"), Err: pe.Err}
	}
	var le *os.LinkError
	if errors.As(err, &le) {
		return &PathError{Field: field, Path: p, Root: r.dir, Op: strings.TrimSuffix(le.Op, "at"), Err: le.Err}
	}
	return &PathError{Field: field, Path: p, Root: r.dir, Op: "use", Err: err}
}

// osEscapeText is the message of os.Root's (unexported) error for a name
// that leaves the root. It is matched by text because os exports no value
// to compare with; the tests fail if a Go release changes it.
const osEscapeText = "path escapes from parent"

func osEscape(err error) bool {
	for _, e := range causes(err) {
		if e.Error() == osEscapeText {
			return true
		}
	}
	return false
}

// causes lists err and everything it wraps, depth first.
func causes(err error) []error {
	if err == nil {
		return nil
	}
	out := []error{err}
	switch u := err.(type) {
	case interface{ Unwrap() error }:
		out = append(out, causes(u.Unwrap())...)
	case interface{ Unwrap() []error }:
		for _, e := range u.Unwrap() {
			out = append(out, causes(e)...)
		}
	}
	return out
}

// Lazy is a data root given explicitly (Set) or opened on first use (Get).
type Lazy struct {
	mu   sync.Mutex
	root *Root
}

// Set installs r.
func (l *Lazy) Set(r *Root) {
	l.mu.Lock()
	l.root = r
	l.mu.Unlock()
}

// Get returns the root Set installed or, without one, the root open
// returns, which it keeps.
func (l *Lazy) Get(open func() (*Root, error)) (*Root, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.root == nil {
		r, err := open()
		if err != nil {
			return nil, err // not kept: the next job tries again
		}
		l.root = r
	}
	return l.root, nil
}
