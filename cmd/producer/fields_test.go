package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/tidwall/sjson"

	"github.com/tandem-ai/tandem/artifact"
	"github.com/tandem-ai/tandem/auth"
	"github.com/tandem-ai/tandem/feedback"
	"github.com/tandem-ai/tandem/generation"
	"github.com/tandem-ai/tandem/jobs"
	"github.com/tandem-ai/tandem/loop"
)

// The field tests send every route that takes a body one field at a time
// done wrong: a field it does not know, each known field with a value of
// the wrong JSON type, the values out of a field's range or set, each
// required field left out; each must be refused with 400 (404 for a
// session or file that is not there), type invalid_request_error, param
// naming exactly that field as OpenAI writes it (messages[1].role,
// stream_options.include_usage) and a message naming it. The nulls that
// clients send for optional fields are accepted, and a body that is not
// one JSON object is refused naming the body. One server serves the whole
// table on noWorkerTestRedisDB, where no worker is listed: a body past
// every check gets 503 no_worker on the interactive routes, before
// anything is queued.

// fieldRoute is one route that takes a JSON body.
type fieldRoute struct {
	path string // under /v1/
	// openai routes are sent by the official client (option.WithJSONSet
	// and WithJSONDel change the body); the others by net/http.
	openai bool
	// body is the route's request type: valid must name each of its JSON
	// fields (those of nested structs too), so a field added later without
	// a row here fails the test.
	body any
	// valid bodies pass every check and are answered accept.
	valid  []string
	accept int
	// bad are values out of a field's range or enum; notFound name what
	// is not there (404).
	bad, notFound []badValue
	// required fields are refused when left out; nulls are the optional
	// fields clients send as null.
	required, nulls []string
	// wrong replaces the wrong-typed value the test would send for a field
	// (sjson path) that takes more than one JSON type.
	wrong map[string]any
}

// badValue sets field (an sjson path, as option.WithJSONSet takes it) of
// the first valid body that has it to value; param is what the 400 must
// name, the field as OpenAI writes it when "".
type badValue struct {
	field string
	value any
	param string
}

// apiParam writes an sjson path as OpenAI's param names it:
// "messages.1.role" is "messages[1].role".
func apiParam(path string) string {
	var b strings.Builder
	for i, seg := range strings.Split(path, ".") {
		if _, err := strconv.Atoi(seg); err == nil && i > 0 {
			b.WriteString("[" + seg + "]")
			continue
		}
		if i > 0 {
			b.WriteByte('.')
		}
		b.WriteString(seg)
	}
	return b.String()
}

// jsonFieldPaths are the JSON names of t's fields, with those of nested
// structs (not of types that decode themselves) as "outer.inner".
func jsonFieldPaths(t reflect.Type, prefix string) []string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	var out []string
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" || !f.IsExported() {
			continue
		}
		ft := f.Type
		for ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		nested := ft.Kind() == reflect.Struct && !reflect.PointerTo(ft).Implements(reflect.TypeFor[json.Unmarshaler]())
		switch {
		case f.Anonymous && name == "":
			out = append(out, jsonFieldPaths(ft, prefix)...)
		case nested:
			out = append(out, jsonFieldPaths(ft, prefix+name+".")...)
		default:
			out = append(out, prefix+name)
		}
	}
	return out
}

// leafPaths are the sjson paths of every member of the JSON object b, at
// any depth (through arrays of objects too), with their values.
func leafPaths(t *testing.T, b string) map[string]any {
	t.Helper()
	var v any
	dec := json.NewDecoder(strings.NewReader(b))
	dec.UseNumber()
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("valid body %s: %v", b, err)
	}
	out := map[string]any{}
	var walk func(prefix string, v any)
	walk = func(prefix string, v any) {
		switch x := v.(type) {
		case map[string]any:
			for k, e := range x {
				out[prefix+k] = e
				walk(prefix+k+".", e)
			}
		case []any:
			if prefix == "" {
				return
			}
			for i, e := range x {
				if _, ok := e.(map[string]any); ok {
					walk(prefix+strconv.Itoa(i)+".", e)
				}
			}
		}
	}
	walk("", v)
	return out
}

