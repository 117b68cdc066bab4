package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/tandem-ai/tandem/dataroot"
	"github.com/tandem-ai/tandem/generation"
	"github.com/tandem-ai/tandem/model"
	"github.com/tandem-ai/tandem/pipeline"
	"github.com/tandem-ai/tandem/registry"
)

// stateBundle is the default layout: the data dir (.tandem) inside the data
// root, holding another batch's output and input and a registered model,
// with a worker's root that reserves it as OpenDataRoot does.
type stateBundle struct {
	dir, state string
	root       *dataroot.Root
	reg        *pipeline.Registry
	before     map[string]string
}

// Paths into the service's state, one per kind of thing a field names.
const (
	theirOutput = ".tandem/artifacts/batches/b1/output.jsonl" // a file in the artifact store
	theirRun    = ".tandem/artifacts/batches/b1"              // a directory in it
	theirInput  = ".tandem/inputs/b1.jsonl"                   // a file elsewhere in the data dir
	theirModel  = ".tandem/registry/m/v1"                     // a registered model's directory
)

func setupState(t *testing.T) *stateBundle {
	t.Helper()
	t.Setenv("TANDEM_ARTIFACT_STORE", "")
	dir := t.TempDir()
	b := &stateBundle{dir: dir, state: filepath.Join(dir, ".tandem")}
	for name, content := range map[string]string{
		theirOutput:       "theirs\n",
		theirInput:        testPrompts,
		"prompts.jsonl":   testPrompts,
		"text.txt":        strings.Repeat("The quick brown fox jumps over the lazy dog. ", 20),
		"i.csv":           "user,item,rating\nu1,i1,5\n",
		"catalog.jsonl":   `{"id":"t1","kind":"topic","topic":"a marathon"}` + "\n",
		"users.txt":       "u1\n",
		theirModel + "/x": "",
	} {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	root, err := OpenDataRoot(pipeline.Config{DataRoot: dir, DataDir: b.state})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { root.Close() })
	b.root = root
	d := NewDeps(nil)
	d.SetDataRoot(root)
	b.reg = pipeline.NewRegistry()
	RegisterAll(b.reg, d)
	b.before = snapshot(t, b.state)
	return b
}

// pathFieldCases are, for every kind whose args name files, valid args and
// each path field's name with a path into the service's state for it.
var pathFieldCases = []struct {
	kind  string
	args  map[string]any
	field map[string]string
}{
	{KindGenerate, map[string]any{"model": "builtin:tiny", "input": "prompts.jsonl", "output": "out.jsonl"},
		map[string]string{"model": theirModel, "input": theirInput, "output": theirOutput}},
	{KindEval, map[string]any{"model": "builtin:tiny", "input": "text.txt"},
		map[string]string{"model": theirModel, "input": theirOutput}},
	{KindPing, map[string]any{"record": "runs.txt"},
		map[string]string{"record": theirOutput}},
	{KindFinetune, map[string]any{"model": "builtin:tiny", "data": "text.txt", "out": "ft/run"},
		map[string]string{"model": theirModel, "data": theirInput, "out": theirRun}},
	{KindRecsRebuild, map[string]any{"interactions": "i.csv", "out": "recs.jsonl"},
		map[string]string{"interactions": theirInput, "out": theirOutput}},
	{KindPersonalize, map[string]any{"model": "builtin:tiny", "catalog": "catalog.jsonl", "users": "users.txt", "out": "p", "run": "r1"},
		map[string]string{"model": theirModel, "catalog": theirInput, "users": theirInput, "out": theirRun}},
	{KindRecsFanout, map[string]any{"interactions": "i.csv"},
		map[string]string{"interactions": theirInput}},
}

// Every path field of every kind is checked against the service's state:
// by CheckPaths (the producer, before it enqueues) and by the worker before
// any work, permanently, naming the field; nothing there is read or
// written.
func TestJobPathsNeverReachTheDataDir(t *testing.T) {
	b := setupState(t)
	for _, c := range pathFieldCases {
		for field, p := range c.field {
			args := maps.Clone(c.args)
			args[field] = p
			payload, err := json.Marshal(args)
			if err != nil {
				t.Fatal(err)
			}
			if err := ValidatePayload(c.kind, payload); err != nil {
				t.Fatalf("%s %s: the args do not validate: %v", c.kind, payload, err)
			}
			prefix := `field "` + field + `": path "` + p + `" lies in the `
			err = CheckPaths(b.root, c.kind, payload)
			if !errors.Is(err, dataroot.ErrReserved) || !strings.Contains(err.Error(), prefix) {
				t.Errorf("CheckPaths(%s, %s) = %v; want %q...", c.kind, payload, err, prefix)
			}
			err = b.reg.Exec(context.Background(), c.kind, payload)
			if !errors.Is(err, dataroot.ErrReserved) || !pipeline.IsPermanent(err) || !strings.Contains(err.Error(), prefix) {
				t.Errorf("worker %s %s = %v (permanent %v); want %q..., permanent", c.kind, payload, err, pipeline.IsPermanent(err), prefix)
			}
			// The same path spelt absolute, and through a link into it.
			abs := filepath.Join(b.dir, filepath.FromSlash(p))
			args[field] = abs
			payload, _ = json.Marshal(args)
			if err := CheckPaths(b.root, c.kind, payload); !errors.Is(err, dataroot.ErrReserved) {
				t.Errorf("CheckPaths(%s) with %s %s = %v; want it refused", c.kind, field, abs, err)
			}
		}
		// The valid args pass.
		payload, _ := json.Marshal(c.args)
		if err := CheckPaths(b.root, c.kind, payload); err != nil {
			t.Errorf("CheckPaths(%s, %s) = %v; want nil", c.kind, payload, err)
		}
	}
	if now := snapshot(t, b.state); !maps.Equal(now, b.before) {
		t.Fatalf("the data dir changed:\nbefore %v\nnow    %v", b.before, now)
	}
	// A link in the root into the data dir does not lead there either.
	if err := os.Symlink(".tandem/artifacts", filepath.Join(b.dir, "arts")); err != nil {
		t.Fatal(err)
	}
	err := b.reg.Exec(context.Background(), KindPing, []byte(`{"record":"arts/batches/b1/output.jsonl"}`))
	if !errors.Is(err, dataroot.ErrReserved) || !pipeline.IsPermanent(err) {
		t.Fatalf("ping through a link into the artifact store: %v", err)
	}
	if data, _ := os.ReadFile(filepath.Join(b.dir, filepath.FromSlash(theirOutput))); string(data) != "theirs\n" {
		t.Fatalf("their output now holds %q", data)
	}
}

