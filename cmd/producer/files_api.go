package main

import (
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"os"
	"strconv"
	"strings"

	"github.com/tandem-ai/tandem/artifact"
	"github.com/tandem-ai/tandem/batch"
	"github.com/tandem-ai/tandem/files"
)

// The Files API, as OpenAI documents it: uploads of batch input files
// (checked line by line before they are kept) and the output and error
// files of batches.

// maxUploadOverhead is what a multipart upload may carry beside the file:
// the part headers and the purpose field.
const maxUploadOverhead = 64 << 10

// maxFilesListLimit is the largest page GET /v1/files gives (OpenAI's).
const maxFilesListLimit = 10000

// maxUploadProblems is how many problems an upload's error message lists.
const maxUploadProblems = 10

// fileRoutes adds the Files API to mux.
func (b *batchAPI) fileRoutes(mux *http.ServeMux) {
	mux.HandleFunc("POST /v1/files", b.uploadFile)
	mux.HandleFunc("GET /v1/files", b.listFiles)
	mux.HandleFunc("GET /v1/files/{id}", b.getFile)
	mux.HandleFunc("GET /v1/files/{id}/content", b.fileContent)
	mux.HandleFunc("DELETE /v1/files/{id}", b.deleteFile)
}

// uploadFile takes a multipart form with the file ("file"), its purpose
// ("purpose", "batch" only) and, optionally, OpenAI's expires_after fields
// (checkExpiry); any other field is refused by name. The file is streamed to a temporary file,
// checked as an OpenAI Batch input (batch.CheckFile: at most batch.MaxRows
// request lines and batch.MaxInputBytes, every line valid, one url and one
// model), then kept in the artifact store.
func (b *batchAPI) uploadFile(w http.ResponseWriter, r *http.Request) {
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if mt != "multipart/form-data" {
		writeError(w, http.StatusBadRequest, "invalid_request", "body: want multipart/form-data with the fields file and purpose")
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, batch.MaxInputBytes+maxUploadOverhead)
	mr, err := r.MultipartReader()
	if err != nil {
		writeError(w, http.StatusBadRequest, "invalid_request", "body: "+err.Error())
		return
	}
	var (
		purpose, filename string
		tmp               *os.File
		size              int64
		parts             int
		expiry            = map[string]bool{} // the expires_after fields given
	)
	defer func() {
		if tmp != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	for {
		part, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			writeUploadError(w, err)
			return
		}
		parts++
		switch name := part.FormName(); {
		case name == "purpose":
			v, err := io.ReadAll(io.LimitReader(part, 64))
			if err != nil {
				writeUploadError(w, err)
				return
			}
			purpose = string(v)
		case name == "file" && tmp == nil:
			filename = part.FileName()
			if tmp, err = os.CreateTemp("", "tandem-upload-*.jsonl"); err != nil {
				writeUnavailable(w, b.logger.With("op", "file upload"), err)
				return
			}
			if size, err = io.Copy(tmp, io.LimitReader(part, batch.MaxInputBytes+1)); err != nil {
				writeUploadError(w, err)
				return
			}
			if size > batch.MaxInputBytes {
				writeError(w, http.StatusRequestEntityTooLarge, "too_large", fmt.Sprintf("file: larger than %d bytes", batch.MaxInputBytes))
				return
			}
		case name == "file":
			writeParamError(w, http.StatusBadRequest, "invalid_request", "file", "file: give one file")
			return
		case name == expiresAnchor || name == expiresSeconds:
			v, err := io.ReadAll(io.LimitReader(part, 64))
			if err != nil {
				writeUploadError(w, err)
				return
			}
			if err := checkExpiry(name, string(v)); err != nil {
				writeParamError(w, http.StatusBadRequest, "invalid_request", name, err.Error())
				return
			}
			expiry[name] = true
		default:
			writeParamError(w, http.StatusBadRequest, "invalid_request", name, fmt.Sprintf("%s: unknown field (want file and purpose)", name))
			return
		}
	}
	switch {
	case parts == 0:
		writeError(w, http.StatusBadRequest, "invalid_request", "body: no form fields; want multipart/form-data with the fields file and purpose")
		return
	case len(expiry) == 1:
		missing := expiresAnchor
		if expiry[expiresAnchor] {
			missing = expiresSeconds
		}
		writeParamError(w, http.StatusBadRequest, "invalid_request", missing, missing+": required with the other expires_after field")
		return
	case purpose == "":
		writeParamError(w, http.StatusBadRequest, "invalid_request", "purpose", "purpose: required (batch)")
		return
	case purpose != files.PurposeBatch:
		writeParamError(w, http.StatusBadRequest, "invalid_request", "purpose", fmt.Sprintf("purpose: %q is not supported; want batch", purpose))
		return
	case tmp == nil:
		writeParamError(w, http.StatusBadRequest, "invalid_request", "file", "file: required")
		return
	}
	if _, err := tmp.Seek(0, io.SeekStart); err != nil {
		writeUnavailable(w, b.logger.With("op", "file upload"), err)
		return
	}
	rep, err := batch.CheckFile(tmp)
	switch {
	case errors.Is(err, batch.ErrInputTooLarge):
		writeError(w, http.StatusRequestEntityTooLarge, "too_large", err.Error())
		return
	case err != nil:
		writeParamError(w, http.StatusBadRequest, "invalid_file", "file", "file: "+err.Error())
		return
	case rep.Lines == 0:
		writeParamError(w, http.StatusBadRequest, "invalid_file", "file", "file: no request lines")
		return
	case rep.Invalid > 0:
		writeParamError(w, http.StatusBadRequest, "invalid_file", "file",
			fmt.Sprintf("file: %d of %d lines are invalid: %s", rep.Invalid, rep.Lines, problemList(rep)))
		return
	}
	if _, err := tmp.Seek(0, io.SeekStart); err != nil {
		writeUnavailable(w, b.logger.With("op", "file upload"), err)
		return
	}
	f, err := b.files.Create(r.Context(), tmp, filename, purpose, size)
	if err != nil {
		writeUnavailable(w, b.logger.With("op", "file upload"), err)
		return
	}
	writeJSON(w, http.StatusOK, f)
}

