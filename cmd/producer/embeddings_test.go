package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/tandem-ai/tandem/generation"
	"github.com/tandem-ai/tandem/model"
)

// embeddingsTestRedisDB is the Redis database of the embeddings tests:
// workers of other test runs on the interactive database would take their
// tasks without knowing the kind.
const embeddingsTestRedisDB = 12

// newEmbeddingsEnv is newGenEnv over embeddingsTestRedisDB.
func newEmbeddingsEnv(t *testing.T) *genEnv {
	t.Helper()
	return newGenEnv(t, fmt.Sprintf("redis://%s/%d", testRedisAddr(), embeddingsTestRedisDB))
}

// embeddingsClient is the official OpenAI client pointed at e's API, with
// no retries.
func embeddingsClient(e *genEnv) openai.Client {
	return openai.NewClient(option.WithBaseURL(e.srv.URL+"/v1/"), option.WithAPIKey("unused"), option.WithMaxRetries(0))
}

// referenceEmbeddings embeds texts in this process, as the worker does:
// the same model, tokenizer and grouping.
func referenceEmbeddings(t *testing.T, texts ...string) ([][]float32, int) {
	t.Helper()
	s := generation.NewModelStore(nil)
	lm, err := s.Get("builtin:tiny")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(lm.Engine.Close)
	tok, err := model.NewTokenizer()
	if err != nil {
		t.Fatal(err)
	}
	ids := make([][]int32, len(texts))
	n := 0
	for i, s := range texts {
		ids[i] = tok.Encode(s)
		n += len(ids[i])
	}
	vs, err := lm.Model.EmbedAll(ids)
	if err != nil {
		t.Fatal(err)
	}
	return vs, n
}

// The official client's embeddings.create works unchanged: a list of
// inputs, float and base64 (which the client decodes), token ids; each
// vector is the model's unit-length mean-pooled state, the same text gives
// the same vector and different texts different ones.
func TestEmbeddingsThroughTheOpenAIClient(t *testing.T) {
	e := newEmbeddingsEnv(t)
	e.startWorker(t)
	client := embeddingsClient(e)
	ctx := context.Background()
	texts := []string{"The cat sat on the mat.", "Quarterly revenue rose by four percent.", "The cat sat on the mat."}
	want, tokens := referenceEmbeddings(t, texts...)

	var floats [][]float64
	for _, format := range []openai.EmbeddingNewParamsEncodingFormat{openai.EmbeddingNewParamsEncodingFormatFloat, openai.EmbeddingNewParamsEncodingFormatBase64} {
		resp, err := client.Embeddings.New(ctx, openai.EmbeddingNewParams{
			Model:          "builtin:tiny",
			Input:          openai.EmbeddingNewParamsInputUnion{OfArrayOfStrings: texts},
			EncodingFormat: format,
		})
		if err != nil {
			t.Fatalf("%s: %v", format, err)
		}
		if resp.Object != "list" || resp.Model != "builtin:tiny" || len(resp.Data) != len(texts) ||
			resp.Usage.PromptTokens != int64(tokens) || resp.Usage.TotalTokens != int64(tokens) {
			t.Fatalf("%s: %d vectors, model %q, usage %+v; want %d vectors and %d tokens", format, len(resp.Data), resp.Model, resp.Usage, len(texts), tokens)
		}
		var got [][]float64
		for i, d := range resp.Data {
			if d.Index != int64(i) || d.Object != "embedding" || len(d.Embedding) != 64 {
				t.Fatalf("%s: data[%d] is %s %d with %d values", format, i, d.Object, d.Index, len(d.Embedding))
			}
			var norm float64
			for j, x := range d.Embedding {
				norm += x * x
				if math.Abs(x-float64(want[i][j])) > 1e-6 {
					t.Fatalf("%s: data[%d][%d] = %g; computed here %g", format, i, j, x, want[i][j])
				}
			}
			if math.Abs(norm-1) > 1e-5 {
				t.Fatalf("%s: |data[%d]|^2 = %g, want 1", format, i, norm)
			}
			got = append(got, d.Embedding)
		}
		if floats == nil {
			floats = got
			continue
		}
		for i := range got { // base64 carries the same float32s as the numbers
			for j := range got[i] {
				if float32(got[i][j]) != float32(floats[i][j]) {
					t.Fatalf("data[%d][%d]: base64 %g, float %g", i, j, got[i][j], floats[i][j])
				}
			}
		}
	}
	if cos := embeddingDot(floats[0], floats[2]); math.Abs(cos-1) > 1e-5 {
		t.Fatalf("the same text twice: cosine %g", cos)
	}
	if cos := embeddingDot(floats[0], floats[1]); cos > 0.999 {
		t.Fatalf("different texts: cosine %g", cos)
	}

	// The texts' tokens as ids embed as the texts do; one string is one input.
	tok, _ := model.NewTokenizer()
	var ids [][]int64
	for _, s := range texts[:2] {
		var row []int64
		for _, id := range tok.Encode(s) {
			row = append(row, int64(id))
		}
		ids = append(ids, row)
	}
	byIDs, err := client.Embeddings.New(ctx, openai.EmbeddingNewParams{Model: "builtin:tiny", Input: openai.EmbeddingNewParamsInputUnion{OfArrayOfTokenArrays: ids}})
	if err != nil {
		t.Fatal(err)
	}
	one, err := client.Embeddings.New(ctx, openai.EmbeddingNewParams{Model: "builtin:tiny", Input: openai.EmbeddingNewParamsInputUnion{OfString: openai.String(texts[1])}})
	if err != nil {
		t.Fatal(err)
	}
	if len(byIDs.Data) != 2 || len(one.Data) != 1 || embeddingDot(byIDs.Data[0].Embedding, floats[0]) < 1-1e-5 || embeddingDot(one.Data[0].Embedding, floats[1]) < 1-1e-5 {
		t.Fatalf("token ids or one string embed otherwise than the texts")
	}

	// The body on the wire is OpenAI's shape, numbers for "float".
	code, raw := e.postJSON(t, "/v1/embeddings", `{"model":"builtin:tiny","input":"hi","encoding_format":"float","user":"u1"}`, nil)
	var shape struct {
		Object string `json:"object"`
		Data   []struct {
			Object    string    `json:"object"`
			Index     int       `json:"index"`
			Embedding []float64 `json:"embedding"`
		} `json:"data"`
		Model string         `json:"model"`
		Usage map[string]int `json:"usage"`
	}
	if err := json.Unmarshal([]byte(raw), &shape); code != http.StatusOK || err != nil || shape.Object != "list" || len(shape.Data) != 1 ||
		shape.Data[0].Object != "embedding" || len(shape.Data[0].Embedding) != 64 || len(shape.Usage) != 2 || shape.Usage["prompt_tokens"] != 1 {
		t.Fatalf("POST /v1/embeddings: %d %.300s", code, raw)
	}
	waitQueueIdle(t, e)
}

