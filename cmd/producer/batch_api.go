package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/tandem-ai/tandem/artifact"
	"github.com/tandem-ai/tandem/batch"
	"github.com/tandem-ai/tandem/dataroot"
	"github.com/tandem-ai/tandem/files"
	"github.com/tandem-ai/tandem/internal/apierror"
	"github.com/tandem-ai/tandem/jobs"
	"github.com/tandem-ai/tandem/limits"
	"github.com/tandem-ai/tandem/pipeline"
)

// EnvBatchInputDir names the directory POST /v1/batches may read input
// files from by path ("input_path"); paths are confined to it.
const EnvBatchInputDir = "TANDEM_BATCH_INPUT_DIR"

// maxBatchJSONBody bounds a JSON create request, inline input included;
// larger inputs are uploaded as a raw body (up to batch.MaxInputBytes) or
// referenced by path.
const maxBatchJSONBody = limits.APIBatchJSONBytes

// batchAPI serves /v1/batches and /v1/files.
type batchAPI struct {
	svc      *batch.Service
	files    *files.Store
	logger   *slog.Logger
	inputDir string // "" when input_path is not allowed
	// reserved are the service's directories no input_path may reach:
	// those of jobs.ReservedDirs that do not hold inputDir itself (its
	// default, <data dir>/inputs, lies in the data dir).
	reserved []dataroot.Reserved
	closeFn  func()
}

// newBatchAPI connects the batch service for the HTTP API.
func newBatchAPI(ctx context.Context, cfg pipeline.Config, logger *slog.Logger) (*batchAPI, error) {
	svc, closeFn, err := openBatches(ctx, cfg, os.Getenv(artifact.EnvStore), io.Discard)
	if err != nil {
		return nil, fmt.Errorf("batches: %w", err)
	}
	dir := os.Getenv(EnvBatchInputDir)
	if dir == "" {
		dir = filepath.Join(cfg.DataDir, "inputs")
	}
	var reserved []dataroot.Reserved
	for _, r := range jobs.ReservedDirs(cfg) {
		if !within(dir, r.Dir) {
			reserved = append(reserved, r)
		}
	}
	return &batchAPI{svc: svc, files: svc.Files, logger: logger, inputDir: dir, reserved: reserved, closeFn: closeFn}, nil
}

// Close releases the service's connections.
func (b *batchAPI) Close() {
	if b != nil && b.closeFn != nil {
		b.closeFn()
	}
}

// batchRoutes adds the batch API to mux (nothing when a has no batch service).
func (a *apiServer) batchRoutes(mux *http.ServeMux) {
	b := a.batches
	if b == nil {
		return
	}
	mux.HandleFunc("POST /v1/batches", b.create)
	mux.HandleFunc("GET /v1/batches", b.list)
	mux.HandleFunc("GET /v1/batches/{id}", b.get)
	mux.HandleFunc("POST /v1/batches/{id}/cancel", b.cancel)
	mux.HandleFunc("GET /v1/batches/{id}/output", b.output)
	mux.HandleFunc("GET /v1/batches/{id}/events", b.events)
	b.fileRoutes(mux)
}

// createBatchRequest is the JSON body of POST /v1/batches: the options plus
// the input. OpenAI's form names an uploaded file (input_file_id, in
// CreateOptions) with endpoint, completion_window "24h" and metadata; the
// model comes from the lines. Tandem's extensions: the input inline or by a
// path under TANDEM_BATCH_INPUT_DIR, and the other CreateOptions.
type createBatchRequest struct {
	batch.CreateOptions
	Input     *string `json:"input,omitempty"`
	InputPath string  `json:"input_path,omitempty"`
}

// validationBody is the 400 answer for an invalid input: the usual error
// object, its param the field that gave the input, plus every problem by
// line.
type validationBody struct {
	apiError
	Report batch.Report `json:"report"`
}

