package main

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hibiken/asynq"

	"github.com/tandem-ai/tandem/jobs"
	"github.com/tandem-ai/tandem/limits"
	"github.com/tandem-ai/tandem/pipeline"
)

// jobsAPI serves POST /v1/jobs over e's Redis with a data root that holds
// the service's state in its default place (.tandem), where another
// batch's output lies.
type jobsAPI struct {
	*testAPI
	root, theirs string
	insp         *asynq.Inspector
}

func startJobsAPI(t *testing.T) *jobsAPI {
	t.Helper()
	e := newBatchEnv(t)
	root := t.TempDir()
	cfg := e.cfg
	cfg.DataRoot, cfg.DataDir = root, filepath.Join(root, ".tandem")
	theirs := filepath.Join(cfg.DataDir, "artifacts", "batches", "b1", "output.jsonl")
	if err := os.MkdirAll(filepath.Dir(theirs), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(theirs, []byte("theirs\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	dataRoot, err := jobs.OpenDataRoot(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dataRoot.Close() })
	client, err := newClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	mux := http.NewServeMux()
	api := &apiServer{client: client, logger: slog.New(slog.NewTextHandler(io.Discard, nil)), root: dataRoot, queues: jobQueues(pipeline.DefaultConfig().Queues)}
	api.routes(mux)
	registerFinetuneRoutes(mux, client, cfg.DataDir, dataRoot)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return &jobsAPI{testAPI: &testAPI{t: t, URL: srv.URL}, root: root, theirs: theirs, insp: client.Inspector()}
}

// wantError posts body to /v1/jobs and checks the answer's status and
// error body exactly.
func (a *jobsAPI) wantError(body string, status int, code, message string) {
	a.t.Helper()
	resp, got := a.post("/v1/jobs", "application/json", body)
	var e apiError
	if err := json.Unmarshal(got, &e); err != nil || resp.StatusCode != status || e.Error.Code != code || e.Error.Message != message {
		a.t.Errorf("POST /v1/jobs %.120s:\n got %d %.300s\nwant %d {code %q, message %q}", body, resp.StatusCode, got, status, code, message)
	}
}

// nothingEnqueued checks that no refused request left a job behind.
func (a *jobsAPI) nothingEnqueued() {
	a.t.Helper()
	qs, err := a.insp.Queues()
	if err != nil {
		a.t.Fatal(err)
	}
	for _, q := range qs {
		if info, err := a.insp.GetQueueInfo(q); err == nil && info.Size > 0 {
			a.t.Errorf("queue %s holds %d jobs after refused requests", q, info.Size)
		}
	}
}

// Every field of POST /v1/jobs is checked, and a refusal names it: known
// queues only, max_retry within 0..limits.JobMaxRetry, a task_id of at
// most limits.APITaskIDLen bytes of A-Z a-z 0-9 _ -, the device, args
// that are a JSON object, exactly one JSON value, no unknown field.
func TestCreateJobValidatesEveryField(t *testing.T) {
	a := startJobsAPI(t)
	const known = "(known: default, finetune, gpu, interactive)"
	long := strings.Repeat("q", 200)
	for _, c := range []struct {
		body          string
		status        int
		code, message string
	}{
		{`{"kind":"ping","args":{},"queue":"../../x"}`, 400, "invalid_request", `queue: "../../x" is not a queue the workers take ` + known},
		{`{"kind":"ping","args":{},"queue":"` + long + `"}`, 400, "invalid_request", `queue: "` + long[:64] + `" is not a queue the workers take ` + known},
		{`{"kind":"ping","args":{},"queue":"evilqueue"}`, 400, "invalid_request", `queue: "evilqueue" is not a queue the workers take ` + known},
		{`{"kind":"ping","args":{},"queue":"recs-live"}`, 400, "invalid_request", `queue: "recs-live" is not a queue the workers take ` + known},
		{`{"kind":"ping","args":{},"max_retry":-100}`, 400, "invalid_request", fmt.Sprintf("max_retry: -100 is outside 0..%d", limits.JobMaxRetry)},
		{`{"kind":"ping","args":{},"max_retry":2147483647999}`, 400, "invalid_request", fmt.Sprintf("max_retry: 2147483647999 is outside 0..%d", limits.JobMaxRetry)},
		{fmt.Sprintf(`{"kind":"ping","args":{},"max_retry":%d}`, limits.JobMaxRetry+1), 400, "invalid_request", fmt.Sprintf("max_retry: %d is outside 0..%d", limits.JobMaxRetry+1, limits.JobMaxRetry)},
		{`{"kind":"ping","args":{},"max_retry":1.5}`, 400, "invalid_json", "max_retry: want an integer, got JSON number 1.5"},
		{`{"kind":"ping","args":{},"task_id":"` + strings.Repeat("t", 100<<10) + `"}`, 400, "invalid_request", fmt.Sprintf("task_id: %d bytes, over the limit of %d", 100<<10, limits.APITaskIDLen)},
		{`{"kind":"ping","args":{},"task_id":"` + strings.Repeat("t", limits.APITaskIDLen+1) + `"}`, 400, "invalid_request", fmt.Sprintf("task_id: %d bytes, over the limit of %d", limits.APITaskIDLen+1, limits.APITaskIDLen)},
		{`{"kind":"ping","args":{},"task_id":"a\u0000b"}`, 400, "invalid_request", `task_id: byte 1 is '\x00'; use A-Z a-z 0-9 _ - only`},
		{`{"kind":"ping","args":{},"task_id":"batch_1:3"}`, 400, "invalid_request", `task_id: byte 7 is ':'; use A-Z a-z 0-9 _ - only`},
		{`{"kind":"ping","args":{},"device":"tpu"}`, 400, "invalid_request", `device: device "tpu": want cpu, cuda or cuda:N`},
		{`{"kind":"ping","args":{},"device":"` + long + `"}`, 400, "invalid_request", "device: 200 bytes, over the limit of 64; want cpu, cuda or cuda:N"},
		{`{"kind":"ping","args":{},"device":"cuda","queue":"default"}`, 400, "invalid_request", `device: device "cuda" goes to queue "gpu", not "default"`},
		{`{"kind":"ping","args":{}} garbage`, 400, "invalid_json", "body: data after the JSON value; send exactly one JSON object"},
		{`{"kind":"ping","args":{}}{"kind":"webhook","args":{}}`, 400, "invalid_json", "body: data after the JSON value; send exactly one JSON object"},
		{`{"kind":"ping"}`, 400, "invalid_args", "args: required, a JSON object"},
		{`{"kind":"ping","args":null}`, 400, "invalid_args", "args: required, a JSON object"},
		{`{"kind":"ping","args":[]}`, 400, "invalid_args", "args: required, a JSON object"},
		{`{"kind":"ping","args":{},"timeout":"1h"}`, 400, "invalid_json", "timeout: unknown field; this route does not take it"},
		{`{"args":{}}`, 400, "invalid_request", "kind: required (public kinds: " + strings.Join(jobs.PublicNames(), ", ") + ")"},
	} {
		a.wantError(c.body, c.status, c.code, c.message)
	}
	a.nothingEnqueued()

	// Within the bounds, the job is enqueued as asked.
	for _, c := range []struct{ body, queue string }{
		{fmt.Sprintf(`{"kind":"ping","args":{},"task_id":"%s","max_retry":%d,"queue":"finetune"}`, strings.Repeat("A", limits.APITaskIDLen), limits.JobMaxRetry), "finetune"},
		{`{"kind":"ping","args":{},"task_id":"ok_1-A","max_retry":0}` + "\n", "default"},
	} {
		resp, body := a.post("/v1/jobs", "application/json", c.body)
		var v TaskView
		if err := json.Unmarshal(body, &v); err != nil || resp.StatusCode != http.StatusAccepted || v.Queue != c.queue {
			t.Fatalf("POST /v1/jobs %.80s: %d %s", c.body, resp.StatusCode, body)
		}
	}
	if info, err := a.insp.GetTaskInfo("default", "ok_1-A"); err != nil || info.MaxRetry != 0 {
		t.Fatalf("the job with max_retry 0: %+v, %v", info, err)
	}
}

// POST /v1/jobs takes only public kinds: every internal one is refused,
// naming who enqueues it, and GET /v1/kinds lists only the public ones.
func TestCreateJobRefusesInternalKinds(t *testing.T) {
	a := startJobsAPI(t)
	// A webhook with a body of the caller's choice would be signed and
	// delivered as a lifecycle event.
	a.wantError(`{"kind":"webhook","args":{"url":"http://127.0.0.1:1/hook","event":{"id":"evt_1","type":"batch.completed","data":{"id":"b1"}}}}`,
		400, "invalid_request", `kind: "webhook" is internal; only the pipeline enqueues it (a batch's lifecycle events enqueue it, signed)`)
	for _, name := range jobs.Names() {
		if jobs.Internal(name) == "" {
			continue
		}
		a.wantError(`{"kind":"`+name+`","args":{}}`, 400, "invalid_request", `kind: "`+name+`" is internal; only the pipeline enqueues it (`+jobs.Internal(name)+`)`)
	}
	a.wantError(`{"kind":"nope","args":{}}`, 400, "invalid_request", `kind: unknown "nope" (public kinds: `+strings.Join(jobs.PublicNames(), ", ")+`)`)
	a.nothingEnqueued()
	resp, body := a.get("/v1/kinds")
	var kinds struct{ Kinds []string }
	if err := json.Unmarshal(body, &kinds); err != nil || resp.StatusCode != http.StatusOK || strings.Join(kinds.Kinds, ",") != strings.Join(jobs.PublicNames(), ",") {
		t.Fatalf("GET /v1/kinds: %d %s; want the public kinds %v", resp.StatusCode, body, jobs.PublicNames())
	}
}

// A job path into the service's state is refused at submit, 400 naming
// the field, in every spelling: the attack of finding 2 (overwrite another
// batch's output, append to it with ping) never reaches a worker.
func TestCreateJobRefusesPathsIntoTheDataDir(t *testing.T) {
	a := startJobsAPI(t)
	const rel = ".tandem/artifacts/batches/b1/output.jsonl"
	const what = " lies in the artifact store (TANDEM_DATA_DIR/artifacts), which no job may read or write"
	if err := os.Symlink(".tandem", filepath.Join(a.root, "state")); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ kind, args, field, path string }{
		{"generate", `{"model":"builtin:tiny","input":"in.jsonl","output":"` + rel + `"}`, "output", rel},
		{"generate", `{"model":"builtin:tiny","input":"in.jsonl","output":"` + a.theirs + `"}`, "output", a.theirs},
		{"generate", `{"model":"builtin:tiny","input":"in.jsonl","output":"state/artifacts/batches/b1/output.jsonl"}`, "output", "state/artifacts/batches/b1/output.jsonl"},
		{"generate", `{"model":"builtin:tiny","input":"` + rel + `","output":"mine.jsonl"}`, "input", rel},
		{"ping", `{"record":"` + rel + `"}`, "record", rel},
		{"ping", `{"record":"` + a.theirs + `"}`, "record", a.theirs},
	} {
		a.wantError(`{"kind":"`+c.kind+`","args":`+c.args+`}`, 400, "invalid_args", c.kind+` args: field "`+c.field+`": path "`+c.path+`"`+what)
	}
	a.wantError(`{"kind":"finetune","args":{"model":".tandem/registry/m/v1","data":"d.txt"}}`, 400, "invalid_args",
		`finetune args: field "model": path ".tandem/registry/m/v1" lies in the model registry (TANDEM_DATA_DIR/registry), which no job may read or write`)
	a.wantError(`{"kind":"ping","args":{"record":".tandem/redis/url"}}`, 400, "invalid_args",
		`ping args: field "record": path ".tandem/redis/url" lies in the data dir (TANDEM_DATA_DIR), which no job may read or write`)
	// POST /v1/finetunes makes the same checks as POST /v1/jobs.
	for _, c := range []struct{ body, want string }{
		{`{"model":"builtin:tiny","data":"` + rel + `","out":"run"}`, `field "data": path "` + rel + `"` + what},
		{`{"model":"builtin:tiny","data":"d.txt","out":".tandem/artifacts/run"}`, `field "out": path ".tandem/artifacts/run"` + what},
		{`{"model":"builtin:tiny","data":"d.txt","out":"run"} trailing`, "body: data after the JSON value; send exactly one JSON object"},
	} {
		resp, got := a.post("/v1/finetunes", "application/json", c.body)
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(got), strings.ReplaceAll(c.want, `"`, `\"`)) {
			t.Errorf("POST /v1/finetunes %s: %d %s, want 400 with %s", c.body, resp.StatusCode, got, c.want)
		}
	}
	a.nothingEnqueued()
	if data, _ := os.ReadFile(a.theirs); string(data) != "theirs\n" {
		t.Fatalf("their output now holds %q", data)
	}
	// Paths elsewhere in the root are taken.
	resp, body := a.post("/v1/jobs", "application/json", `{"kind":"ping","args":{"record":"runs/mine.txt"}}`)
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("a ping recording in the root: %d %s", resp.StatusCode, body)
	}
}

