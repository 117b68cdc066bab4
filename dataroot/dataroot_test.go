package dataroot

import (
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tandem-ai/tandem/pipeline"
)

// testBundle is a data root with an outside directory beside it holding a
// secret, and links planted in the root: some pointing out, some in.
type testBundle struct {
	root    *Root
	dir     string // the root's directory
	outside string // a directory next to it
}

func setup(t *testing.T) *testBundle {
	t.Helper()
	base := t.TempDir()
	b := &testBundle{dir: filepath.Join(base, "data"), outside: filepath.Join(base, "outside")}
	for _, d := range []string{b.dir, b.outside, filepath.Join(b.dir, "in"), filepath.Join(b.dir, "real")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	write := func(p, s string) {
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(filepath.Join(b.outside, "secret"), "secret\n")
	write(filepath.Join(b.dir, "in", "prompts.jsonl"), "{}\n")
	write(filepath.Join(b.dir, "real", "f.txt"), "inside\n")
	link := func(target, name string) {
		if err := os.Symlink(target, filepath.Join(b.dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	link(filepath.Join(b.outside, "secret"), "secret-abs") // file, absolute target outside
	link("../outside/secret", "secret-rel")                // file, relative target outside
	link(b.outside, "outdir-abs")                          // directory, absolute target outside
	link("../outside", "outdir-rel")                       // directory, relative target outside
	link("real", "realdir")                                // directory, inside
	link("real/f.txt", "f-link")                           // file, inside
	link(filepath.Join(b.outside, "new.txt"), "dangling")  // dangling, would create outside
	r, err := Open(b.dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	b.root = r
	return b
}

func (b *testBundle) outsideUntouched(t *testing.T) {
	t.Helper()
	entries, err := os.ReadDir(b.outside)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].Name() != "secret" {
		names := make([]string, len(entries))
		for i, e := range entries {
			names[i] = e.Name()
		}
		t.Fatalf("the outside directory holds %v; want only the secret", names)
	}
	if s, _ := os.ReadFile(filepath.Join(b.outside, "secret")); string(s) != "secret\n" {
		t.Fatalf("the secret was changed to %q", s)
	}
}

// wantEscape checks the error the package promises for an escape: it names
// the field, the path and the root, wraps ErrEscape and is permanent.
func wantEscape(t *testing.T, b *testBundle, what, field, p string, err error) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s %q: no error; want an escape refused", what, p)
	}
	want := `field "` + field + `": path "` + p + `" escapes the data root`
	if !IsEscape(err) || !pipeline.IsPermanent(err) || err.Error() != want {
		t.Fatalf("%s %q: error %q (escape %v, permanent %v); want %q, an escape, permanent", what, p, err, IsEscape(err), pipeline.IsPermanent(err), want)
	}
}

func fillString(s string) func(io.Writer) error {
	return func(w io.Writer) error { _, err := io.WriteString(w, s); return err }
}

func TestReadAndWriteInside(t *testing.T) {
	b := setup(t)
	r := b.root
	for _, p := range []string{"in/prompts.jsonl", "./in/prompts.jsonl", "in/../in/prompts.jsonl", filepath.Join(b.dir, "in", "prompts.jsonl")} {
		data, err := r.ReadFile("input", p, 1<<20)
		if err != nil || string(data) != "{}\n" {
			t.Fatalf("ReadFile(%q) = %q, %v; want the file", p, data, err)
		}
	}
	// Links that stay inside are followed, for reading and for writing.
	if data, err := r.ReadFile("input", "f-link", 1<<20); err != nil || string(data) != "inside\n" {
		t.Fatalf("through a file link inside: %q, %v", data, err)
	}
	if data, err := r.ReadFile("input", "realdir/f.txt", 1<<20); err != nil || string(data) != "inside\n" {
		t.Fatalf("through a directory link inside: %q, %v", data, err)
	}
	if err := r.WriteFile("output", "realdir/out/new.jsonl", fillString("ok\n")); err != nil {
		t.Fatal(err)
	}
	if s, _ := os.ReadFile(filepath.Join(b.dir, "real", "out", "new.jsonl")); string(s) != "ok\n" {
		t.Fatalf("a write through a directory link inside left %q", s)
	}
	// Absolute paths inside are made relative; so are paths through the
	// root's real directory when it was opened through a link.
	if name, err := r.Name("output", filepath.Join(b.dir, "out", "x.jsonl")); err != nil || name != "out/x.jsonl" {
		t.Fatalf("Name(absolute inside) = %q, %v", name, err)
	}
	if name, err := r.Name("output", b.dir); err != nil || name != "." {
		t.Fatalf("Name(the root itself) = %q, %v", name, err)
	}
	viaLink := filepath.Join(t.TempDir(), "data-link")
	if err := os.Symlink(b.dir, viaLink); err != nil {
		t.Fatal(err)
	}
	lr, err := Open(viaLink)
	if err != nil {
		t.Fatal(err)
	}
	defer lr.Close()
	for _, p := range []string{filepath.Join(viaLink, "in", "prompts.jsonl"), filepath.Join(b.dir, "in", "prompts.jsonl")} {
		if _, err := lr.ReadFile("input", p, 1<<20); err != nil {
			t.Fatalf("root opened through a link, ReadFile(%q): %v", p, err)
		}
	}
	if got := r.Path("out/x.jsonl"); got != filepath.Join(b.dir, "out", "x.jsonl") {
		t.Fatalf("Path = %q", got)
	}
	b.outsideUntouched(t)
}

func TestEscapesAreRefused(t *testing.T) {
	b := setup(t)
	r := b.root
	escapes := []string{
		"..",
		"../outside/secret",
		"in/../../outside/secret",
		filepath.Join(b.outside, "secret"),
		"/etc/passwd",
		b.dir + "-sibling/x", // shares the root's prefix, is not inside it
		"secret-abs",         // file links pointing out
		"secret-rel",
		"outdir-abs/secret", // directory links pointing out
		"outdir-rel/secret",
	}
	for _, p := range escapes {
		_, err := r.Open("input", p)
		wantEscape(t, b, "Open", "input", p, err)
		_, err = r.ReadFile("data", p, 1<<20)
		wantEscape(t, b, "ReadFile", "data", p, err)
		_, err = r.Stat("model", p)
		wantEscape(t, b, "Stat", "model", p, err)
	}
	writes := append(escapes[:len(escapes):len(escapes)],
		"outdir-abs/new.txt", "outdir-rel/new.txt", // new files under directory links pointing out
		"outdir-rel/sub/new.txt", // and new directories
		"dangling",               // a dangling link whose target is outside
	)
	for _, p := range writes {
		_, err := r.OpenFile("record", p, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
		wantEscape(t, b, "OpenFile", "record", p, err)
		_, err = r.MkdirAll("out", p)
		wantEscape(t, b, "MkdirAll", "out", p, err)
		_, err = r.OpenDir("out", p)
		wantEscape(t, b, "OpenDir", "out", p, err)
		if p == "secret-abs" || p == "secret-rel" || p == "dangling" {
			continue // WriteFile replaces a link at the last step: below
		}
		err = r.WriteFile("output", p, fillString("pwned\n"))
		wantEscape(t, b, "WriteFile", "output", p, err)
	}
	b.outsideUntouched(t)

	// An atomic write renames a new file over the name, so a link in the
	// last place is replaced by a regular file inside the root; its target
	// is never written.
	for _, p := range []string{"secret-abs", "secret-rel", "dangling"} {
		if err := r.WriteFile("output", p, fillString("replaced\n")); err != nil {
			t.Fatalf("WriteFile(%q) over a link: %v", p, err)
		}
		st, err := os.Lstat(filepath.Join(b.dir, p))
		if err != nil || !st.Mode().IsRegular() {
			t.Fatalf("after WriteFile, %s is %v, %v; want a regular file", p, st, err)
		}
	}
	b.outsideUntouched(t)
}

// A directory opened with OpenDir is confined too: names under it cannot
// climb past the data root.
func TestOpenDirStaysConfined(t *testing.T) {
	b := setup(t)
	d, err := b.root.OpenDir("out", "in")
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if _, err := d.Open("prompts.jsonl"); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"../../outside/secret", "../outdir-rel/secret", "../secret-abs"} {
		if _, err := d.Open(name); err == nil || !osEscape(err) {
			t.Fatalf("Open(%q) under an OpenDir: %v; want os.Root's escape error", name, err)
		}
		if err := d.WriteFile(name, []byte("x"), 0o644); err == nil {
			t.Fatalf("WriteFile(%q) under an OpenDir succeeded", name)
		}
	}
	b.outsideUntouched(t)
}

func TestMalformedAndMissing(t *testing.T) {
	b := setup(t)
	r := b.root
	for _, c := range []struct{ p, want string }{
		{"", `field "input": path "": empty`},
		{"in/a\x00b", `field "input": path "in/a\x00b": holds a NUL byte`},
	} {
		_, err := r.Open("input", c.p)
		if err == nil || err.Error() != c.want || !pipeline.IsPermanent(err) {
			t.Fatalf("Open(%q): %v; want %q, permanent", c.p, err, c.want)
		}
	}
	_, err := r.Open("input", "in/missing.jsonl")
	want := `field "input": open "in/missing.jsonl": no such file or directory`
	if err == nil || err.Error() != want || !errors.Is(err, fs.ErrNotExist) || pipeline.IsPermanent(err) {
		t.Fatalf("missing file: %v; want %q, ErrNotExist, not marked permanent (the caller decides)", err, want)
	}
	if _, err := r.Open("input", "in"); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Fatalf("Open(a directory): %v; want not a regular file", err)
	}
	if _, err := r.ReadFile("input", "real/f.txt", 3); err == nil || !strings.Contains(err.Error(), "larger than the limit of 3 bytes") {
		t.Fatalf("ReadFile over its limit: %v", err)
	}
}

// CheckPath needs no root: it refuses what no root would accept.
func TestCheckPath(t *testing.T) {
	for _, ok := range []string{"in/x.jsonl", "./x", "a/../b", "/srv/tandem/x", "..x/y"} {
		if err := CheckPath("input", ok); err != nil {
			t.Errorf("CheckPath(%q) = %v; want nil", ok, err)
		}
	}
	for _, bad := range []string{"", "..", "../x", "a/../../x", "x\x00"} {
		err := CheckPath("input", bad)
		if err == nil || !pipeline.IsPermanent(err) || !strings.HasPrefix(err.Error(), `field "input": path "`) {
			t.Errorf("CheckPath(%q) = %v; want a permanent error naming the field", bad, err)
		}
	}
}

func TestOpenRequiresADirectory(t *testing.T) {
	if _, err := Open(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Fatal("Open of a missing directory succeeded")
	}
	if _, err := Open(" "); err == nil {
		t.Fatal("Open of a blank name succeeded")
	}
}

// Errors name the field and the path as given, never the root's directory:
// they reach API clients.
func TestErrorsNameNoServerPath(t *testing.T) {
	b := setup(t)
	for _, p := range []string{"in/missing.jsonl", "../x", "secret-abs", b.dir + "/../outside/secret", "in"} {
		_, err := b.root.Open("input", p)
		if err == nil {
			t.Fatalf("Open(%q) succeeded", p)
		}
		if msg := strings.ReplaceAll(err.Error(), strconv.Quote(p), ""); strings.Contains(msg, b.dir) || strings.Contains(msg, b.outside) || !strings.Contains(msg, `field "input"`) {
			t.Errorf("Open(%q): %q names a server directory, or not the field", p, err)
		}
	}
}

// A FIFO (or any file that is not regular) is refused before it is opened,
// by every way of opening a file: opening one for reading would wait until
// someone opened it for writing, holding the request and a worker slot.
func TestNotRegularFilesAreRefusedWithoutBlocking(t *testing.T) {
	b := setup(t)
	if err := syscall.Mkfifo(filepath.Join(b.dir, "in", "fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("fifo", filepath.Join(b.dir, "in", "fifo-link")); err != nil {
		t.Fatal(err)
	}
	opens := map[string]func(p string) error{
		"Open":     func(p string) error { f, err := b.root.Open("input", p); closeIf(f); return err },
		"ReadFile": func(p string) error { _, err := b.root.ReadFile("input", p, 10); return err },
		"OpenFile append": func(p string) error {
			f, err := b.root.OpenFile("input", p, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
			closeIf(f)
			return err
		},
		"OpenRegular": func(p string) error { f, err := OpenRegular(b.root.OS(), p, os.O_RDONLY, 0); closeIf(f); return err },
	}
	for name, open := range opens {
		for _, p := range []string{"in/fifo", "in/fifo-link"} {
			done := make(chan error, 1)
			go func() { done <- open(p) }()
			select {
			case err := <-done:
				if !errors.Is(err, ErrNotRegular) || (name != "OpenRegular" && !strings.Contains(err.Error(), `field "input": open "`+p+`": not a regular file`)) {
					t.Errorf("%s(%q): %v; want it refused as not a regular file, naming the field", name, p, err)
				}
			case <-time.After(5 * time.Second):
				t.Fatalf("%s(%q) is still waiting on the FIFO after 5 s", name, p)
			}
		}
	}
}

func closeIf(f *os.File) {
	if f != nil {
		f.Close()
	}
}
