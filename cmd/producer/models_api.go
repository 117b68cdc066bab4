package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"path"
	"slices"
	"strings"

	"github.com/tandem-ai/tandem/dataroot"
	"github.com/tandem-ai/tandem/generation"
	"github.com/tandem-ai/tandem/model"
	"github.com/tandem-ai/tandem/registry"
	"github.com/tandem-ai/tandem/tokenstream"
)

// modelCatalog is what the models a client may name are: the builtin
// ones, the registry's names and versions, and model directories in the
// data root. It serves GET /v1/models in OpenAI's shape, and the
// completion routes check a request's model against it before any worker
// is asked (requireModel), so an unknown model is a 404 even on a stream.
type modelCatalog struct {
	reg  *registry.Registry
	root *dataroot.Root // nil: directories are the workers' to check, and none is listed
}

// Owners of the models listed (the model object's owned_by).
const (
	ownerBuiltin  = "tandem"    // builtin:NAME, built into the binary
	ownerRegistry = "registry"  // a registered name or name@N
	ownerDataRoot = "data-root" // a model directory in the data root
)

// Bounds of the data-root scan of GET /v1/models: directory entries read
// per directory, directories looked into in all, and model directories
// listed.
const (
	modelScanEntries = 512
	modelScanDirs    = 2048
	modelScanModels  = 256
)

// modelObject is OpenAI's model object. Versions is Tandem's extension,
// given by GET /v1/models/{id}?detail=1 for a registered name.
type modelObject struct {
	ID       string        `json:"id"`
	Object   string        `json:"object"` // "model"
	Created  int64         `json:"created"`
	OwnedBy  string        `json:"owned_by"`
	Versions []versionView `json:"versions,omitempty"`
}

// versionView is a registered version without its artifact directory,
// which is a server path.
type versionView struct {
	registry.Version
	Artifact string `json:"artifact,omitempty"` // hides Version's; never set
}

// modelList is OpenAI's list of models.
type modelList struct {
	Object string        `json:"object"` // "list"
	Data   []modelObject `json:"data"`
}

// routes adds:
//
//	GET /v1/models        every model: builtin, registered (name, name@N), data-root directories
//	GET /v1/models/{id}   one, by the name a request gives as "model"; ?detail=1 adds a registered name's versions
//
// POST /v1/models/{name}/promote is the finetune API's.
func (c *modelCatalog) routes(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/models", c.list)
	mux.HandleFunc("GET /v1/models/{id...}", c.get)
}

func newModelObject(id string, created int64, owner string) modelObject {
	return modelObject{ID: id, Object: "model", Created: created, OwnedBy: owner}
}

func (c *modelCatalog) list(w http.ResponseWriter, r *http.Request) {
	out := modelList{Object: "list", Data: []modelObject{}}
	builtins := make([]string, 0, len(generation.BuiltinConfigs))
	for name := range generation.BuiltinConfigs {
		builtins = append(builtins, generation.BuiltinPrefix+name)
	}
	slices.Sort(builtins)
	for _, id := range builtins {
		out.Data = append(out.Data, newModelObject(id, 0, ownerBuiltin))
	}
	registered, err := c.registered(r.Context())
	if err != nil {
		writeUnavailable(w, nil, err)
		return
	}
	out.Data = append(out.Data, registered...)
	out.Data = append(out.Data, c.dirs()...)
	writeJSON(w, http.StatusOK, out)
}

// registered lists each registered name (when it has a promoted version)
// and each of its versions as name@N.
func (c *modelCatalog) registered(ctx context.Context) ([]modelObject, error) {
	if c.reg == nil {
		return nil, nil
	}
	names, err := c.reg.Names(ctx)
	if err != nil {
		return nil, err
	}
	var out []modelObject
	for _, name := range names {
		vs, err := c.reg.Versions(ctx, name)
		if errors.Is(err, registry.ErrNotFound) {
			continue // registered and gone since
		}
		if err != nil {
			return nil, err
		}
		for _, v := range vs {
			if v.Promoted {
				out = append(out, newModelObject(name, v.CreatedAt.Unix(), ownerRegistry))
			}
		}
		for _, v := range vs {
			out = append(out, newModelObject(v.Ref(), v.CreatedAt.Unix(), ownerRegistry))
		}
	}
	return out, nil
}