// pathFieldCases covers every path field of every kind that names files:
// the fields its args list (jobPaths) are exactly those of its case, and
// the kinds with paths are exactly those with a case. A new path field or
// kind fails here until it has its case.
func TestPathFieldCasesAreComplete(t *testing.T) {
	withPaths := map[string]bool{}
	for _, name := range Names() {
		if kinds[name].paths != nil {
			withPaths[name] = true
		}
	}
	for _, c := range pathFieldCases {
		if !withPaths[c.kind] {
			t.Errorf("%s has a case but lists no paths", c.kind)
		}
		delete(withPaths, c.kind)
		payload, _ := json.Marshal(c.args)
		paths, err := kinds[c.kind].paths(payload)
		if err != nil {
			t.Fatal(err)
		}
		var fields []string
		for _, p := range paths {
			fields = append(fields, p.Field)
		}
		sort.Strings(fields)
		if want := slices.Sorted(maps.Keys(c.field)); !slices.Equal(fields, want) {
			t.Errorf("%s lists the path fields %v; its case covers %v", c.kind, fields, want)
		}
	}
	if len(withPaths) > 0 {
		t.Errorf("kinds with paths and no case: %v", slices.Sorted(maps.Keys(withPaths)))
	}
	// A public kind without paths names no file at all.
	for _, name := range PublicNames() {
		if kinds[name].paths == nil && name != KindFinetuneFeedback {
			t.Errorf("public kind %s lists no paths; add jobPaths to its args, or here why it names none", name)
		}
	}
}

// A data root inside the data dir is refused when it is opened, naming
// both settings.
func TestOpenDataRootRefusesARootInsideTheDataDir(t *testing.T) {
	t.Setenv("TANDEM_ARTIFACT_STORE", "")
	state := t.TempDir()
	files := filepath.Join(state, "files")
	if err := os.MkdirAll(files, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, root := range []string{state, files} {
		_, err := OpenDataRoot(pipeline.Config{DataRoot: root, DataDir: state})
		if !errors.Is(err, dataroot.ErrRootInReserved) || !strings.Contains(err.Error(), "the data dir (TANDEM_DATA_DIR)") || !strings.Contains(err.Error(), "TANDEM_DATA_ROOT") {
			t.Fatalf("OpenDataRoot(root %s, data dir %s) = %v; want ErrRootInReserved naming both settings", root, state, err)
		}
	}
}

// TestRegisteredModelInTheDataDirLoads: with the default layout (the data
// dir inside the data root), a registered version's files lie in a
// directory no job path may name; a job that names the model by its
// registry name must still load it.
func TestRegisteredModelInTheDataDirLoads(t *testing.T) {
	ctx := context.Background()
	rdb := finetuneTestRedis(t)
	dir := t.TempDir()
	cfg := pipeline.DefaultConfig()
	cfg.DataRoot, cfg.DataDir = dir, filepath.Join(dir, ".tandem")
	reg := registry.New(rdb, RegistryDir(cfg.DataDir))
	name := fmt.Sprintf("in-data-dir-%d", time.Now().UnixNano())
	cleanupModelKeys(t, rdb, name)
	src := filepath.Join(t.TempDir(), "trained")
	m, err := model.New(model.Config{NLayer: 1, NHead: 1, NEmbd: 8, NPositions: 8, VocabSize: 64, LayerNormEpsilon: 1e-5}, 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.SaveDir(src); err != nil {
		t.Fatal(err)
	}
	v, err := reg.Register(ctx, name, src, registry.Version{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := reg.Promote(ctx, name, v.Version); err != nil {
		t.Fatal(err)
	}
	root, err := OpenDataRoot(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	s := generation.NewModelStoreWith(generation.StoreConfig{Registry: reg})
	s.SetDataRoot(root)
	if _, err := s.Get(name); err != nil {
		t.Fatalf("the registered model %s: %v", name, err)
	}
	// The same files named as a path stay out of reach.
	rel, _ := filepath.Rel(dir, RegistryDir(cfg.DataDir))
	if _, err := s.Get(filepath.Join(rel, name, fmt.Sprintf("v%d", v.Version))); err == nil {
		t.Fatal("the registry's directory was loaded by path")
	}
}