// A producer whose data root lies inside its data dir refuses to start.
func TestServeRefusesDataRootInsideDataDir(t *testing.T) {
	e := newBatchEnv(t)
	files := filepath.Join(e.dir, "files")
	if err := os.MkdirAll(files, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("TANDEM_DATA_ROOT", files)
	_, _, err := runProducer(t, "serve", "--addr", "127.0.0.1:0")
	if err == nil || !strings.Contains(err.Error(), "lies inside the data dir (TANDEM_DATA_DIR)") {
		t.Fatalf("producer serve with the data root %s inside the data dir %s: %v", files, e.dir, err)
	}
}

// `producer enqueue` is an operator's tool (it holds the Redis
// credentials): it may enqueue an internal kind, as the demo does to start
// a sharded rebuild, but its --max-retry has the API's bounds.
func TestEnqueueCLIBounds(t *testing.T) {
	e := newBatchEnv(t)
	args := e.write(t, "fanout.json", `{"interactions":"i.csv","shards":2}`)
	out, _, err := runProducer(t, "enqueue", jobs.KindRecsFanout, "--args", args, "--task-id", "nightly-by-hand")
	var v TaskView
	if err != nil || json.Unmarshal([]byte(out), &v) != nil || v.Kind != jobs.KindRecsFanout {
		t.Fatalf("producer enqueue %s: %v\n%s", jobs.KindRecsFanout, err, out)
	}
	// A batch kind, which package batch registers: checked, then enqueued
	// on its own queue.
	bad := e.write(t, "chunk.json", `{"batch_id":"batch_x","chunk":-1}`)
	if _, _, err := runProducer(t, "enqueue", jobs.KindBatchChunk, "--args", bad); err == nil || !strings.Contains(err.Error(), "chunk") {
		t.Errorf("producer enqueue of a negative chunk: %v; want a refusal naming chunk", err)
	}
	fin := e.write(t, "finalize.json", `{"batch_id":"batch_x"}`)
	out, _, err = runProducer(t, "enqueue", jobs.KindBatchFinalize, "--args", fin)
	if err != nil || json.Unmarshal([]byte(out), &v) != nil || v.Kind != jobs.KindBatchFinalize || v.Queue != pipeline.QueueDefault {
		t.Fatalf("producer enqueue %s: %v\n%s", jobs.KindBatchFinalize, err, out)
	}
	ping := e.write(t, "ping.json", `{}`)
	for _, n := range []int{-100, limits.JobMaxRetry + 1} {
		_, _, err := runProducer(t, "enqueue", jobs.KindPing, "--args", ping, "--max-retry", fmt.Sprint(n))
		if want := fmt.Sprintf("--max-retry: %d is outside 0..%d", n, limits.JobMaxRetry); err == nil || err.Error() != want {
			t.Errorf("--max-retry %d: %v; want %q", n, err, want)
		}
	}
}
