package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tandem-ai/tandem/dataroot/dataroottest"
	"github.com/tandem-ai/tandem/finetune"
	"github.com/tandem-ai/tandem/jobs"
	"github.com/tandem-ai/tandem/limits"
	"github.com/tandem-ai/tandem/model"
	"github.com/tandem-ai/tandem/pipeline"
	"github.com/tandem-ai/tandem/registry"
)

// finetuneTestRedisURL is the fine-tuning tests' Redis database (shared
// with other packages' fine-tuning tests, so never flushed: each test
// removes what it created).
func finetuneTestRedisURL() string {
	addr := os.Getenv("TANDEM_TEST_REDIS_ADDR")
	if addr == "" {
		addr = "127.0.0.1:6379"
	}
	return "redis://" + addr + "/8"
}

func TestFinetuneRoutes(t *testing.T) {
	cfg := pipeline.DefaultConfig()
	cfg.RedisURL = finetuneTestRedisURL()
	client, err := newClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() }) // registered first, so it runs last
	tmp := t.TempDir()
	root := dataroottest.Open(t, tmp)
	mux := http.NewServeMux()
	registerFinetuneRoutes(mux, client, tmp, root)
	(&modelCatalog{reg: registry.New(client.Redis(), jobs.RegistryDir(tmp)), root: root}).routes(mux)
	srv := httptest.NewServer(openGuard(t, mux))
	defer srv.Close()

	// A queued finetune job whose run directory already has a curve.
	out := filepath.Join(tmp, "run")
	if err := os.MkdirAll(out, 0o755); err != nil {
		t.Fatal(err)
	}
	png, _ := finetune.CurvePNG([]float32{3, 2, 1}, nil)
	if err := os.WriteFile(filepath.Join(out, finetune.CurveFile), png, 0o644); err != nil {
		t.Fatal(err)
	}
	body, _ := json.Marshal(jobs.FinetuneArgs{Model: "builtin:tiny", Data: filepath.Join(tmp, "data.txt"), Out: out})
	resp, err := http.Post(srv.URL+"/v1/finetunes", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	var created TaskView
	json.NewDecoder(resp.Body).Decode(&created)
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted || created.Queue != pipeline.QueueFinetune {
		t.Fatalf("create: %d %+v", resp.StatusCode, created)
	}
	t.Cleanup(func() { _ = client.Inspector().DeleteTask(created.Queue, created.ID) })

	resp, err = http.Get(srv.URL + "/v1/finetunes/" + created.ID + "/loss.png")
	if err != nil {
		t.Fatal(err)
	}
	got := new(bytes.Buffer)
	got.ReadFrom(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "image/png" || !bytes.Equal(got.Bytes(), png) {
		t.Fatalf("loss.png: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	// curveOf enqueues a finetune whose run directory is out and fetches
	// its loss.png. It enqueues as an operator would (POST /v1/finetunes
	// refuses a run directory outside the root), so that the route's own
	// confinement is what is tested.
	curveOf := func(out string) (int, string) {
		t.Helper()
		body, _ := json.Marshal(jobs.FinetuneArgs{Model: "builtin:tiny", Data: "data.txt", Out: out})
		info, err := enqueueRaw(context.Background(), client, jobs.KindFinetune, body, "", "", -1)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = client.Inspector().DeleteTask(info.Queue, info.ID) })
		resp, err := http.Get(srv.URL + "/v1/finetunes/" + info.ID + "/loss.png")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	// A run directory outside the data root is not read, even when the
	// file is there; a loss curve over maxCurveBytes is not served.
	outside := t.TempDir()
	if err := os.WriteFile(filepath.Join(outside, finetune.CurveFile), png, 0o644); err != nil {
		t.Fatal(err)
	}
	if code, msg := curveOf(outside); code != http.StatusNotFound || !strings.Contains(msg, "escapes the data root") {
		t.Fatalf("loss.png outside the data root: %d %s", code, msg)
	}
	if err := os.MkdirAll(filepath.Join(tmp, "big-run"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(tmp, "big-run", finetune.CurveFile), make([]byte, maxCurveBytes+1), 0o644); err != nil {
		t.Fatal(err)
	}
	if code, msg := curveOf("big-run"); code != http.StatusNotFound || !strings.Contains(msg, "larger than the limit") {
		t.Fatalf("loss.png over the limit: %d %s", code, msg)
	}
	// Bodies over their limit are refused naming it.
	resp, err = http.Post(srv.URL+"/v1/finetunes", "application/json", strings.NewReader(`{"model":"`+strings.Repeat("m", maxRequestBody)+`"}`))
	if err != nil {
		t.Fatal(err)
	}
	got.Reset()
	got.ReadFrom(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge || !strings.Contains(got.String(), "over the limit") {
		t.Fatalf("oversized finetune body: %d %s", resp.StatusCode, got.String())
	}
	if resp, _ := http.Get(srv.URL + "/v1/finetunes/nope/loss.png"); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("unknown job: %d", resp.StatusCode)
	}
	// A bad body names the field.
	resp, _ = http.Post(srv.URL+"/v1/finetunes", "application/json", bytes.NewReader([]byte(`{"model":"builtin:tiny","data":"x","epochs":-1}`)))
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("bad args: %d", resp.StatusCode)
	}

	// Registry routes.
	ctx := context.Background()
	reg := registry.New(client.Redis(), jobs.RegistryDir(tmp))
	name := fmt.Sprintf("api-%d", time.Now().UnixNano())
	t.Cleanup(func() {
		keys, _ := client.Redis().Keys(ctx, pipeline.ModelKeyPrefix+name+":*").Result()
		client.Redis().Del(ctx, keys...)
		client.Redis().SRem(ctx, pipeline.ModelKeyPrefix+"names", name)
	})
	m, _ := model.New(model.Config{NLayer: 1, NHead: 1, NEmbd: 8, NPositions: 8, VocabSize: 16, LayerNormEpsilon: 1e-5}, 1)
	if err := m.SaveDir(filepath.Join(tmp, "m")); err != nil {
		t.Fatal(err)
	}
	if _, err := reg.Register(ctx, name, filepath.Join(tmp, "m"), registry.Version{Parent: "scratch"}); err != nil {
		t.Fatal(err)
	}
	resp, _ = http.Post(srv.URL+"/v1/models/"+name+"/promote", "application/json", strings.NewReader(`{"version":"`+strings.Repeat("1", limits.APIPromoteBodyBytes)+`"}`))
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("oversized promote body: %d", resp.StatusCode)
	}
	resp, _ = http.Post(srv.URL+"/v1/models/"+name+"/promote", "application/json", bytes.NewReader([]byte(`{"version":1}`)))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("promote: %d", resp.StatusCode)
	}
	resp, _ = http.Get(srv.URL + "/v1/models/" + name + "?detail=1")
	var vs struct{ Versions []registry.Version }
	json.NewDecoder(resp.Body).Decode(&vs)
	resp.Body.Close()
	if len(vs.Versions) != 1 || !vs.Versions[0].Promoted || vs.Versions[0].Artifact != "" {
		t.Fatalf("show: %+v; want one promoted version, without its server path", vs)
	}
	if resp, _ := http.Get(srv.URL + "/v1/models/no-such-model"); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("missing model: %d", resp.StatusCode)
	}
}
