package dataroot

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tandem-ai/tandem/pipeline"
)

const (
	whatDataDir   = "the data dir (TANDEM_DATA_DIR)"
	whatArtifacts = "the artifact store (TANDEM_ARTIFACT_STORE)"
)

// reservedBundle is the default layout: the service's state (.tandem, with
// its artifact store holding another batch's output) inside the data root,
// and links in the root that lead into it.
type reservedBundle struct {
	root   *Root
	dir    string
	state  string // the data dir, inside dir
	output string // another batch's output, in the artifact store
}

func setupReserved(t *testing.T) *reservedBundle {
	t.Helper()
	dir := t.TempDir()
	b := &reservedBundle{dir: dir, state: filepath.Join(dir, ".tandem")}
	b.output = filepath.Join(b.state, "artifacts", "batches", "b1", "output.jsonl")
	for _, d := range []string{filepath.Dir(b.output), filepath.Join(dir, "real")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(b.output, []byte("theirs\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for target, name := range map[string]string{
		".tandem": "state", // a directory link into the data dir
		".tandem/artifacts/batches/b1/output.jsonl": "their-output", // a file link to their output
		"state/artifacts": "arts",    // a link through a link
		"real":            "realdir", // a link that stays out of it
	} {
		if err := os.Symlink(target, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	r, err := Open(dir, Reserved{Dir: filepath.Join(b.state, "artifacts"), What: whatArtifacts}, Reserved{Dir: b.state, What: whatDataDir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	b.root = r
	return b
}

// A path into the service's state, however it is spelt, is refused by every
// operation, naming the field and what the directory is; the file there is
// neither read nor changed.
func TestReservedDirsAreRefused(t *testing.T) {
	b := setupReserved(t)
	r := b.root
	cases := []struct{ p, what string }{
		{".tandem/artifacts/batches/b1/output.jsonl", whatArtifacts},
		{b.output, whatArtifacts},
		{"./.tandem/artifacts/batches/b1/output.jsonl", whatArtifacts},
		{"real/../.tandem/artifacts/batches/b1/output.jsonl", whatArtifacts},
		{".TANDEM/Artifacts/batches/b1/output.jsonl", whatArtifacts},
		{"state/artifacts/batches/b1/output.jsonl", whatArtifacts},
		{"arts/batches/b1/output.jsonl", whatArtifacts},
		{"their-output", whatArtifacts},
		{"realdir/../state/artifacts/batches/b1/output.jsonl", whatArtifacts},
		{".tandem", whatDataDir},
		{".tandem/registry/m/v1/config.json", whatDataDir},
		{"state/new/x.jsonl", whatDataDir},
	}
	ops := map[string]func(p string) error{
		"ReadFile": func(p string) error { _, err := r.ReadFile("input", p, 1<<20); return err },
		"Open": func(p string) error {
			f, err := r.Open("input", p)
			if err == nil {
				f.Close()
			}
			return err
		},
		"Stat":      func(p string) error { _, err := r.Stat("input", p); return err },
		"WriteFile": func(p string) error { return r.WriteFile("input", p, fillString("mine\n")) },
		"OpenFile": func(p string) error {
			f, err := r.OpenFile("input", p, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
			if err == nil {
				f.Close()
			}
			return err
		},
		"MkdirAll": func(p string) error { _, err := r.MkdirAll("input", p); return err },
		"OpenDir": func(p string) error {
			d, err := r.OpenDir("input", p)
			if err == nil {
				d.Close()
			}
			return err
		},
	}
	for _, c := range cases {
		for op, do := range ops {
			err := do(c.p)
			want := `field "input": path "` + c.p + `" lies in ` + c.what + `, which no job may read or write`
			if err == nil || !errors.Is(err, ErrReserved) || !IsRefused(err) || IsEscape(err) || !pipeline.IsPermanent(err) || err.Error() != want {
				t.Fatalf("%s(%q): %v (permanent %v); want %q, wrapping ErrReserved, permanent", op, c.p, err, pipeline.IsPermanent(err), want)
			}
		}
	}
	if data, _ := os.ReadFile(b.output); string(data) != "theirs\n" {
		t.Fatalf("their output now holds %q", data)
	}
	for _, p := range []string{filepath.Join(b.state, "new"), filepath.Join(b.state, "registry")} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Fatalf("a refused path created %s: %v", p, err)
		}
	}
	// The error says what the directory is, never where.
	_, err := r.ReadFile("input", "their-output", 1<<20)
	if strings.Contains(err.Error(), b.dir) {
		t.Fatalf("%v names a server path", err)
	}
}

// Names that only look alike, and the rest of the root, are not reserved;
// a reserved directory created after Open is refused too.
func TestReservedLeavesTheRestOfTheRoot(t *testing.T) {
	b := setupReserved(t)
	r := b.root
	for _, p := range []string{".tandemx/out.jsonl", "tandem/out.jsonl", "real/.tandem", "realdir/out.jsonl", ".tandem-runs/a/b.jsonl"} {
		if err := r.WriteFile("output", p, fillString("ok\n")); err != nil {
			t.Errorf("WriteFile(%q): %v", p, err)
		}
	}
	later := filepath.Join(t.TempDir(), "root")
	if err := os.MkdirAll(later, 0o755); err != nil {
		t.Fatal(err)
	}
	r2, err := Open(later, Reserved{Dir: filepath.Join(later, "state", "deep"), What: whatDataDir})
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	if err := r2.WriteFile("output", "state/deep/x", fillString("x")); !errors.Is(err, ErrReserved) {
		t.Fatalf("a write into a reserved directory that does not exist yet: %v", err)
	}
	if err := os.MkdirAll(filepath.Join(later, "state", "deep"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("state/deep", filepath.Join(later, "d")); err != nil {
		t.Fatal(err)
	}
	if err := r2.WriteFile("output", "d/x", fillString("x")); !errors.Is(err, ErrReserved) {
		t.Fatalf("a write through a link to a reserved directory created after Open: %v", err)
	}
}

// A data root that is the service's state, or lies inside it, would let
// every path reach it: Open refuses it, saying what to change. Separate
// directories are fine.
func TestOpenRefusesARootInsideReserved(t *testing.T) {
	base := t.TempDir()
	state := filepath.Join(base, "state")
	files := filepath.Join(state, "files")
	sibling := filepath.Join(base, "files")
	for _, d := range []string{files, sibling} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, dir := range []string{state, files} {
		_, err := Open(dir, Reserved{Dir: state, What: whatDataDir})
		if !errors.Is(err, ErrRootInReserved) || !strings.Contains(err.Error(), "lies inside "+whatDataDir) || !strings.Contains(err.Error(), "separate directories") {
			t.Fatalf("Open(%s) with the data dir %s: %v; want ErrRootInReserved, naming the setting", dir, state, err)
		}
	}
	r, err := Open(sibling, Reserved{Dir: state, What: whatDataDir})
	if err != nil {
		t.Fatalf("separate directories: %v", err)
	}
	defer r.Close()
	if _, err := r.Stat("input", filepath.Join(state, "files")); !IsEscape(err) {
		t.Fatalf("the data dir beside the root: %v; want an escape", err)
	}
}
