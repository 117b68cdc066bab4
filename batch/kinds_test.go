package batch

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tandem-ai/tandem/jobs"
	"github.com/tandem-ai/tandem/pipeline"
)

func TestWebhookSignVerify(t *testing.T) {
	body := []byte(`{"schema":"tandem.event/v1"}`)
	now := time.Unix(1_800_000_000, 0)
	h := http.Header{}
	h.Set(HeaderWebhookTimestamp, "1800000000")
	h.Set(HeaderWebhookSignature, SignWebhook("s3cret", now.Unix(), body))
	if err := VerifyWebhook("s3cret", h, body, now.Add(time.Minute), DefaultWebhookTolerance); err != nil {
		t.Fatal(err)
	}
	for name, check := range map[string]func() error{
		"other secret": func() error { return VerifyWebhook("other", h, body, now, DefaultWebhookTolerance) },
		"other body":   func() error { return VerifyWebhook("s3cret", h, []byte(`{}`), now, DefaultWebhookTolerance) },
		"replayed":     func() error { return VerifyWebhook("s3cret", h, body, now.Add(time.Hour), DefaultWebhookTolerance) },
	} {
		if err := check(); !errors.Is(err, ErrWebhookSignature) {
			t.Errorf("%s: %v", name, err)
		}
	}
	// The signature covers the timestamp: moving it breaks the signature.
	h.Set(HeaderWebhookTimestamp, "1800000001")
	if err := VerifyWebhook("s3cret", h, body, now, DefaultWebhookTolerance); !errors.Is(err, ErrWebhookSignature) {
		t.Errorf("moved timestamp: %v", err)
	}
}

func TestWebhookDeliver(t *testing.T) {
	var hits atomic.Int32
	var status atomic.Int32
	status.Store(http.StatusServiceUnavailable)
	var lastErr atomic.Value
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		body, _ := io.ReadAll(r.Body)
		if err := VerifyWebhook("s3cret", r.Header, body, time.Now(), DefaultWebhookTolerance); err != nil {
			lastErr.Store(err.Error())
		}
		if r.Header.Get(HeaderWebhookEventID) != "evt_1" || r.Header.Get("Content-Type") != "application/json" {
			lastErr.Store("headers: " + r.Header.Get(HeaderWebhookEventID))
		}
		w.WriteHeader(int(status.Load()))
	}))
	defer srv.Close()
	cfg := &WebhookConfig{URLs: []string{srv.URL}, Secret: "s3cret", Client: srv.Client()}
	a := WebhookArgs{URL: srv.URL, EventID: "evt_1", EventType: "batch.completed", Body: json.RawMessage(`{"x":1}`)}
	ctx := context.Background()

	err := cfg.Deliver(ctx, a)
	if err == nil || pipeline.IsPermanent(err) {
		t.Fatalf("503: %v; want a transient error (retried with backoff)", err)
	}
	status.Store(http.StatusNoContent)
	if err := cfg.Deliver(ctx, a); err != nil {
		t.Fatal(err)
	}
	status.Store(http.StatusGone)
	if err := cfg.Deliver(ctx, a); !pipeline.IsPermanent(err) {
		t.Fatalf("410: %v; want permanent", err)
	}
	if v := lastErr.Load(); v != nil {
		t.Fatalf("receiver saw: %v", v)
	}
	if hits.Load() != 3 {
		t.Fatalf("%d requests", hits.Load())
	}
	other := a
	other.URL = "https://elsewhere.example/hook"
	if err := cfg.Deliver(ctx, other); !pipeline.IsPermanent(err) {
		t.Fatalf("unconfigured URL: %v; want permanent", err)
	}
	// Through the registered kind, as a worker runs it.
	payload, _ := json.Marshal(a)
	reg := pipeline.NewRegistry()
	Register(reg, &Runner{Webhooks: cfg})
	status.Store(http.StatusOK)
	if err := reg.Exec(ctx, jobs.KindWebhook, payload); err != nil {
		t.Fatal(err)
	}
}