// create accepts either a JSON body (createBatchRequest) or, as an
// extension, the input file itself as the body (JSONL or CSV) with the
// options in the query string:
// model, template, format, completion_window, chunk_size, batch_size,
// device, skip_invalid, trim, strip_prompt, max_chars, stop (repeatable)
// and metadata (repeatable KEY=VALUE).
func (b *batchAPI) create(w http.ResponseWriter, r *http.Request) {
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	var (
		o     batch.CreateOptions
		input io.Reader
		raw   bool // the input is the body
		// from is the field that gave the input; "body" for the body.
		from = "body"
	)
	if mt == "multipart/form-data" {
		writeError(w, http.StatusBadRequest, "invalid_request", "body: upload the input file to POST /v1/files (purpose batch), then create the batch with its input_file_id")
		return
	}
	if mt == "application/json" {
		var req createBatchRequest
		if !decodeStrict(w, r, maxBatchJSONBody, &req) {
			return
		}
		o = req.CreateOptions
		sources := 0
		for _, given := range []bool{req.Input != nil, req.InputPath != "", o.InputFileID != ""} {
			if given {
				sources++
			}
		}
		switch {
		case sources > 1:
			writeError(w, http.StatusBadRequest, "invalid_request", "give one of input_file_id, input and input_path")
			return
		case o.InputFileID != "":
			from = "input_file_id"
			rc, ok := b.openInputFile(w, r, &o)
			if !ok {
				return
			}
			defer rc.Close()
			input = rc
		case req.Input != nil:
			from, input = "input", strings.NewReader(*req.Input)
		case req.InputPath != "":
			from = "input_path"
			f, err := b.openInput(req.InputPath)
			if err != nil {
				writeParamError(w, http.StatusBadRequest, "invalid_request", "input_path", err.Error())
				return
			}
			defer f.Close()
			input = f
		default:
			writeParamError(w, http.StatusBadRequest, "invalid_request", "input_file_id", "input_file_id: required (or, as Tandem extensions, input or input_path)")
			return
		}
	} else {
		var err error
		if o, err = optionsFromQuery(r); err != nil {
			writeError(w, http.StatusBadRequest, "invalid_request", err.Error())
			return
		}
		if o.Template != "" && o.Format == "" && mt == "text/csv" {
			o.Format = batch.FormatCSV
		}
		input = http.MaxBytesReader(w, r.Body, batch.MaxInputBytes+1)
		raw = true
	}
	created, _, err := b.svc.Create(r.Context(), input, o)
	var verr *batch.ValidationError
	switch {
	case errors.As(err, &verr):
		msg := fmt.Sprintf("%s: %d of %d lines are invalid; nothing was enqueued (skip_invalid runs the valid ones)", from, verr.Report.Invalid, verr.Report.Lines)
		if list := problemList(&verr.Report); list != "" {
			msg += ": " + list
		}
		param := from
		if raw {
			param = ""
		}
		writeJSON(w, http.StatusBadRequest, validationBody{apiError: apierror.New(http.StatusBadRequest, "invalid_input", param, msg), Report: verr.Report})
	case isBodyError(err):
		writeBodyError(w, err)
	case errors.Is(err, batch.ErrInputTooLarge) && raw:
		writeError(w, http.StatusRequestEntityTooLarge, "too_large", err.Error())
	case errors.Is(err, batch.ErrInvalid):
		writeParamError(w, http.StatusBadRequest, "invalid_request", paramOf(err, createBatchRequest{}), err.Error())
	case errors.Is(err, batch.ErrStoreNotShared):
		writeError(w, http.StatusServiceUnavailable, "artifact_store_not_shared", err.Error())
	case err != nil:
		writeUnavailable(w, b.logger.With("op", "batch create"), err)
	default:
		writeJSON(w, http.StatusOK, b.object(r.Context(), created))
	}
}

// openInputFile opens the uploaded file o names, which must be a batch
// input; OpenAI's form allows only the completion window "24h". On false
// the answer is written.
func (b *batchAPI) openInputFile(w http.ResponseWriter, r *http.Request, o *batch.CreateOptions) (io.ReadCloser, bool) {
	if o.CompletionWindow != "" && o.CompletionWindow != "24h" {
		writeParamError(w, http.StatusBadRequest, "invalid_request", "completion_window",
			fmt.Sprintf("completion_window: %q is not supported; want 24h", o.CompletionWindow))
		return nil, false
	}
	rc, f, err := b.files.Open(r.Context(), o.InputFileID)
	if errors.Is(err, files.ErrNotFound) || errors.Is(err, artifact.ErrNotFound) {
		writeParamError(w, http.StatusNotFound, "not_found", "input_file_id", "input_file_id: "+err.Error())
		return nil, false
	}
	if err != nil {
		b.writeFileError(w, err)
		return nil, false
	}
	if f.Purpose != files.PurposeBatch {
		rc.Close()
		writeParamError(w, http.StatusBadRequest, "invalid_request", "input_file_id",
			fmt.Sprintf("input_file_id: file %s has purpose %q; want batch", f.ID, f.Purpose))
		return nil, false
	}
	return rc, true
}

// within reports whether dir is parent or lies inside it, as the paths
// read (an error reads as no).
func within(dir, parent string) bool {
	d, err1 := filepath.Abs(dir)
	p, err2 := filepath.Abs(parent)
	if err1 != nil || err2 != nil {
		return false
	}
	rel, err := filepath.Rel(p, d)
	return err == nil && (rel == "." || filepath.IsLocal(rel))
}

// openInput opens a path under the input directory, confined to it as job
// paths are to the data root (package dataroot).
func (b *batchAPI) openInput(path string) (*os.File, error) {
	if b.inputDir == "" {
		return nil, errors.New("input_path: reading inputs by path is not enabled")
	}
	root, err := dataroot.Open(b.inputDir, b.reserved...)
	if err != nil {
		// The error names the directory: the log's, not the client's.
		b.logger.Error("input_path: the input directory cannot be opened", "env", EnvBatchInputDir, "err", err)
		return nil, errors.New("input_path: reading inputs by path is not available on this server")
	}
	defer root.Close()
	return root.Open("input_path", path)
}

