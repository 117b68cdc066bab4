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

// paramOf is the body field err names, as OpenAI's param names it
// ("max_tokens", "stop[0]", "init_config.n_layer"), or "". An error that
// carries its field (fieldError, generation.ChatFieldError,
// generation.RequestError, a decoding error, a json.UnmarshalTypeError)
// names it; otherwise the
// message does: `field "template": ...` as the loop and the recommender
// write it, or a leading path ("max_tokens: 5000 out of range",
// `device "tpu": ...`) whose first name is a field of body (a request
// struct), so a message that happens to hold a colon names nothing.
func paramOf(err error, body any) string {
	if err == nil {
		return ""
	}
	if p := carriedParam(err); p != "" {
		return p
	}
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) && te.Field != "" {
		return te.Field
	}
	msg := err.Error()
	if _, rest, ok := strings.Cut(msg, `field "`); ok {
		if name, _, ok := strings.Cut(rest, `"`); ok && isPath(name) {
			return name
		}
	}
	p := leadingPath(msg)
	root, _, _ := strings.Cut(strings.SplitN(p, "[", 2)[0], ".")
	if p == "" || !bodyFields(reflect.TypeOf(body))[root] {
		return ""
	}
	return p
}

// carriedParam is the field an error names in its own type: a fieldError,
// a chat or embeddings request error, or a decoding error of a body
// (decodeError).
func carriedParam(err error) string {
	var fe *fieldError
	var ce *generation.ChatFieldError
	var re *generation.RequestError
	switch {
	case errors.As(err, &fe):
		return fe.param
	case errors.As(err, &ce):
		return ce.Param
	case errors.As(err, &re):
		return re.Param
	}
	return ""
}

// fieldError is a request refused for one field: param names it as
// OpenAI does, and the message begins with it.
type fieldError struct {
	param, msg string
}

func (e *fieldError) Error() string { return e.param + ": " + e.msg }

// leadingPath is the field path a message begins with, up to the first
// character a path cannot hold: "stop[0]" of "stop[0]: empty sequence",
// "device" of `device "tpu": want ...`; "" when the message does not
// begin with a name followed by ": ", " " or "[".
func leadingPath(msg string) string {
	head, _, ok := strings.Cut(msg, ":")
	if !ok {
		return ""
	}
	end := 0
	for end < len(head) && isPathByte(head[end]) {
		end++
	}
	p := head[:end]
	if open := strings.LastIndexByte(p, '['); open > strings.LastIndexByte(p, ']') {
		// An index that is not a number: metadata["k"] names metadata.
		p, end = p[:open], open
	}
	if !isPath(p) || (end < len(head) && head[end] != ' ' && head[end] != '[') {
		return ""
	}
	return p
}

func isPathByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == '[' || c == ']'
}

// isPath reports whether p is a field path: names joined by "." and
// followed by [N] indexes, such as messages[1].role.
func isPath(p string) bool {
	if p == "" || !(p[0] >= 'a' && p[0] <= 'z' || p[0] >= 'A' && p[0] <= 'Z' || p[0] == '_') {
		return false
	}
	for i := 0; i < len(p); i++ {
		switch c := p[i]; {
		case c == '[':
			j := strings.IndexByte(p[i:], ']')
			if j < 2 {
				return false
			}
			for _, d := range p[i+1 : i+j] {
				if d < '0' || d > '9' {
					return false
				}
			}
			i += j
		case c == '.':
			if i+1 == len(p) || p[i+1] == '.' || p[i+1] == '[' {
				return false
			}
		case !isPathByte(c) || c == ']':
			return false
		}
	}
	return true
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
