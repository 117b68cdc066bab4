package generation

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tandem-ai/tandem/dataroot/dataroottest"
	"github.com/tandem-ai/tandem/model"
)

// TestLocateModelFindsWithoutLoading sorts names as ModelStore.Get would:
// builtin names, directories holding both model files, and every kind of
// absence as one not-found that names no server path; with no root a
// directory passes on its spelling alone.
func TestLocateModelFindsWithoutLoading(t *testing.T) {
	dir := t.TempDir()
	m, err := model.New(model.Config{NLayer: 1, NHead: 1, NEmbd: 8, NPositions: 8, VocabSize: 16, LayerNormEpsilon: 1e-5}, 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.SaveDir(filepath.Join(dir, "good")); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "half"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "half", model.ConfigFile), []byte("{}"), 0o644); err != nil {
		t.Fatal(err)
	}
	root := dataroottest.Open(t, dir)
	ctx := context.Background()
	for name, want := range map[string]ModelSource{"builtin:tiny": SourceBuiltin, "good": SourceDir, dir + "/good": SourceDir} {
		if got, err := LocateModel(ctx, nil, root, name); err != nil || got != want {
			t.Errorf("%s: %v %v, want %v", name, got, err, want)
		}
	}
	for _, name := range []string{"builtin:huge", "half", "nothing", "../out", ""} {
		_, err := LocateModel(ctx, nil, root, name)
		if name != "" && !IsModelNotFound(err) {
			t.Errorf("%q: %v, want a model not found", name, err)
		}
		if err == nil || strings.Contains(err.Error(), dir) && !strings.Contains(name, dir) {
			t.Errorf("%q: %v, want an error without the root's path", name, err)
		}
	}
	if got, err := LocateModel(ctx, nil, nil, "anything"); err != nil || got != SourceDir {
		t.Errorf("no root: %v %v, want a directory left to the worker", got, err)
	}
}