func embeddingDot(a, b []float64) float64 {
	var s float64
	for i := range a {
		s += a[i] * b[i]
	}
	return s
}

// What the model cannot take is refused with the field named: an input
// longer than the context (input[i]), other dimensions, an unknown model,
// an unknown field, too many inputs. (A body over maxEmbeddingsBody:
// TestServeGuardsEmbeddings.)
func TestEmbeddingsRefuseWhatTheModelCannotTake(t *testing.T) {
	e := newEmbeddingsEnv(t)
	e.startWorker(t)
	client := embeddingsClient(e)
	ctx := context.Background()
	long := strings.Repeat("many words ", 200) // over builtin:tiny's 256 tokens
	_, err := client.Embeddings.New(ctx, openai.EmbeddingNewParams{Model: "builtin:tiny", Input: openai.EmbeddingNewParamsInputUnion{OfArrayOfStrings: []string{"fine", long}}})
	var apiErr *openai.Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusBadRequest || !strings.Contains(apiErr.Message, "input[1]") || !strings.Contains(apiErr.Message, "context holds 256") {
		t.Fatalf("an input over the context: %v", err)
	}
	_, err = client.Embeddings.New(ctx, openai.EmbeddingNewParams{Model: "builtin:tiny", Input: openai.EmbeddingNewParamsInputUnion{OfString: openai.String("x")}, Dimensions: openai.Int(32)})
	if !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusBadRequest || !strings.Contains(apiErr.Message, "dimensions") {
		t.Fatalf("dimensions 32 of 64: %v", err)
	}
	_, err = client.Embeddings.New(ctx, openai.EmbeddingNewParams{Model: "builtin:nope", Input: openai.EmbeddingNewParamsInputUnion{OfString: openai.String("x")}})
	if !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusNotFound {
		t.Fatalf("an unknown model: %v", err)
	}
	tooMany := `{"model":"builtin:tiny","input":[` + strings.TrimSuffix(strings.Repeat(`"x",`, generation.MaxEmbeddingInputs+1), ",") + `]}`
	for body, want := range map[string]string{
		`{"model":"builtin:tiny","input":"x","temperature":1}`:          `temperature: unknown field`,
		`{"model":"builtin:tiny","input":["x",[1]]}`:                    "input[1]",
		`{"model":"builtin:tiny","input":["x",""]}`:                     "input[1]: empty string",
		`{"model":"builtin:tiny","input":"x","encoding_format":"int8"}`: "encoding_format",
		`{"input":"x"}`: "model: required",
		tooMany:         "at most 2048",
	} {
		if code, msg := e.postJSON(t, "/v1/embeddings", body, nil); code != http.StatusBadRequest || !strings.Contains(msg, want) {
			t.Errorf("%.80s: %d %s; want 400 naming %q", body, code, msg, want)
		}
	}
	waitQueueIdle(t, e)
}