func TestWebhookConfigFromEnv(t *testing.T) {
	t.Setenv(EnvWebhookURLs, "")
	if c, err := WebhookConfigFromEnv(); c != nil || err != nil {
		t.Fatalf("no URLs: %v, %v", c, err)
	}
	t.Setenv(EnvWebhookURLs, "https://a.example/h, https://b.example/h")
	t.Setenv(EnvWebhookSecret, "")
	if _, err := WebhookConfigFromEnv(); err == nil {
		t.Fatal("URLs without a secret accepted")
	}
	t.Setenv(EnvWebhookSecret, "k")
	c, err := WebhookConfigFromEnv()
	if err != nil || len(c.URLs) != 2 || c.URLs[1] != "https://b.example/h" {
		t.Fatalf("%+v, %v", c, err)
	}
	for _, bad := range []string{"http://plain.example/h", "https://user:pw@x.example/", "ftp://x", "https://"} {
		t.Setenv(EnvWebhookURLs, bad)
		if _, err := WebhookConfigFromEnv(); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestBatchArgsValidate(t *testing.T) {
	good := []pipeline.JobArgs{
		ChunkArgs{BatchID: "batch_abc", Chunk: 0},
		FinalizeArgs{BatchID: "batch_abc"},
		FinalizeArgs{BatchID: "batch_abc", Reason: FinalizeExpire},
	}
	for _, a := range good {
		if err := a.(pipeline.Validator).Validate(); err != nil {
			t.Errorf("%+v: %v", a, err)
		}
	}
	bad := []pipeline.Validator{
		ChunkArgs{BatchID: "abc"}, ChunkArgs{BatchID: "batch_"}, ChunkArgs{BatchID: "batch_a.b"},
		ChunkArgs{BatchID: "batch_a", Chunk: -1}, FinalizeArgs{BatchID: "batch_a", Reason: "now"},
		WebhookArgs{URL: "http://x.example", EventID: "e", EventType: "t", Body: json.RawMessage(`{}`)},
		WebhookArgs{URL: "https://x.example", EventID: "e\n", EventType: "t", Body: json.RawMessage(`{}`)},
		WebhookArgs{URL: "https://x.example", EventID: "e", EventType: "t", Body: json.RawMessage(`{`)},
	}
	for _, a := range bad {
		if a.Validate() == nil {
			t.Errorf("%+v accepted", a)
		}
	}
	if got := (ChunkArgs{BatchID: "batch_x", Chunk: 3}).TaskID(); got != "batch_x:3" {
		t.Errorf("TaskID = %q", got)
	}
	if got := (FinalizeArgs{BatchID: "batch_x", Reason: FinalizeExpire}).TaskID(); got != "batch_x:expire" {
		t.Errorf("TaskID = %q", got)
	}
}

// The catalogue in jobs names the batch kinds and keeps them internal;
// batch registers them, with the queues, retries and timeouts they have
// always had, and jobs registers none of them.
func TestRegisterOwnsTheBatchKinds(t *testing.T) {
	own := pipeline.NewRegistry()
	jobs.RegisterAll(own, jobs.NewDeps(nil))
	reg := pipeline.NewRegistry()
	Register(reg, nil)
	want := map[string]pipeline.KindOptions{
		jobs.KindBatchChunk:    {Queue: pipeline.QueueDefault, MaxRetry: 10, Timeout: time.Hour},
		jobs.KindBatchFinalize: {Queue: pipeline.QueueDefault, MaxRetry: 20, Timeout: 30 * time.Minute},
		jobs.KindWebhook:       {Queue: pipeline.QueueDefault, MaxRetry: 12, Timeout: time.Minute},
	}
	if got := reg.Kinds(); len(got) != len(want) {
		t.Fatalf("Register registered %v; want the %d batch kinds", got, len(want))
	}
	for kind, opts := range want {
		if got, ok := reg.Options(kind); !ok || got != opts {
			t.Errorf("%s: options %+v (registered %v); want %+v", kind, got, ok, opts)
		}
		if _, ok := own.Options(kind); ok {
			t.Errorf("jobs.RegisterAll registered %s; batch owns it", kind)
		}
		if jobs.Internal(kind) == "" || jobs.CheckPublic(kind) == nil {
			t.Errorf("%s is public; the API must refuse it", kind)
		}
	}
	// A payload the catalogue cannot check names the package that can.
	if err := jobs.ValidatePayload(jobs.KindBatchChunk, []byte(`{"batch_id":"batch_a","chunk":0}`)); err == nil || !strings.Contains(err.Error(), "package batch") {
		t.Errorf("jobs.ValidatePayload(generate:chunk) = %v", err)
	}
	if err := reg.Check(jobs.KindBatchChunk, []byte(`{"batch_id":"batch_a","chunk":-1}`)); err == nil || !strings.Contains(err.Error(), "chunk") {
		t.Errorf("a negative chunk passed: %v", err)
	}
}
