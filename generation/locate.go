package generation

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/tandem-ai/tandem/dataroot"
	"github.com/tandem-ai/tandem/model"
	"github.com/tandem-ai/tandem/registry"
)

// ModelSource says where a model name resolved (LocateModel).
type ModelSource int

// Sources of a model name.
const (
	SourceBuiltin  ModelSource = iota + 1 // builtin:NAME
	SourceRegistry                        // a registered name or name@N
	SourceDir                             // a directory in the data root
)

// LocateModel resolves name as ModelStore.Get does, in the same order
// (registered names in reg, then builtin:NAME, then a directory path), but
// loads nothing: for a caller that refuses an unknown model before any
// worker is asked, such as the producer. A directory is looked for in root,
// where it must hold config.json and model.safetensors; with a nil root it
// is only checked as far as dataroot.CheckPath can. A nil reg knows no
// registered names. Errors name no server path; IsModelNotFound tells the
// model's absence from a failure to look (Redis).
func LocateModel(ctx context.Context, reg *registry.Registry, root *dataroot.Root, name string) (ModelSource, error) {
	_, isDir, err := resolveModelName(ctx, name, reg)
	switch {
	case err != nil:
		return 0, err
	case !isDir && strings.HasPrefix(name, BuiltinPrefix):
		return SourceBuiltin, nil
	case !isDir:
		return SourceRegistry, nil
	case root == nil:
		return SourceDir, nil
	}
	d, err := root.OpenDir("model", name)
	if err != nil {
		return 0, fmt.Errorf("model %q: %w", name, modelNotFound(err))
	}
	defer d.Close()
	if !IsModelDir(d) {
		return 0, fmt.Errorf("model %q: %w", name, ErrModelNotFound)
	}
	return SourceDir, nil
}

// IsModelDir reports whether d holds a model's files, config.json and
// model.safetensors, as regular files (links that stay inside d followed).
func IsModelDir(d *os.Root) bool {
	for _, f := range []string{model.ConfigFile, model.SafetensorsFile} {
		st, err := d.Stat(f)
		if err != nil || !st.Mode().IsRegular() {
			return false
		}
	}
	return true
}

// IsModelNotFound reports whether err (from LocateModel or
// ModelStore.Get) means the model is not there: no such directory or
// files, an unknown builtin, a registered name without that version or a
// promoted one, a bad name, or a path the data root refuses. Any other
// error is a failure to look (Redis, a damaged file).
func IsModelNotFound(err error) bool {
	return errors.Is(err, ErrModelNotFound) || errors.Is(err, ErrUnknownBuiltin) ||
		errors.Is(err, registry.ErrNotFound) || errors.Is(err, registry.ErrNoPromoted) || errors.Is(err, registry.ErrBadName) ||
		errors.As(err, new(*dataroot.PathError))
}
