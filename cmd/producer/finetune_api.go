package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"path/filepath"

	"github.com/tandem-ai/tandem/dataroot"
	"github.com/tandem-ai/tandem/finetune"
	"github.com/tandem-ai/tandem/jobs"
	"github.com/tandem-ai/tandem/limits"
	"github.com/tandem-ai/tandem/pipeline"
	"github.com/tandem-ai/tandem/registry"
)

// maxCurveBytes bounds a loss curve image served (they are a few KiB).
const maxCurveBytes = limits.LossCurveBytes

// finetuneAPI serves fine-tuning runs and the model registry under /v1.
type finetuneAPI struct {
	client *pipeline.Client
	root   *dataroot.Root // nil: no loss curves
	reg    *registry.Registry
}

// registerFinetuneRoutes adds:
//
//	POST /v1/finetunes                   enqueue a finetune job (body: jobs.FinetuneArgs)
//	GET  /v1/finetunes/{id}              the job and its progress or result
//	GET  /v1/finetunes/{id}/loss.png     the run's loss curve
//	POST /v1/models/{name}/promote       {"version": N}
//
// (GET /v1/models and /v1/models/{id} are modelCatalog's.) The registry
// shares the client's Redis; artifacts live under dataDir. Loss curves are
// read from the run directories in root, the data root the workers write
// them into (nil: none are served).
func registerFinetuneRoutes(mux *http.ServeMux, client *pipeline.Client, dataDir string, root *dataroot.Root) {
	f := &finetuneAPI{client: client, root: root, reg: registry.New(client.Redis(), jobs.RegistryDir(dataDir))}
	mux.HandleFunc("POST /v1/finetunes", f.create)
	mux.HandleFunc("GET /v1/finetunes/{id}", f.get)
	mux.HandleFunc("GET /v1/finetunes/{id}/loss.png", f.lossCurve)
	mux.HandleFunc("POST /v1/models/{name}/promote", f.promote)
}

func (f *finetuneAPI) create(w http.ResponseWriter, r *http.Request) {
	var a jobs.FinetuneArgs
	if !decodeStrict(w, r, maxRequestBody, &a) {
		return
	}
	if err := a.Validate(); err != nil {
		writeParamError(w, http.StatusBadRequest, "invalid_args", paramOf(err, a), err.Error())
		return
	}
	if !allowServingChange(w, r, a.ServingChange()) {
		return
	}
	payload, _ := json.Marshal(a)
	if f.root != nil {
		if err := jobs.CheckPaths(f.root, jobs.KindFinetune, payload); err != nil {
			writeParamError(w, http.StatusBadRequest, "invalid_args", paramOf(err, a), err.Error())
			return
		}
	}
	info, err := enqueueRaw(r.Context(), f.client, jobs.KindFinetune, payload, "", "", -1)
	if err != nil {
		writeUnavailable(w, nil, err)
		return
	}
	writeJSON(w, http.StatusAccepted, taskView(info))
}

// finetuneView is a finetune job with its decoded status.
type finetuneView struct {
	TaskView
	Status *jobs.FinetuneStatus `json:"status,omitempty"`
}

func (f *finetuneAPI) find(w http.ResponseWriter, id string) (finetuneView, jobs.FinetuneArgs, bool) {
	info, err := findTask(f.client.Inspector(), id)
	if errors.Is(err, errNotFound) || (err == nil && info.Type != jobs.KindFinetune) {
		writeError(w, http.StatusNotFound, "not_found", fmt.Sprintf("no finetune job %s", id))
		return finetuneView{}, jobs.FinetuneArgs{}, false
	}
	if err != nil {
		writeUnavailable(w, nil, err)
		return finetuneView{}, jobs.FinetuneArgs{}, false
	}
	v := finetuneView{TaskView: taskView(info)}
	var st jobs.FinetuneStatus
	if len(info.Result) > 0 && json.Unmarshal(info.Result, &st) == nil {
		v.Status = &st
	}
	var a jobs.FinetuneArgs
	_ = json.Unmarshal(info.Payload, &a)
	return v, a, true
}

func (f *finetuneAPI) get(w http.ResponseWriter, r *http.Request) {
	v, _, ok := f.find(w, r.PathValue("id"))
	if ok {
		writeJSON(w, http.StatusOK, v)
	}
}

func (f *finetuneAPI) lossCurve(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	_, a, ok := f.find(w, id)
	if !ok {
		return
	}
	out := a.Out
	if out == "" {
		out = jobs.DefaultFinetuneOut(id)
	}
	if f.root == nil {
		writeError(w, http.StatusNotFound, "not_found", "this producer has no data root to read loss curves from")
		return
	}
	b, err := f.root.ReadFile("out", filepath.Join(out, finetune.CurveFile), maxCurveBytes)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		writeError(w, http.StatusNotFound, "not_found", "no loss curve yet (one is drawn at each epoch end)")
		return
	case err != nil:
		writeError(w, http.StatusNotFound, "not_found", err.Error())
		return
	}
	w.Header().Set("Content-Type", "image/png")
	w.Header().Set("Cache-Control", "no-cache")
	_, _ = w.Write(b)
}

func (f *finetuneAPI) promote(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Version *int `json:"version"`
	}
	if !decodeStrict(w, r, limits.APIPromoteBodyBytes, &req) {
		return
	}
	if req.Version == nil || *req.Version < 1 {
		writeParamError(w, http.StatusBadRequest, "invalid_request", "version", `version: required, an integer N >= 1 (the body is {"version": N})`)
		return
	}
	if !allowServingChange(w, r, "promoting a version changes the model every job of that name uses") {
		return
	}
	v, err := f.reg.Promote(r.Context(), r.PathValue("name"), *req.Version)
	f.answer(w, versionView{Version: v}, err)
}

func (f *finetuneAPI) answer(w http.ResponseWriter, v any, err error) {
	switch {
	case errors.Is(err, registry.ErrBadName):
		writeError(w, http.StatusBadRequest, "invalid_request", err.Error())
	case errors.Is(err, registry.ErrNotFound), errors.Is(err, registry.ErrNoPromoted):
		writeError(w, http.StatusNotFound, "not_found", err.Error())
	case err != nil:
		writeUnavailable(w, nil, err)
	default:
		writeJSON(w, http.StatusOK, v)
	}
}
