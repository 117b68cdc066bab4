package main

import (
	"crypto/rand"
	"encoding/json"
	"errors"
	"net/http"
	"reflect"
	"strings"

	"github.com/tandem-ai/tandem/generation"
	"github.com/tandem-ai/tandem/internal/apierror"
)

// writeParamError is writeError naming the request field at fault (param;
// "" for none), as OpenAI's errors do.
func writeParamError(w http.ResponseWriter, status int, code, param, msg string) {
	apierror.Write(w, status, code, param, msg)
}

// paramOf is the body field err names, or "": a *generation.RequestError
// names it ("prompt[1]"); other validation errors start with
// the field ("max_tokens: 5000 out of range"), and a field counts when body
// (a request struct) has it, so a message that happens to hold a colon
// names nothing. Decoding errors name the field too (jsonErrorParam).
func paramOf(err error, body any) string {
	if p := jsonErrorParam(err); p != "" {
		return p
	}
	var re *generation.RequestError
	if errors.As(err, &re) {
		return re.Param
	}
	if err == nil {
		return ""
	}
	field, _, ok := strings.Cut(err.Error(), ": ")
	if !ok || !bodyFields(reflect.TypeOf(body))[field] {
		return ""
	}
	return field
}

// jsonErrorParam is the field a decoding error names: an unknown field, or
// a value of the wrong type.
func jsonErrorParam(err error) string {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) && te.Field != "" {
		return te.Field
	}
	if err != nil {
		if rest, ok := strings.CutPrefix(strings.TrimPrefix(err.Error(), "body: "), `json: unknown field "`); ok {
			return strings.TrimSuffix(rest, `"`)
		}
	}
	return ""
}

// bodyFields are the JSON names of t's fields, those of embedded structs
// included.
func bodyFields(t reflect.Type) map[string]bool {
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	out := map[string]bool{}
	if t == nil || t.Kind() != reflect.Struct {
		return out
	}
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		switch {
		case name == "-":
		case f.Anonymous && name == "":
			for n := range bodyFields(f.Type) {
				out[n] = true
			}
		case name != "":
			out[name] = true
		case f.IsExported():
			out[f.Name] = true
		}
	}
	return out
}

// requestIDHeader carries the id of every answer under /v1, as OpenAI's
// x-request-id does (OpenAI's clients show it with an error).
const requestIDHeader = "X-Request-Id"

// withRequestID gives every answer of h a fresh request id.
func withRequestID(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set(requestIDHeader, "req_"+rand.Text())
		h.ServeHTTP(w, r)
	})
}

// v1Routes serves mux, answering what it has no route for in the API's
// error shape rather than net/http's text: 404 for a path no route has, 405
// (with Allow) for a route's path with another method. Redirects (a path to
// clean) are the mux's own.
func v1Routes(mux *http.ServeMux) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h, pattern := mux.Handler(r)
		if pattern != "" {
			mux.ServeHTTP(w, r)
			return
		}
		// No route: learn what the mux would answer without sending it.
		rec := &headerRecorder{header: http.Header{}}
		h.ServeHTTP(rec, r)
		switch {
		case rec.status == http.StatusMethodNotAllowed:
			allow := rec.header.Get("Allow")
			w.Header().Set("Allow", allow)
			writeError(w, http.StatusMethodNotAllowed, "method_not_allowed", r.Method+" "+r.URL.Path+": method not allowed; this route takes "+allow)
		case rec.status/100 == 3:
			for k, v := range rec.header {
				w.Header()[k] = v
			}
			w.WriteHeader(rec.status)
		default:
			writeError(w, http.StatusNotFound, "not_found", r.Method+" "+r.URL.Path+": no such route")
		}
	})
}

// headerRecorder keeps the status and headers a handler writes and drops
// its body.
type headerRecorder struct {
	header http.Header
	status int
}

func (h *headerRecorder) Header() http.Header { return h.header }

func (h *headerRecorder) WriteHeader(status int) {
	if h.status == 0 {
		h.status = status
	}
}

func (h *headerRecorder) Write(b []byte) (int, error) {
	h.WriteHeader(http.StatusOK)
	return len(b), nil
}
