package atomicfile

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
)

func TestWriteReplacesWholeOrNotAtAll(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "out.jsonl")
	if err := WriteBytes(path, []byte("old\n")); err != nil {
		t.Fatal(err)
	}
	boom := errors.New("boom")
	err := Write(path, func(w io.Writer) error {
		if _, err := io.WriteString(w, "half of the new"); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("Write returned %v; want the fill error", err)
	}
	if b, _ := os.ReadFile(path); string(b) != "old\n" {
		t.Fatalf("after a failed write the file holds %q; want the old content", b)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Fatalf("a failed write left %d entries in the directory; want only the target", len(entries))
	}
	if err := WriteBytes(path, []byte("new\n")); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(path); string(b) != "new\n" || st.Mode().Perm() != Mode {
		t.Fatalf("file holds %q with mode %v; want %q with %v", b, st.Mode().Perm(), "new\n", os.FileMode(Mode))
	}
}

// WriteIn keeps the temporary file and the rename inside the root: names
// that climb out, directly or through a symbolic link, are refused and
// nothing is written outside.
func TestWriteInStaysInsideTheRoot(t *testing.T) {
	dir, outside := t.TempDir(), t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(dir, "out")); err != nil {
		t.Fatal(err)
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	if err := WriteBytesIn(root, "sub/a.txt", []byte("a\n")); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "sub", "a.txt")); string(b) != "a\n" {
		t.Fatalf("sub/a.txt holds %q", b)
	}
	for _, name := range []string{"../x", "out/x", filepath.Join(outside, "x"), "sub/../../x"} {
		if err := WriteBytesIn(root, name, []byte("no")); err == nil {
			t.Errorf("WriteBytesIn(%q) succeeded; want it refused", name)
		}
	}
	entries, _ := os.ReadDir(outside)
	if len(entries) != 0 {
		t.Fatalf("refused writes left %d entries outside the root", len(entries))
	}
}
