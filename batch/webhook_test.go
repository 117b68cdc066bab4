package batch

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tandem-ai/tandem/files"
	"github.com/tandem-ai/tandem/pipeline"
)

// A finished batch posts one signed event to each webhook URL, retried
// after a failure, and announcing again sends nothing more.
func TestWebhookOnCompletion(t *testing.T) {
	var mu sync.Mutex
	var delivered []Event
	attempts := 0
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		defer mu.Unlock()
		attempts++
		if attempts == 1 {
			w.WriteHeader(http.StatusBadGateway) // the first try fails: asynq retries
			return
		}
		if err := VerifyWebhook("hook-secret", r.Header, body, time.Now(), DefaultWebhookTolerance); err != nil {
			t.Errorf("signature: %v", err)
		}
		var ev Event
		if err := json.Unmarshal(body, &ev); err != nil {
			t.Errorf("body: %v", err)
		}
		delivered = append(delivered, ev)
	}))
	defer srv.Close()
	wh := &WebhookConfig{URLs: []string{srv.URL}, Secret: "hook-secret", Client: srv.Client()}
	e := newTestEnv(t, envOptions{nats: true, workers: 1, webhooks: wh})
	input, _ := openAIInput(4, 2)
	b, _, err := e.svc.Create(context.Background(), strings.NewReader(input), CreateOptions{Model: "builtin:tiny", Metadata: map[string]string{"owner": "ops"}})
	if err != nil {
		t.Fatal(err)
	}
	e.waitTerminal(t, b.ID, time.Minute)
	waitUntil(t, "the webhook delivery", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(delivered) == 1
	})
	mu.Lock()
	ev := delivered[0]
	mu.Unlock()
	if ev.Schema != EventSchema || ev.Type != EventBatchCompleted || ev.ID != "evt_"+b.ID+"_completed" {
		t.Fatalf("event %+v", ev)
	}
	var data Batch
	if err := json.Unmarshal(ev.Data, &data); err != nil || data.Metadata["owner"] != "ops" || data.Status != StatusCompleted ||
		data.ID != b.ID || data.OutputFileID != files.ResultID(b.ID, FileOutput) || data.ErrorFileID != files.ResultID(b.ID, FileErrors) {
		t.Fatalf("data %s: %v", ev.Data, err)
	}
	// Finalising again (a retried task) announces nothing new.
	r := e.run
	if err := r.Finalize(context.Background(), &pipeline.Job[FinalizeArgs]{Args: FinalizeArgs{BatchID: b.ID}}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	if len(delivered) != 1 || attempts != 2 {
		t.Fatalf("%d deliveries in %d attempts; want 1 in 2", len(delivered), attempts)
	}
}