// The expiry of an upload, as OpenAI's form fields name it.
const (
	expiresAnchor  = "expires_after[anchor]"
	expiresSeconds = "expires_after[seconds]"
)

// OpenAI's bounds of expires_after[seconds]: an hour to 30 days.
const (
	minFileExpirySeconds = 3600
	maxFileExpirySeconds = 30 * 24 * 3600
)

// checkExpiry checks an expires_after field as OpenAI does: anchor
// created_at, seconds an integer within its bounds. Files are kept until
// they are deleted all the same: an upload's file object says so with
// expires_at null.
func checkExpiry(name, v string) error {
	if name == expiresAnchor {
		if v != "created_at" {
			return fmt.Errorf("%s: %.32q; want created_at", name, v)
		}
		return nil
	}
	if n, err := strconv.Atoi(v); err != nil || n < minFileExpirySeconds || n > maxFileExpirySeconds {
		return fmt.Errorf("%s: %.32q; want an integer from %d (an hour) to %d (30 days)", name, v, minFileExpirySeconds, maxFileExpirySeconds)
	}
	return nil
}

// problemList names an input's problems, each with its line: the first
// maxUploadProblems of them, for an error message.
func problemList(rep *batch.Report) string {
	var sb strings.Builder
	for i, p := range rep.Problems {
		if i == maxUploadProblems {
			break
		}
		if i > 0 {
			sb.WriteString("; ")
		}
		sb.WriteString(p.String())
	}
	if more := rep.Invalid - min(len(rep.Problems), maxUploadProblems); more > 0 {
		fmt.Fprintf(&sb, "; and %d more", more)
	}
	return sb.String()
}

// writeUploadError answers a multipart body that could not be read.
func writeUploadError(w http.ResponseWriter, err error) {
	if isBodyError(err) {
		writeBodyError(w, err)
		return
	}
	writeError(w, http.StatusBadRequest, "invalid_request", "body: "+err.Error())
}

func (b *batchAPI) writeFileError(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, files.ErrNotFound), errors.Is(err, artifact.ErrNotFound):
		writeError(w, http.StatusNotFound, "not_found", err.Error())
	default:
		writeUnavailable(w, b.logger.With("op", "files request"), err)
	}
}

// fileList is a page of files, in the OpenAI list shape.
type fileList struct {
	Object  string        `json:"object"`
	Data    []*files.File `json:"data"`
	FirstID string        `json:"first_id,omitempty"`
	LastID  string        `json:"last_id,omitempty"`
	HasMore bool          `json:"has_more"`
}

// listFiles pages through files: purpose, limit (1..10000, default
// 10000), after (a file id) and order (desc, the default, or asc) as
// OpenAI takes them.
func (b *batchAPI) listFiles(w http.ResponseWriter, r *http.Request) {
	limit, ok := queryInt(w, r, "limit", maxFilesListLimit, maxFilesListLimit)
	if !ok {
		return
	}
	q := r.URL.Query()
	o := files.ListOptions{Purpose: q.Get("purpose"), After: q.Get("after"), Limit: limit}
	switch q.Get("order") {
	case "", "desc":
	case "asc":
		o.Asc = true
	default:
		writeParamError(w, http.StatusBadRequest, "invalid_request", "order", fmt.Sprintf("order: %q: want asc or desc", q.Get("order")))
		return
	}
	fs, more, err := b.files.List(r.Context(), o)
	if err != nil {
		b.writeFileError(w, err)
		return
	}
	page := fileList{Object: "list", Data: fs, HasMore: more}
	if len(fs) > 0 {
		page.FirstID, page.LastID = fs[0].ID, fs[len(fs)-1].ID
	}
	writeJSON(w, http.StatusOK, page)
}

func (b *batchAPI) getFile(w http.ResponseWriter, r *http.Request) {
	f, err := b.files.Get(r.Context(), r.PathValue("id"))
	if err != nil {
		b.writeFileError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, f)
}

func (b *batchAPI) fileContent(w http.ResponseWriter, r *http.Request) {
	rc, f, err := b.files.Open(r.Context(), r.PathValue("id"))
	if err != nil {
		b.writeFileError(w, err)
		return
	}
	defer rc.Close()
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Disposition", fmt.Sprintf("attachment; filename=%q", f.Filename))
	if _, err := io.Copy(w, rc); err != nil {
		b.logger.Warn("file content copy stopped", "file", f.ID, "err", err)
	}
}

func (b *batchAPI) deleteFile(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if err := b.files.Delete(r.Context(), id); err != nil {
		b.writeFileError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"id": id, "object": "file", "deleted": true})
}