func optionsFromQuery(r *http.Request) (batch.CreateOptions, error) {
	q := r.URL.Query()
	o := batch.CreateOptions{
		Model: q.Get("model"), Template: q.Get("template"), Format: q.Get("format"),
		CompletionWindow: q.Get("completion_window"), Device: q.Get("device"),
	}
	ints := map[string]*int{"chunk_size": &o.ChunkSize, "batch_size": &o.BatchSize, "max_chars": &o.PostProcess.MaxChars}
	for k, p := range ints {
		if v := q.Get(k); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil {
				return o, fmt.Errorf("%s: %q is not a whole number", k, v)
			}
			*p = n
		}
	}
	bools := map[string]*bool{"skip_invalid": &o.SkipInvalid, "trim": &o.PostProcess.Trim, "strip_prompt": &o.PostProcess.StripPrompt}
	for k, p := range bools {
		if v := q.Get(k); v != "" {
			x, err := strconv.ParseBool(v)
			if err != nil {
				return o, fmt.Errorf("%s: %q is not true or false", k, v)
			}
			*p = x
		}
	}
	o.PostProcess.Stop = q["stop"]
	for _, kv := range q["metadata"] {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return o, fmt.Errorf("metadata %q: want KEY=VALUE", kv)
		}
		if o.Metadata == nil {
			o.Metadata = map[string]string{}
		}
		o.Metadata[k] = v
	}
	return o, nil
}

func (b *batchAPI) writeBatchError(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, batch.ErrNotFound), errors.Is(err, artifact.ErrNotFound):
		writeError(w, http.StatusNotFound, "not_found", err.Error())
	case errors.Is(err, batch.ErrConflict):
		writeError(w, http.StatusConflict, "conflict", err.Error())
	default:
		writeUnavailable(w, b.logger.With("op", "batch request"), err)
	}
}

func (b *batchAPI) get(w http.ResponseWriter, r *http.Request) {
	got, err := b.svc.Get(r.Context(), r.PathValue("id"))
	if err != nil {
		b.writeBatchError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, b.object(r.Context(), got))
}

func (b *batchAPI) cancel(w http.ResponseWriter, r *http.Request) {
	got, err := b.svc.Cancel(r.Context(), r.PathValue("id"))
	if err != nil {
		b.writeBatchError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, b.object(r.Context(), got))
}

func (b *batchAPI) list(w http.ResponseWriter, r *http.Request) {
	limit, ok := queryInt(w, r, "limit", 20, batch.MaxListLimit)
	if !ok {
		return
	}
	bs, more, err := b.svc.List(r.Context(), r.URL.Query().Get("after"), limit)
	if err != nil {
		b.writeBatchError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, b.page(r.Context(), bs, more))
}

// output streams output.jsonl, or errors.jsonl with ?file=errors (an
// extension; the same bytes are the files output_file_id and error_file_id
// name).
func (b *batchAPI) output(w http.ResponseWriter, r *http.Request) {
	which := r.URL.Query().Get("file")
	if which == "" {
		which = batch.FileOutput
	}
	if which != batch.FileOutput && which != batch.FileErrors {
		writeError(w, http.StatusBadRequest, "invalid_request", "file: want output or errors")
		return
	}
	rc, _, err := b.svc.OpenResult(r.Context(), r.PathValue("id"), which)
	if err != nil {
		b.writeBatchError(w, err)
		return
	}
	defer rc.Close()
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set("Content-Disposition", fmt.Sprintf("attachment; filename=%q", which+".jsonl"))
	if _, err := io.Copy(w, rc); err != nil {
		b.logger.Warn("batch output copy stopped", "batch", r.PathValue("id"), "err", err)
	}
}

// events streams the batch's progress as server-sent events: an
// "progress" event with the batch object at once and on every change, and
// a final "done" event when the batch ends.
func (b *batchAPI) events(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if _, err := b.svc.Get(r.Context(), id); err != nil {
		b.writeBatchError(w, err)
		return
	}
	flusher, ok := startSSE(w)
	if !ok {
		return
	}
	err := b.svc.Watch(r.Context(), id, time.Second, func(bt *batch.Batch) bool {
		data, err := json.Marshal(b.object(r.Context(), bt))
		if err != nil {
			return false
		}
		name := "progress"
		if bt.Status.Terminal() {
			name = "done"
		}
		if _, err := fmt.Fprintf(w, "event: %s\ndata: %s\n\n", name, data); err != nil {
			return false
		}
		flusher.Flush()
		return true
	})
	if err != nil && !errors.Is(err, context.Canceled) {
		fmt.Fprintf(w, "event: error\ndata: %q\n\n", err.Error())
		flusher.Flush()
	}
}