// wrongType is a value of another JSON type than v: a number for a
// string, a list or an object; a string for a number or a bool.
func wrongType(v any) any {
	switch v.(type) {
	case json.Number, bool:
		return "7"
	}
	return 7
}

// fieldsEnv is the server of the field tests and the clients that call it.
type fieldsEnv struct {
	srv    *httptest.Server
	client openai.Client
	gen    *genEnv
}

// newFieldsEnv serves every /v1 route of `producer serve`, open, on
// noWorkerTestRedisDB with an embedded NATS server, batches and files in a
// data directory of the test's own, and inputDir as the batches' input
// directory.
func newFieldsEnv(t *testing.T, inputDir string) *fieldsEnv {
	t.Helper()
	t.Setenv(artifact.EnvStore, "")
	t.Setenv(EnvBatchInputDir, inputDir)
	e := newGenEnv(t, fmt.Sprintf("redis://%s/%d", testRedisAddr(), noWorkerTestRedisDB))
	logger := slog.New(slog.DiscardHandler)
	batches, err := newBatchAPI(context.Background(), e.cfg, logger)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(batches.Close)
	recs, err := newRecsAPI(context.Background(), e.cfg, e.rdb, logger)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(recs.Close)
	authn, err := auth.New(auth.Options{Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	api := &apiServer{client: e.api.client, logger: logger, batches: batches, recs: recs, completions: e.api}
	srv := httptest.NewServer(serveMux(api, authn, http.NotFoundHandler(), prometheus.NewRegistry(), e.cfg.DataDir, nil))
	t.Cleanup(srv.Close)
	return &fieldsEnv{srv: srv, client: oaiClient(srv), gen: e}
}

// answer is what a route answered: the status and, for an error, its
// body.
type answer struct {
	status int
	err    apiError
	raw    string
}

// send posts body to route r, through the official client for an OpenAI
// route; set and del (sjson paths) change the body first.
func (f *fieldsEnv) send(t *testing.T, r fieldRoute, body []byte, set map[string]any, del string) answer {
	t.Helper()
	if !r.openai {
		var err error
		for k, v := range set {
			if body, err = sjson.SetBytes(body, k, v); err != nil {
				t.Fatal(err)
			}
		}
		if del != "" {
			if body, err = sjson.DeleteBytes(body, del); err != nil {
				t.Fatal(err)
			}
		}
		return f.post(t, r.path, "application/json", body)
	}
	opts := []option.RequestOption{option.WithRequestBody("application/json", body)}
	for k, v := range set {
		opts = append(opts, option.WithJSONSet(k, v))
	}
	if del != "" {
		opts = append(opts, option.WithJSONDel(del))
	}
	return f.callClient(t, r.path, opts...)
}

// callClient posts with the official client and reads its API error.
func (f *fieldsEnv) callClient(t *testing.T, path string, opts ...option.RequestOption) answer {
	t.Helper()
	var raw *http.Response
	var out json.RawMessage
	err := f.client.Post(context.Background(), path, nil, &out, append(opts, option.WithResponseInto(&raw))...)
	if err == nil {
		return answer{status: raw.StatusCode, raw: string(out)}
	}
	ae := apiErrorOf(t, "POST /v1/"+path, err)
	a := answer{status: ae.StatusCode, raw: ae.RawJSON()}
	a.err.Error.Message, a.err.Error.Type, a.err.Error.Code = ae.Message, ae.Type, ae.Code
	if ae.Param != "" {
		a.err.Error.Param = &ae.Param
	}
	return a
}

// post sends body to /v1/path with net/http.
func (f *fieldsEnv) post(t *testing.T, path, ctype string, body []byte) answer {
	t.Helper()
	resp, err := http.Post(f.srv.URL+"/v1/"+path, ctype, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	a := answer{status: resp.StatusCode, raw: string(b)}
	if resp.StatusCode >= 400 {
		if err := json.Unmarshal(b, &a.err); err != nil {
			t.Fatalf("POST /v1/%s: %d %s: not an API error", path, resp.StatusCode, b)
		}
	}
	return a
}

// param is the answer's param, "" for null.
func (a answer) param() string {
	if a.err.Error.Param == nil {
		return ""
	}
	return *a.err.Error.Param
}

// refuses checks that a is a 400 naming param (the body itself for "").
func (a answer) refuses(param string) error { return a.refusesWith(http.StatusBadRequest, param) }

// refusesWith checks that a is an invalid_request_error of status naming
// param (the body itself for "").
func (a answer) refusesWith(status int, param string) error {
	msg := a.err.Error.Message
	switch {
	case a.status != status || a.err.Error.Type != "invalid_request_error":
		return fmt.Errorf("%d, want %d invalid_request_error: %s", a.status, status, a.raw)
	case a.param() != param:
		return fmt.Errorf("param %q, want %q: %s", a.param(), param, a.raw)
	case param == "" && !strings.Contains(msg, "body"):
		return fmt.Errorf("the message does not name the body: %s", a.raw)
	case !strings.Contains(msg, param):
		return fmt.Errorf("the message does not name %s: %s", param, a.raw)
	}
	return nil
}

// fieldsJSONL is a valid OpenAI batch input of one line.
const fieldsJSONL = `{"custom_id":"a","method":"POST","url":"/v1/completions","body":{"model":"builtin:tiny","prompt":"hi","max_tokens":2}}`

// fieldsSession is a session whose last turn is fieldsTurn's generation.
const fieldsSession, fieldsTurn = "sess-fields-turns", "gen-fields-turn"

// fieldRoutes are the routes that take a JSON body, with what each
// accepts and refuses. fileID is an uploaded batch input; input_path
// names a file of the batches' input directory.
func fieldRoutes(fileID string) []fieldRoute {
	return []fieldRoute{{
		path: "completions", openai: true, body: completionRequest{}, accept: http.StatusServiceUnavailable,
		valid: []string{`{"model":"builtin:tiny","prompt":"hi","max_tokens":4,"temperature":0.5,"top_p":0.9,"top_k":5,"min_p":0.1,
			"presence_penalty":0.5,"frequency_penalty":0.5,"repetition_penalty":1.1,"seed":7,"stop":["\n"],"n":2,"logprobs":2,
			"echo":false,"logit_bias":{},"user":"u1","stream":true,"stream_options":{"include_usage":true},
			"template":"t1","topic":"p1"}`,
			`{"model":"builtin:tiny","prompt":"hi","session":"` + fieldsSession + `","replaces":"` + fieldsTurn + `","best_of":1}`,
			`{"model":"builtin:tiny","prompt":[[464,3290],[198]],"suffix":"","top_p":0}`},
		bad: []badValue{
			{"model", "", ""}, {"prompt", "", ""},
			{"max_tokens", 0, ""}, {"max_tokens", 5000, ""},
			{"temperature", -0.5, ""}, {"temperature", 2.5, ""},
			{"top_p", 1.5, ""}, {"suffix", "after", ""}, {"prompt", []any{"a", 7}, "prompt[1]"},
			{"top_k", -2, ""}, {"min_p", 1.5, ""},
			{"presence_penalty", 2.5, ""}, {"frequency_penalty", -2.5, ""}, {"repetition_penalty", 0, ""},
			{"n", 0, ""}, {"n", 99, ""}, {"logprobs", -1, ""}, {"logprobs", 99, ""},
			{"stop", []string{"a", "b", "c", "d", "e"}, ""}, {"stop", []string{""}, "stop[0]"},
			{"best_of", 3, ""}, {"echo", true, ""}, {"stream_options.bogus", true, ""}, {"logit_bias", map[string]int{"50256": -100}, ""},
			{"session", "not an id!", ""}, {"replaces", "gen-1", ""},
			{"template", strings.Repeat("t", 300), ""}, {"topic", strings.Repeat("p", 300), ""},
			{"user", strings.Repeat("u", 300), ""},
		},
		notFound: []badValue{{"session", "sess-none", ""}},
		nulls: []string{"max_tokens", "temperature", "top_p", "presence_penalty", "frequency_penalty", "seed", "stop", "n", "logprobs",
			"echo", "best_of", "logit_bias", "user", "stream", "stream_options", "suffix"},
		required: []string{"model", "prompt"},
	}, {
		path: "chat/completions", openai: true, body: chatRequest{}, accept: http.StatusServiceUnavailable,
		valid: []string{`{"model":"builtin:tiny","messages":[{"role":"system","content":"be brief"},{"role":"user","content":[{"type":"text","text":"hi"}]},
			{"role":"assistant","content":" hello"},{"role":"user","content":"and?"}],"max_completion_tokens":4,
			"temperature":0.5,"top_p":0.9,"presence_penalty":0.5,"frequency_penalty":0.5,"seed":7,"stop":"\n","n":2,
			"logprobs":true,"user":"u1","stream":true,"stream_options":{"include_usage":true},"template":"t1","topic":"p1"}`,
			`{"model":"builtin:tiny","messages":[{"role":"user","content":"hi"}],"max_tokens":4,"logprobs":true,"top_logprobs":2}`,
			`{"model":"builtin:tiny","messages":[{"role":"user","content":"hi"}],"session":"` + fieldsSession + `","replaces":"` + fieldsTurn + `"}`},
		bad: []badValue{
			{"model", "", ""}, {"messages", []any{}, ""},
			{"messages.1.role", "tool", ""}, {"messages.1.name", "bob", ""}, {"messages.1.content.0.type", "image_url", ""},
			{"messages.1.content.0.image_url", "x", ""}, {"messages.1", "hi", ""},
			{"max_tokens", 0, ""}, {"max_tokens", 5000, ""}, {"max_completion_tokens", 5000, ""}, {"max_completion_tokens", 0, ""},
			{"temperature", 2.5, ""}, {"top_p", 1.5, ""}, {"presence_penalty", 2.5, ""}, {"frequency_penalty", -2.5, ""},
			{"stop", []string{"a", "b", "c", "d"}, ""}, {"n", 0, ""}, {"n", 99, ""},
			{"top_logprobs", 21, ""}, {"top_logprobs", -1, ""},
			{"template", strings.Repeat("t", 300), ""}, {"user", strings.Repeat("u", 300), ""},
			{"session", "not an id!", ""}, {"replaces", "gen-1", ""},
		},
		notFound: []badValue{{"session", "sess-none", ""}},
		nulls: []string{"max_tokens", "max_completion_tokens", "temperature", "top_p", "presence_penalty", "frequency_penalty", "seed",
			"stop", "n", "logprobs", "top_logprobs", "user", "stream", "stream_options", "messages.2.content"},
		required: []string{"model", "messages", "messages.1.role"},
	}, {
		path: "embeddings", openai: true, body: generation.EmbeddingsBody{}, accept: http.StatusServiceUnavailable,
		valid: []string{`{"model":"builtin:tiny","input":["a","b"],"encoding_format":"base64","user":"u1"}`,
			`{"model":"builtin:tiny","input":"a","dimensions":` + strconv.Itoa(generation.BuiltinConfigs["tiny"].NEmbd) + `,"encoding_format":"float"}`},
		bad: []badValue{
			{"model", "", ""}, {"input", []any{}, ""}, {"input", []any{"a", 7}, "input[1]"},
			{"encoding_format", "hex", ""}, {"dimensions", 0, ""}, {"user", strings.Repeat("u", 300), ""},
		},
		required: []string{"model", "input"},
		nulls:    []string{"encoding_format", "user", "dimensions"},
	}, {
		path: "batches", openai: true, body: createBatchRequest{}, accept: http.StatusOK,
		valid: []string{
			`{"input_file_id":"` + fileID + `","endpoint":"/v1/completions","completion_window":"24h","metadata":{"k":"v"}}`,
			`{"model":"builtin:tiny","input":` + strconv.Quote(fieldsJSONL) + `,"chunk_size":1,"batch_size":1,"skip_invalid":true,"device":"cpu",
				"postprocess":{"strip_prompt":true,"stop":["\n"],"trim":true,"max_chars":10}}`,
			`{"model":"builtin:tiny","template":"Say {{.x}}","format":"csv","input":"custom_id,x\nc1,hi\n"}`,
			`{"model":"builtin:tiny","input_path":"in.jsonl"}`},
		bad: []badValue{
			{"endpoint", "/v1/images", ""}, {"completion_window", "1h", ""}, {"metadata", map[string]string{strings.Repeat("k", 65): "v"}, ""},
			{"metadata.k", strings.Repeat("v", 600), "metadata"},
			{"chunk_size", -1, ""}, {"batch_size", -1, ""}, {"device", "tpu", ""}, {"format", "xml", ""}, {"template", "{{", ""},
			{"postprocess.max_chars", -1, ""}, {"postprocess.stop", []string{""}, "postprocess.stop[0]"}, {"input", "not jsonl", ""},
			{"input_path", "../x.jsonl", ""},
		},
		notFound: []badValue{{"input_file_id", "file-none", ""}},
		required: []string{"input_file_id"},
		nulls:    []string{"metadata", "endpoint", "completion_window"},
	}, {
		path: "sessions", body: createSessionRequest{}, accept: http.StatusCreated,
		valid: []string{`{"user":"u1","instructions":"tone: casual"}`, `{"id":"sess-fields","user":"u1"}`},
		bad:   []badValue{{"id", "not an id!", ""}, {"user", strings.Repeat("u", 300), ""}, {"instructions", "tone", ""}},
		nulls: []string{"user", "instructions"},
	}, {
		path: "jobs", body: createJobRequest{}, accept: http.StatusAccepted,
		valid: []string{`{"kind":"ping","args":{"sleep_ms":1},"queue":"default","max_retry":1}`, `{"kind":"ping","args":{},"device":"cpu","task_id":"fields-1"}`},
		bad: []badValue{
			{"kind", "no-such-kind", ""}, {"args", []int{}, ""}, {"args.sleep_ms", -1, ""}, {"args.bogus", 1, ""},
			{"queue", "nowhere", ""}, {"device", "tpu", ""}, {"task_id", "a b", ""}, {"max_retry", -1, ""}, {"max_retry", 1000, ""},
		},
		required: []string{"kind", "args"},
		nulls:    []string{"queue", "device", "task_id", "max_retry"},
	}, {
		path: "finetunes", body: jobs.FinetuneArgs{}, accept: http.StatusAccepted,
		valid: []string{`{"model":"builtin:tiny","data":"d.txt","format":"text","out":"runs/a","epochs":1,"batch_size":2,"seq_len":8,"accum":1,
			"lr":0.001,"min_lr":0.0001,"warmup":0,"schedule":"cosine","weight_decay":0.1,"max_grad_norm":1,"dev_frac":0.1,"test_frac":0.1,
			"patience":1,"seed":1,"checkpoint_every":1,"gen_eval":1,"gen_max_tokens":4,"register":"m1","promote":false}`,
			`{"init_config":{"n_layer":1,"n_head":1,"n_embd":8,"n_positions":8,"vocab_size":16,"layer_norm_epsilon":0.00001},"data":"d.txt"}`},
		bad: []badValue{
			{"model", "builtin:huge", ""}, {"data", "", ""}, {"format", "csv", ""}, {"epochs", -1, ""}, {"batch_size", -1, ""},
			{"seq_len", 1, ""}, {"accum", -1, ""}, {"lr", 2, ""}, {"min_lr", 1, ""}, {"warmup", -2, ""}, {"schedule", "step", ""},
			{"weight_decay", 1, ""}, {"max_grad_norm", -1, ""}, {"dev_frac", 1, ""}, {"test_frac", -0.5, ""}, {"patience", -1, ""},
			{"checkpoint_every", -1, ""}, {"gen_eval", -1, ""}, {"gen_max_tokens", -1, ""}, {"register", "bad name!", ""},
			{"out", "../outside", ""}, {"init_config.n_layer", 0, ""}, {"init_config.n_head", 3, "init_config.n_embd"},
			{"init_config.layer_norm_epsilon", 2, ""}, {"init_config.vocab_size", -1, ""},
		},
		required: []string{"model", "data"},
	}, {
		path: "models/m1/promote", body: struct {
			Version int `json:"version"`
		}{}, accept: http.StatusNotFound,
		valid:    []string{`{"version":1}`},
		bad:      []badValue{{"version", 0, ""}},
		required: []string{"version"},
	}, {
		path: "generations/gen-none/feedback", body: loop.Feedback{}, accept: http.StatusNotFound,
		valid:    []string{`{"action":"rate","value":4,"user":"u1"}`, `{"action":"edit","edited_text":"better"}`},
		bad:      []badValue{{"action", "love", ""}, {"value", 9, ""}, {"value", 4.5, ""}, {"user", strings.Repeat("u", 300), ""}},
		required: []string{"action"},
		nulls:    []string{"user"},
	}, {
		path: "feedback", body: recsFeedbackFields{}, accept: http.StatusAccepted,
		valid: []string{`{"id":"ev-fields","user":"u1","item":"i1","event":"rating","value":4,"previous":3,"ts":"2025-01-02T03:04:05Z","kind":"topic"}`},
		bad: []badValue{
			{"event", "love", ""}, {"value", 9, ""}, {"user", "", ""}, {"item", "", ""}, {"previous", 9, ""}, {"ts", "yesterday", ""},
		},
		required: []string{"event", "item"},
		wrong:    map[string]any{"ts": true},
	}, {
		// Feedback on a generation: checked, then refused as the
		// generation is not there.
		path: "feedback", body: feedback.Event{}, accept: http.StatusNotFound,
		valid: []string{`{"generation_id":"gen-none","action":"rate","value":4,"user":"u1","id":"fb-rate-gen-none.r1","item":"i1","event":"rating",
			"ts":"2025-01-02T03:04:05Z","kind":"topic","template":"t1","topic":"p1","model":"builtin:tiny","source":"api","prompt":"hi",
			"completion":"hello","revision":1,"previous":3,"rated_at":"2025-01-01T00:00:00Z"}`,
			`{"generation_id":"gen-none","action":"edit","event":"edited","edited_text":"better","user":"u1"}`},
		bad:   []badValue{{"action", "love", ""}, {"generation_id", "not an id!", ""}, {"revision", -1, ""}},
		wrong: map[string]any{"ts": true, "rated_at": true},
	}}
}

// recsFeedbackFields are the fields of POST /v1/feedback's plain event.
type recsFeedbackFields struct {
	ID       string  `json:"id"`
	User     string  `json:"user"`
	Item     string  `json:"item"`
	Event    string  `json:"event"`
	Value    float64 `json:"value"`
	Previous float64 `json:"previous"`
	TS       string  `json:"ts"`
	Kind     string  `json:"kind"`
}

// TestEveryBodyFieldIsRefusedByName runs fieldRoutes and the upload's
// form fields (checkUploadFields) against one server.
func TestEveryBodyFieldIsRefusedByName(t *testing.T) {
	inputDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(inputDir, "in.jsonl"), []byte(fieldsJSONL+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	f := newFieldsEnv(t, inputDir)
	sessions := loop.NewSessionStore(f.gen.rdb, loop.SessionOptions{})
	if _, err := sessions.Create(context.Background(), loop.Session{ID: fieldsSession, User: "u1"}); err != nil {
		t.Fatal(err)
	}
	if _, err := sessions.Append(context.Background(), fieldsSession, loop.Turn{Prompt: "hi", Reply: " hello", GenerationID: fieldsTurn}); err != nil {
		t.Fatal(err)
	}
	file, err := f.client.Files.New(context.Background(), openai.FileNewParams{
		File: openai.File(strings.NewReader(fieldsJSONL+"\n"), "in.jsonl", "application/jsonl"), Purpose: openai.FilePurposeBatch})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range fieldRoutes(file.ID) {
		t.Run(strings.ReplaceAll(r.path, "/", "_"), func(t *testing.T) { checkRouteFields(t, f, r) })
	}
	t.Run("files", func(t *testing.T) { checkUploadFields(t, f) })
}

// checkRouteFields sends r its valid bodies, then each done wrong.
func checkRouteFields(t *testing.T, f *fieldsEnv, r fieldRoute) {
	// Every field of the request type is in a valid body; a field is
	// changed in the first valid body that has it.
	members := make([]map[string]any, len(r.valid))
	named := map[string]any{}
	for i, v := range r.valid {
		members[i] = leafPaths(t, v)
		for k, val := range members[i] {
			if _, seen := named[k]; !seen {
				named[k] = val
			}
		}
	}
	for _, field := range jsonFieldPaths(reflect.TypeOf(r.body), "") {
		if _, ok := named[field]; !ok {
			t.Errorf("field %s is in no valid body", field)
		}
	}
	bodyWith := func(field string) []byte {
		for i, m := range members {
			if _, ok := m[field]; ok {
				return []byte(r.valid[i])
			}
		}
		return []byte(r.valid[0])
	}
	for i, v := range r.valid {
		if a := f.send(t, r, []byte(v), nil, ""); a.status != r.accept {
			t.Errorf("valid body %d: %d, want %d: %s", i, a.status, r.accept, a.raw)
		}
	}
	first := []byte(r.valid[0])
	// A field the route does not know.
	if err := f.send(t, r, first, map[string]any{"temprature": 1}, "").refuses("temprature"); err != nil {
		t.Errorf("unknown field: %v", err)
	}
	// Every field with a value of the wrong JSON type...
	for _, p := range slices.Sorted(maps.Keys(named)) {
		w, ok := r.wrong[p]
		if !ok {
			w = wrongType(named[p])
		}
		if err := f.send(t, r, bodyWith(p), map[string]any{p: w}, "").refuses(apiParam(p)); err != nil {
			t.Errorf("%s = %v: %v", p, w, err)
		}
	}
	// ...out of its range or set, or naming what is not there...
	for _, c := range []struct {
		status int
		bad    []badValue
	}{{http.StatusBadRequest, r.bad}, {http.StatusNotFound, r.notFound}} {
		for _, b := range c.bad {
			want := b.param
			if want == "" {
				want = apiParam(b.field)
			}
			if err := f.send(t, r, bodyWith(b.field), map[string]any{b.field: b.value}, "").refusesWith(c.status, want); err != nil {
				t.Errorf("%s = %v: %v", b.field, b.value, err)
			}
		}
	}
	// ...or left out when it is required.
	for _, p := range r.required {
		if err := f.send(t, r, bodyWith(p), nil, p).refuses(apiParam(p)); err != nil {
			t.Errorf("without %s: %v", p, err)
		}
	}
	// Null, as clients send it for an optional field, is accepted.
	for _, p := range r.nulls {
		if a := f.send(t, r, bodyWith(p), map[string]any{p: nil}, ""); a.status != r.accept {
			t.Errorf("%s = null: %d, want %d: %s", p, a.status, r.accept, a.raw)
		}
	}
	// A body that is not one JSON object.
	for _, body := range []string{``, ` `, `[]`, `[` + r.valid[0] + `]`, `null`, `"x"`, `7`, r.valid[0] + ` {}`, r.valid[0] + ` x`, `{"model":`} {
		var a answer
		if r.openai {
			a = f.callClient(t, r.path, option.WithRequestBody("application/json", []byte(body)))
		} else {
			a = f.post(t, r.path, "application/json", []byte(body))
		}
		if err := a.refuses(""); err != nil {
			t.Errorf("body %.40q: %v", body, err)
		}
	}
}

// multipartBody is a multipart form of fields (name, value) and, when
// file is not "", a file part "file" holding it.
func multipartBody(t *testing.T, file string, fields ...string) (string, []byte) {
	t.Helper()
	var b bytes.Buffer
	w := multipart.NewWriter(&b)
	for i := 0; i+1 < len(fields); i += 2 {
		if err := w.WriteField(fields[i], fields[i+1]); err != nil {
			t.Fatal(err)
		}
	}
	if file != "" {
		fw, err := w.CreateFormFile("file", "in.jsonl")
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.WriteString(fw, file)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return w.FormDataContentType(), b.Bytes()
}

// checkUploadFields sends POST /v1/files, through the official client,
// forms with a field it does not know and with each field wrong: 400
// naming the field; the expiry OpenAI's clients send is accepted within
// OpenAI's range; a body that is not a multipart form is refused naming
// the body.
func checkUploadFields(t *testing.T, f *fieldsEnv) {
	good := fieldsJSONL + "\n"
	for _, c := range []struct {
		name   string
		file   string
		fields []string
		param  string // "": accepted
	}{
		{"valid", good, []string{"purpose", "batch"}, ""},
		{"expiry", good, []string{"purpose", "batch", "expires_after[anchor]", "created_at", "expires_after[seconds]", "3600"}, ""},
		{"unknown field", good, []string{"purpose", "batch", "purpse", "batch"}, "purpse"},
		{"purpose missing", good, nil, "purpose"},
		{"purpose not batch", good, []string{"purpose", "fine-tune"}, "purpose"},
		{"file missing", "", []string{"purpose", "batch"}, "file"},
		{"file twice", good, []string{"purpose", "batch", "file", "x"}, "file"},
		{"expiry anchor", good, []string{"purpose", "batch", "expires_after[anchor]", "last_used", "expires_after[seconds]", "3600"}, "expires_after[anchor]"},
		{"expiry seconds low", good, []string{"purpose", "batch", "expires_after[anchor]", "created_at", "expires_after[seconds]", "60"}, "expires_after[seconds]"},
		{"expiry seconds text", good, []string{"purpose", "batch", "expires_after[anchor]", "created_at", "expires_after[seconds]", "soon"}, "expires_after[seconds]"},
		{"expiry unknown", good, []string{"purpose", "batch", "expires_after[when]", "x"}, "expires_after[when]"},
		{"expiry half", good, []string{"purpose", "batch", "expires_after[anchor]", "created_at"}, "expires_after[seconds]"},
	} {
		ctype, body := multipartBody(t, c.file, c.fields...)
		a := f.callClient(t, "files", option.WithRequestBody(ctype, body))
		switch {
		case c.param == "" && a.status != http.StatusOK:
			t.Errorf("%s: %d, want 200: %s", c.name, a.status, a.raw)
		case c.param != "":
			if err := a.refuses(c.param); err != nil {
				t.Errorf("%s: %v", c.name, err)
			}
		}
	}
	for _, c := range []struct{ ctype, body string }{
		{"application/json", `{"purpose":"batch"}`},
		{"multipart/form-data", ``},
		{"multipart/form-data; boundary=x", `not a form`},
	} {
		if err := f.callClient(t, "files", option.WithRequestBody(c.ctype, []byte(c.body))).refuses(""); err != nil {
			t.Errorf("%s %.20q: %v", c.ctype, c.body, err)
		}
	}
}
