package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tandem-ai/tandem/auth"
	"github.com/tandem-ai/tandem/dataroot"
	"github.com/tandem-ai/tandem/dataroot/dataroottest"
	"github.com/tandem-ai/tandem/jobs"
	"github.com/tandem-ai/tandem/model"
	"github.com/tandem-ai/tandem/pipeline"
	"github.com/tandem-ai/tandem/registry"
	"github.com/tandem-ai/tandem/tokenstream"
)

// oaiServer serves e's parts through serveMux, the routes of `producer
// serve`, open (no token file), with root as the producer's data root.
func oaiServer(t *testing.T, e *genEnv, root *dataroot.Root) *httptest.Server {
	t.Helper()
	authn, err := auth.New(auth.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	api := &apiServer{client: e.api.client, logger: e.logger, completions: e.api}
	srv := httptest.NewServer(serveMux(api, authn, http.NotFoundHandler(), prometheus.NewRegistry(), e.cfg.DataDir, root))
	t.Cleanup(srv.Close)
	return srv
}

// oaiClient is the official OpenAI client pointed at srv, without retries
// (a test wants the first answer).
func oaiClient(srv *httptest.Server) openai.Client { return oaiClientAt(srv.URL, "unused") }

// oaiClientAt is the official client for the API at url with token key,
// without retries, so a test sees every answer.
func oaiClientAt(url, key string) openai.Client {
	return openai.NewClient(option.WithBaseURL(url+"/v1/"), option.WithAPIKey(key), option.WithMaxRetries(0))
}

// apiErrorOf is the OpenAI client's API error in err; it fails the test
// when err is none.
func apiErrorOf(t *testing.T, what string, err error) *openai.Error {
	t.Helper()
	var ae *openai.Error
	if !errors.As(err, &ae) {
		t.Fatalf("%s: %v, want an API error", what, err)
	}
	return ae
}

// waitWorkerListed waits until asynq's server list shows a worker serving
// the interactive queue, as the producer checks before it enqueues
// (requireInteractiveWorker): a worker's first heartbeat is written just
// after it starts.
func waitWorkerListed(t testing.TB, e *genEnv) {
	t.Helper()
	if _, ok := e.cfg.Queues[pipeline.QueueInteractive]; !ok || e.api.workers == nil {
		return
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		ok, err := e.api.workers.serving()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no worker listed on the %s queue (%v)", pipeline.QueueInteractive, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// listIdleWorker serves e's completion routes anew (e.srv) with a worker
// listed on the interactive queue whatever asynq's server list says: one
// that takes nothing (stuck, or stopped before its heartbeat expired), for
// tests of what happens while nobody picks a job up. With none listed a
// request gets 503 at once (TestOpenAINoWorkerIs503AtOnce).
func (e *genEnv) listIdleWorker(t testing.TB) {
	t.Helper()
	api := *e.api
	api.workers = &workerWatch{servers: func() ([]*asynq.ServerInfo, error) {
		return []*asynq.ServerInfo{{Queues: map[string]int{pipeline.QueueInteractive: 1}, Status: "active"}}, nil
	}}
	mux := http.NewServeMux()
	srv := &apiServer{client: e.api.client, logger: e.logger, completions: &api}
	srv.completionsRoutes(mux)
	srv.embeddingsRoutes(mux)
	e.srv = httptest.NewServer(openGuard(t, mux))
	t.Cleanup(e.srv.Close)
}

// sameError reports whether the error bodies got and want have the same
// code and message, whatever else they say (type, param).
func sameError(got, want string) bool {
	var g, w apiError
	return json.Unmarshal([]byte(got), &g) == nil && json.Unmarshal([]byte(want), &w) == nil &&
		g.Error.Code == w.Error.Code && g.Error.Message == w.Error.Message
}

// saveTinyModel writes a small model directory at dir.
func saveTinyModel(t *testing.T, dir string) {
	t.Helper()
	m, err := model.New(model.Config{NLayer: 1, NHead: 1, NEmbd: 8, NPositions: 8, VocabSize: 16, LayerNormEpsilon: 1e-5}, 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.SaveDir(dir); err != nil {
		t.Fatal(err)
	}
}

// TestOpenAIModelsListAndRetrieve lists and retrieves models with the
// official client: the builtin ones, a registered name and its version,
// and model directories one and two levels down the data root, by their
// paths there; no answer shows a server path.
func TestOpenAIModelsListAndRetrieve(t *testing.T) {
	e := newGenEnv(t, "")
	dir := t.TempDir()
	saveTinyModel(t, filepath.Join(dir, "top"))
	saveTinyModel(t, filepath.Join(dir, "family", "mini"))
	saveTinyModel(t, filepath.Join(dir, "a", "b", "too-deep"))
	if err := os.MkdirAll(filepath.Join(dir, "empty"), 0o755); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	reg := registry.New(e.rdb, jobs.RegistryDir(e.cfg.DataDir))
	if _, err := reg.Register(ctx, "oai-model", filepath.Join(dir, "top"), registry.Version{Parent: "scratch"}); err != nil {
		t.Fatal(err)
	}
	if _, err := reg.Promote(ctx, "oai-model", 1); err != nil {
		t.Fatal(err)
	}
	srv := oaiServer(t, e, dataroottest.Open(t, dir))
	client := oaiClient(srv)

	var raw *http.Response
	page, err := client.Models.List(ctx, option.WithResponseInto(&raw))
	if err != nil {
		t.Fatal(err)
	}
	if raw.Header.Get("x-request-id") == "" {
		t.Error("GET /v1/models: no x-request-id")
	}
	var ids []string
	for _, m := range page.Data {
		if m.Object != "model" || m.OwnedBy == "" {
			t.Errorf("model %+v: want object model and an owner", m)
		}
		ids = append(ids, m.ID)
	}
	for _, want := range []string{"builtin:tiny", "builtin:small", "oai-model", "oai-model@1", "top", "family/mini"} {
		if !slices.Contains(ids, want) {
			t.Errorf("models %v: %s missing", ids, want)
		}
	}
	for _, not := range []string{"empty", "a/b/too-deep", "family"} {
		if slices.Contains(ids, not) {
			t.Errorf("models %v: %s listed, want only model directories one or two levels down", ids, not)
		}
	}
	if body := page.RawJSON(); strings.Contains(body, dir) || strings.Contains(body, e.cfg.DataDir) {
		t.Errorf("the model list shows a server path: %s", body)
	}

	for _, id := range []string{"builtin:tiny", "oai-model", "oai-model@1", "family/mini"} {
		m, err := client.Models.Get(ctx, id)
		if err != nil {
			t.Fatalf("retrieve %s: %v", id, err)
		}
		if m.ID != id || m.Object != "model" {
			t.Errorf("retrieve %s: %+v", id, m)
		}
	}
	_, err = client.Models.Get(ctx, "no-such-model")
	ae := apiErrorOf(t, "retrieve an unknown model", err)
	if ae.StatusCode != http.StatusNotFound || ae.Type != "invalid_request_error" || ae.Code != tokenstream.CodeModel || ae.Param != "model" || strings.Contains(ae.Message, dir) {
		t.Errorf("retrieve an unknown model: %d %+v", ae.StatusCode, ae)
	}

	// Tandem's detail: the versions, without their directories.
	resp, err := http.Get(srv.URL + "/v1/models/oai-model?detail=1")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var detail struct {
		ID       string             `json:"id"`
		Versions []registry.Version `json:"versions"`
	}
	if err := json.Unmarshal(b, &detail); err != nil || detail.ID != "oai-model" || len(detail.Versions) != 1 || !detail.Versions[0].Promoted ||
		strings.Contains(string(b), e.cfg.DataDir) {
		t.Errorf("detail: %v %s", err, b)
	}
}

// TestOpenAIErrorShapes checks, through the official client, that errors
// are API errors in OpenAI's shape: an unknown route is 404 and a route's
// path with another method 405 (with Allow), each with its type; a body
// field refused is named in param; every answer has an x-request-id.
func TestOpenAIErrorShapes(t *testing.T) {
	e := newGenEnv(t, "")
	srv := oaiServer(t, e, nil)
	client := oaiClient(srv)
	ctx := context.Background()

	var out map[string]any
	err := client.Get(ctx, "no/such/route", nil, &out)
	ae := apiErrorOf(t, "unknown route", err)
	if ae.StatusCode != http.StatusNotFound || ae.Type != "invalid_request_error" || ae.Code != "not_found" || ae.Response.Header.Get("x-request-id") == "" {
		t.Errorf("unknown route: %d %+v", ae.StatusCode, ae)
	}
	err = client.Delete(ctx, "models", nil, &out)
	ae = apiErrorOf(t, "DELETE /v1/models", err)
	if ae.StatusCode != http.StatusMethodNotAllowed || ae.Type != "invalid_request_error" || !strings.Contains(ae.Response.Header.Get("Allow"), http.MethodGet) {
		t.Errorf("DELETE /v1/models: %d %+v (Allow %q)", ae.StatusCode, ae, ae.Response.Header.Get("Allow"))
	}

	_, err = client.Completions.New(ctx, openai.CompletionNewParams{
		Model:     "builtin:tiny",
		Prompt:    openai.CompletionNewParamsPromptUnion{OfString: openai.String("hi")},
		MaxTokens: openai.Int(5000),
	})
	ae = apiErrorOf(t, "max_tokens 5000", err)
	if ae.StatusCode != http.StatusBadRequest || ae.Type != "invalid_request_error" || ae.Param != "max_tokens" || ae.Response.Header.Get("x-request-id") == "" {
		t.Errorf("max_tokens 5000: %d %+v", ae.StatusCode, ae)
	}
	// An unknown field is named too.
	_, err = client.Completions.New(ctx, openai.CompletionNewParams{Model: "builtin:tiny", Prompt: openai.CompletionNewParamsPromptUnion{OfString: openai.String("hi")}},
		option.WithJSONSet("temprature", 1))
	ae = apiErrorOf(t, "unknown field", err)
	if ae.StatusCode != http.StatusBadRequest || ae.Param != "temprature" {
		t.Errorf("unknown field: %d %+v", ae.StatusCode, ae)
	}
}

// TestOpenAIUnknownModelStreamedIs404 asks for a streamed completion of
// models that are not there: the producer checks the model before the
// stream starts, so the client's error has status 404, and its message
// does not show the data root's path; a model that is there streams.
func TestOpenAIUnknownModelStreamedIs404(t *testing.T) {
	e := newGenEnv(t, "")
	e.startWorker(t)
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "not-a-model"), 0o755); err != nil {
		t.Fatal(err)
	}
	client := oaiClient(oaiServer(t, e, dataroottest.Open(t, dir)))
	ctx := context.Background()
	for _, name := range []string{"builtin:huge", "nothing-here", "not-a-model", dir + "/not-a-model", "../outside", "unregistered@2"} {
		stream := client.Completions.NewStreaming(ctx, openai.CompletionNewParams{Model: openai.CompletionNewParamsModel(name),
			Prompt: openai.CompletionNewParamsPromptUnion{OfString: openai.String("hi")}})
		for stream.Next() {
			t.Errorf("model %q: a chunk %s", name, stream.Current().RawJSON())
		}
		ae := apiErrorOf(t, "model "+name, stream.Err())
		stream.Close()
		if ae.StatusCode != http.StatusNotFound || ae.Code != tokenstream.CodeModel || ae.Param != "model" || ae.Type != "invalid_request_error" {
			t.Errorf("model %q: %d %+v", name, ae.StatusCode, ae)
		}
		if msg := strings.ReplaceAll(ae.Message, name, "M"); strings.Contains(msg, dir) {
			t.Errorf("model %q: the message shows the data root: %s", name, ae.Message)
		}
	}

	// Chat checks the model the same way.
	for _, name := range []string{"builtin:huge", "not-a-model"} {
		_, err := client.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{Model: openai.ChatModel(name),
			Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")}})
		if ae := apiErrorOf(t, "chat, model "+name, err); ae.StatusCode != http.StatusNotFound || ae.Param != "model" {
			t.Errorf("chat, model %q: %d %+v", name, ae.StatusCode, ae)
		}
	}

	stream := client.Completions.NewStreaming(ctx, openai.CompletionNewParams{Model: "builtin:tiny",
		Prompt: openai.CompletionNewParamsPromptUnion{OfString: openai.String("The loop")}, MaxTokens: openai.Int(4)})
	var text strings.Builder
	for stream.Next() {
		if c := stream.Current(); len(c.Choices) > 0 {
			text.WriteString(c.Choices[0].Text)
		}
	}
	if err := stream.Err(); err != nil || text.Len() == 0 {
		t.Fatalf("builtin:tiny streamed %q: %v", text.String(), err)
	}
	stream.Close()
}

// noWorkerTestRedisDB is the Redis database of TestOpenAINoWorkerIs503AtOnce
// and of the field tests (fields_test.go), where no worker ever runs.
const noWorkerTestRedisDB = 14

// TestOpenAINoWorkerIs503AtOnce posts a completion with no worker serving
// the interactive queue: 503 no_worker with a Retry-After, from the check
// before the enqueue rather than after the start timeout.
func TestOpenAINoWorkerIs503AtOnce(t *testing.T) {
	// A database of its own: asynq's server list is per database, and a
	// worker of another test on the interactive one would be listed.
	e := newGenEnv(t, fmt.Sprintf("redis://%s/%d", testRedisAddr(), noWorkerTestRedisDB))
	client := oaiClient(oaiServer(t, e, nil))
	_, err := client.Completions.New(context.Background(), openai.CompletionNewParams{Model: "builtin:tiny",
		Prompt: openai.CompletionNewParamsPromptUnion{OfString: openai.String("hi")}})
	ae := apiErrorOf(t, "no worker", err)
	if ae.StatusCode != http.StatusServiceUnavailable || ae.Code != "no_worker" || ae.Type != "service_unavailable" || ae.Response.Header.Get("Retry-After") == "" {
		t.Fatalf("no worker: %d %+v (Retry-After %q)", ae.StatusCode, ae, ae.Response.Header.Get("Retry-After"))
	}
	// Nothing was enqueued.
	if q, err := e.api.client.Inspector().GetQueueInfo(pipeline.QueueInteractive); err == nil && q.Size > 0 {
		t.Fatalf("no worker: %d tasks enqueued", q.Size)
	}
}