// With no worker on the interactive queue the request is answered 503
// once the start timeout passes, and its task does not stay queued; nor
// does the task of a client that leaves before that.
func TestEmbeddingsWithoutAWorkerAreUnavailable(t *testing.T) {
	t.Setenv(EnvInteractiveStartTimeout, "300ms")
	e := newEmbeddingsEnv(t)
	// No worker serves the lane: 503 at once, with Retry-After.
	resp := e.post(t, context.Background(), "/v1/embeddings", `{"model":"builtin:tiny","input":"x"}`)
	msg, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(msg), "no worker") || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("no worker listed: %d %s (Retry-After %q)", resp.StatusCode, msg, resp.Header.Get("Retry-After"))
	}
	// A worker is listed but takes nothing: a client that leaves leaves
	// nothing queued, and one that waits out the start timeout gets 503.
	e.listIdleWorker(t)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, e.srv.URL+"/v1/embeddings", strings.NewReader(`{"model":"builtin:tiny","input":"x"}`))
	if resp, err := http.DefaultClient.Do(req); err == nil {
		resp.Body.Close()
		t.Fatalf("answered %d with no worker before the client left", resp.StatusCode)
	}
	waitQueueIdle(t, e)
	code, text := e.postJSON(t, "/v1/embeddings", `{"model":"builtin:tiny","input":"x"}`, nil)
	if code != http.StatusServiceUnavailable || !strings.Contains(text, "interactive") {
		t.Fatalf("no worker took it: %d %s", code, text)
	}
	waitQueueIdle(t, e)
}

// On the routes `producer serve` builds, POST /v1/embeddings needs a
// token with the submit right, and a body over maxEmbeddingsBody is 413
// as on every other route.
func TestServeGuardsEmbeddings(t *testing.T) {
	e := newEmbeddingsEnv(t)
	const reader, writer = "reader-secret-0123456789", "writer-secret-0123456789"
	srv, _ := serveTestServer(t, e, reader+" guard read\n"+writer+" guard submit,read\n")
	if code, msg := callAs(t, srv.URL, "", http.MethodPost, "/v1/embeddings", `{}`); code != http.StatusUnauthorized {
		t.Errorf("no token: %d %s", code, msg)
	}
	if code, msg := callAs(t, srv.URL, reader, http.MethodPost, "/v1/embeddings", `{}`); code != http.StatusForbidden {
		t.Errorf("a read-only token: %d %s", code, msg)
	}
	if code, msg := callAs(t, srv.URL, writer, http.MethodPost, "/v1/embeddings", `{"model":"builtin:tiny"}`); code != http.StatusBadRequest || !strings.Contains(msg, "input: required") {
		t.Errorf("a submit token, no input: %d %s", code, msg)
	}
	body := `{"x":"` + strings.Repeat("a", maxEmbeddingsBody) + `"}`
	if code, msg := callAs(t, srv.URL, writer, http.MethodPost, "/v1/embeddings", body); code != http.StatusRequestEntityTooLarge ||
		!strings.Contains(msg, fmt.Sprintf("body: over the limit of %d bytes", maxEmbeddingsBody)) {
		t.Errorf("a body over maxEmbeddingsBody: %d %.200s", code, msg)
	}
}