// dirs lists the model directories in the data root, one or two levels
// down (dir or dir/sub), by their path there; hidden directories and the
// service's own (reserved) ones are skipped, and the scan is bounded
// (modelScanEntries, modelScanDirs, modelScanModels).
func (c *modelCatalog) dirs() []modelObject {
	if c.root == nil {
		return nil
	}
	var out []modelObject
	looked := 0
	var visit func(dir string, depth int)
	visit = func(dir string, depth int) {
		for _, e := range readDirBounded(c.root.OS().FS(), dir) {
			if len(out) >= modelScanModels || looked >= modelScanDirs {
				return
			}
			if strings.HasPrefix(e.Name(), ".") || !(e.IsDir() || e.Type()&fs.ModeSymlink != 0) {
				continue
			}
			looked++
			rel := path.Join(dir, e.Name())
			if m, ok := c.dirModel(rel); ok {
				out = append(out, m)
			} else if depth < 2 {
				visit(rel, depth+1)
			}
		}
	}
	visit(".", 1)
	return out
}

// readDirBounded reads at most modelScanEntries entries of dir in fsys,
// sorted by name; nil when it cannot be read.
func readDirBounded(fsys fs.FS, dir string) []fs.DirEntry {
	f, err := fsys.Open(dir)
	if err != nil {
		return nil
	}
	defer f.Close()
	rd, ok := f.(fs.ReadDirFile)
	if !ok {
		return nil
	}
	entries, _ := rd.ReadDir(modelScanEntries)
	slices.SortFunc(entries, func(a, b fs.DirEntry) int { return strings.Compare(a.Name(), b.Name()) })
	return entries
}

// dirModel is the model directory rel of the data root, if it is one (and
// not in a reserved directory); created is its config.json's time.
func (c *modelCatalog) dirModel(rel string) (modelObject, bool) {
	d, err := c.root.OpenDir("model", rel)
	if err != nil {
		return modelObject{}, false
	}
	defer d.Close()
	if !generation.IsModelDir(d) {
		return modelObject{}, false
	}
	var created int64
	if st, err := d.Stat(model.ConfigFile); err == nil {
		created = st.ModTime().Unix()
	}
	return newModelObject(rel, created, ownerDataRoot), true
}

func (c *modelCatalog) get(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	src, err := generation.LocateModel(r.Context(), c.reg, c.root, id)
	if err == nil && src == generation.SourceDir && c.root == nil {
		err = fmt.Errorf("model %q: %w", id, generation.ErrModelNotFound)
	}
	if err != nil {
		writeModelError(w, id, err)
		return
	}
	var m modelObject
	switch src {
	case generation.SourceBuiltin:
		m = newModelObject(id, 0, ownerBuiltin)
	case generation.SourceDir:
		var ok bool
		if m, ok = c.dirModel(id); !ok {
			writeModelError(w, id, generation.ErrModelNotFound)
			return
		}
	case generation.SourceRegistry:
		m, err = c.registeredModel(r.Context(), id, r.URL.Query().Get("detail") == "1")
		if err != nil {
			writeModelError(w, id, err)
			return
		}
	}
	writeJSON(w, http.StatusOK, m)
}

// registeredModel is the model object of a registered name or name@N;
// detail adds the name's versions.
func (c *modelCatalog) registeredModel(ctx context.Context, id string, detail bool) (modelObject, error) {
	name, version, err := registry.ParseRef(id)
	if err != nil {
		return modelObject{}, err
	}
	v, err := c.reg.Get(ctx, name, version)
	if err != nil {
		return modelObject{}, err
	}
	m := newModelObject(id, v.CreatedAt.Unix(), ownerRegistry)
	if detail {
		vs, err := c.reg.Versions(ctx, name)
		if err != nil {
			return modelObject{}, err
		}
		for _, v := range vs {
			m.Versions = append(m.Versions, versionView{Version: v})
		}
	}
	return m, nil
}

// requireModel checks a request's model against the catalog before any
// worker is asked: it answers 404 model_not_found (param "model") for a
// model that is not there, 503 when the registry could not be read, and
// reports whether the request may go on. A nil catalog lets every name
// through (the worker decides).
func (c *modelCatalog) requireModel(w http.ResponseWriter, r *http.Request, name string) bool {
	if c == nil {
		return true
	}
	if _, err := generation.LocateModel(r.Context(), c.reg, c.root, name); err != nil {
		writeModelError(w, name, err)
		return false
	}
	return true
}

// writeModelError answers a failed model lookup: 404 model_not_found, as
// OpenAI answers, naming the model but no server path, or 503 when the
// lookup itself failed.
func writeModelError(w http.ResponseWriter, name string, err error) {
	if !generation.IsModelNotFound(err) {
		writeUnavailable(w, nil, err)
		return
	}
	if errors.Is(err, registry.ErrNoPromoted) {
		writeParamError(w, http.StatusNotFound, tokenstream.CodeModel, "model",
			fmt.Sprintf("model %q: registered, but no version of it is promoted; name one as NAME@N", name))
		return
	}
	writeParamError(w, http.StatusNotFound, tokenstream.CodeModel, "model",
		fmt.Sprintf("model %q: not found; GET /v1/models lists the models this server has (a builtin:NAME, a registered name or name@N, or a model directory in the data root)", name))
}
