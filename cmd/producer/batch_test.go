package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/tandem-ai/tandem/batch"
	"github.com/tandem-ai/tandem/generation"
	"github.com/tandem-ai/tandem/jobs"
	"github.com/tandem-ai/tandem/pipeline"
)

// These tests use Redis database 15 and flush only it.
const testRedisDB = 15

func testRedisAddr() string {
	if a := os.Getenv("TANDEM_TEST_REDIS_ADDR"); a != "" {
		return a
	}
	return "127.0.0.1:6379"
}

// batchEnv points the producer's flags (through their environment
// variables) at a test Redis and data directory, and runs an in-process
// worker with the batch kinds.
type batchEnv struct {
	dir string
	cfg pipeline.Config
	rdb *redis.Client
	bus *pipeline.Bus // set by startNATS
}

func newBatchEnv(t testing.TB) *batchEnv {
	t.Helper()
	if testing.Short() {
		t.Skip("needs Redis")
	}
	rdb := redis.NewClient(&redis.Options{Addr: testRedisAddr(), DB: testRedisDB})
	if err := rdb.FlushDB(context.Background()).Err(); err != nil {
		t.Fatalf("redis at %s: %v", testRedisAddr(), err)
	}
	t.Cleanup(func() {
		_ = rdb.FlushDB(context.Background()).Err()
		rdb.Close()
	})
	dir := t.TempDir()
	redisURL := fmt.Sprintf("redis://%s/%d", testRedisAddr(), testRedisDB)
	for k, v := range map[string]string{
		"TANDEM_REDIS_URL": redisURL, "TANDEM_DATA_DIR": dir, "TANDEM_NATS_URL": "", "TANDEM_ARTIFACT_STORE": "",
		"TANDEM_QUEUES": "default=1", "TANDEM_POLL_INTERVAL": "20ms", "TANDEM_WEBHOOK_URLS": "",
	} {
		t.Setenv(k, v)
	}
	cfg := pipeline.DefaultConfig()
	cfg.RedisURL, cfg.DataDir, cfg.Queues, cfg.Concurrency, cfg.PollInterval = redisURL, dir, map[string]int{"default": 1}, 2, 20*time.Millisecond
	return &batchEnv{dir: dir, cfg: cfg, rdb: rdb}
}

// startNATS runs an embedded nats-server for the env's producers and
// workers (progress, lifecycle events); call it before starting them.
func (e *batchEnv) startNATS(t *testing.T) {
	t.Helper()
	ns, err := pipeline.StartEmbeddedNATS(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Shutdown)
	bus, err := pipeline.ConnectBus(context.Background(), ns.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(bus.Close)
	if err := bus.EnsureStreams(context.Background()); err != nil {
		t.Fatal(err)
	}
	e.cfg.NATSURL, e.bus = ns.URL(), bus
	t.Setenv("TANDEM_NATS_URL", ns.URL())
}

func (e *batchEnv) startWorker(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	deps := jobs.NewDeps(logger)
	deps.Bus = e.bus
	reg := pipeline.NewRegistry()
	jobs.RegisterAll(reg, deps)
	_, detach, err := batch.Attach(ctx, reg, deps, e.cfg, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	srv, err := pipeline.NewServer(e.cfg, reg, logger)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
		detach()
	})
}

func (e *batchEnv) write(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(e.dir, name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func runProducer(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var o, e bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	err = run(ctx, args, &o, &e)
	return o.String(), e.String(), err
}

func TestBatchCLI(t *testing.T) {
	e := newBatchEnv(t)
	e.startWorker(t)
	tmpl := e.write(t, "note.tmpl", "Write a {{.style}} about {{.topic}}:")
	rows := e.write(t, "rows.csv", "custom_id,topic,style,max_tokens,seed\nn1,rain,haiku,6,1\nn2,bread,tweet,6,2\nn3,the sea,limerick,6,3\n")

	out, stderr, err := runProducer(t, "batch", "create", rows, "--model", "builtin:tiny", "--template", tmpl, "--wait", "--json", "--trim", "--metadata", "team=docs")
	if err != nil {
		t.Fatalf("create: %v\n%s", err, stderr)
	}
	var b batch.Batch
	if err := json.Unmarshal([]byte(out), &b); err != nil {
		t.Fatalf("create --json printed %q: %v", out, err)
	}
	if b.Status != batch.StatusCompleted || b.RequestCounts.Completed != 3 || b.Metadata["team"] != "docs" || !b.PostProcess.Trim {
		t.Fatalf("batch %+v", b)
	}
	if !strings.Contains(stderr, "3/3 rows 100%") {
		t.Errorf("no final progress line in %q", stderr)
	}
	data, err := os.ReadFile(b.OutputFile)
	if err != nil || strings.Count(string(data), "\n") != 3 {
		t.Fatalf("output_file %s: %q, %v", b.OutputFile, data, err)
	}

	// Without --json, --wait prints where the results are.
	out, stderr, err = runProducer(t, "batch", "create", rows, "--model", "builtin:tiny", "--template", tmpl, "--wait")
	if err != nil || !strings.Contains(out, "output: "+e.dir) || !strings.Contains(out, "output.jsonl") {
		t.Fatalf("create --wait: %q, %q, %v", out, stderr, err)
	}

	for _, args := range [][]string{{"status", b.ID}, {"list"}, {"list", "--json", "--limit", "1"}, {"results", b.ID}, {"results", b.ID, "--errors"}} {
		out, stderr, err := runProducer(t, append([]string{"batch"}, args...)...)
		if err != nil {
			t.Fatalf("batch %v: %v\n%s", args, err, stderr)
		}
		if args[0] != "results" && !strings.Contains(out, b.ID) && args[0] != "list" {
			t.Errorf("batch %v printed %q", args, out)
		}
	}
	saveDir := filepath.Join(e.dir, "saved")
	if out, _, err := runProducer(t, "batch", "results", b.ID, "--out", saveDir); err != nil || !strings.Contains(out, "output.jsonl") {
		t.Fatalf("results --out: %q, %v", out, err)
	}
	if got, _ := os.ReadFile(filepath.Join(saveDir, "output.jsonl")); !bytes.Equal(got, data) {
		t.Fatal("saved output.jsonl differs")
	}
	if _, _, err := runProducer(t, "batch", "cancel", b.ID); err == nil {
		t.Fatal("cancel of a completed batch succeeded")
	}
	if _, _, err := runProducer(t, "batch", "status", "batch_missing"); err == nil {
		t.Fatal("status of a missing batch succeeded")
	}
}

// A malformed file: every problem is printed with its line, and nothing is
// enqueued or stored.
func TestBatchCLIRejectsMalformedFile(t *testing.T) {
	e := newBatchEnv(t)
	lines := []string{
		`{"custom_id":"a","body":{"prompt":"fine"}}`,
		`{"custom_id":"a","body":{"prompt":"dup"}}`,
		`{"custom_id":"b","body":{"prompt":"x","temperature":-1}}`,
		`not json`,
		`{"custom_id":"c","body":{"prompt":"` + strings.Repeat("x", generation.MaxLineBytes) + `"}}`,
		`{"body":{"prompt":"no id"}}`,
	}
	file := e.write(t, "bad.jsonl", strings.Join(lines, "\n")+"\n")
	_, stderr, err := runProducer(t, "batch", "create", file, "--model", "builtin:tiny")
	if err == nil {
		t.Fatal("a malformed file was accepted")
	}
	for _, want := range []string{
		file + ":2: duplicate_custom_id", file + ":3: invalid_request", file + ":4: invalid_json",
		file + ":5: line_too_long", file + ":6: invalid_request", "5 of 6 lines are invalid; nothing was enqueued", "--skip-invalid",
	} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	}
	keys, err := e.rdb.Keys(context.Background(), "*").Result()
	if err != nil || len(keys) != 0 {
		t.Fatalf("Redis after a refused file: %v, %v", keys, err)
	}
	if entries, _ := os.ReadDir(filepath.Join(e.dir, "artifacts")); len(entries) != 0 {
		t.Fatalf("artifacts after a refused file: %v", entries)
	}
	// --skip-invalid runs the valid line; its record counts the rest as failed.
	out, stderr, err := runProducer(t, "batch", "create", file, "--model", "builtin:tiny", "--skip-invalid", "--json")
	if err != nil {
		t.Fatalf("--skip-invalid: %v\n%s", err, stderr)
	}
	var b batch.Batch
	if err := json.Unmarshal([]byte(out), &b); err != nil || b.RequestCounts.Total != 6 || b.RequestCounts.Failed != 5 || b.Skipped != 5 {
		t.Fatalf("batch %+v, %v", b, err)
	}
}

func TestProgressBar(t *testing.T) {
	var buf bytes.Buffer
	p := newProgressBar(&buf, true)
	b := &batch.Batch{Status: batch.StatusInProgress, RequestCounts: batch.Counts{Total: 100}}
	p.update(b)
	p.start = p.start.Add(-10 * time.Second) // ten seconds later, 50 rows done
	b.RequestCounts.Completed = 48
	b.RequestCounts.Failed = 2
	line := p.render(b, time.Now())
	for _, want := range []string{"[###############---------------]", "50/100 rows", " 50%", "5.0 rows/s", "ETA 0:10", "(2 failed)"} {
		if !strings.Contains(line, want) {
			t.Errorf("%q lacks %q", line, want)
		}
	}
	p.update(b)
	p.finish()
	if !strings.HasPrefix(buf.String(), "\r[") || !strings.HasSuffix(buf.String(), "\n") {
		t.Errorf("terminal output %q", buf.String())
	}
}

// testAPI is the producer's HTTP API, served on a batchEnv's Redis until
// the test ends.
type testAPI struct {
	t   testing.TB
	URL string
}

func (e *batchEnv) startAPI(t testing.TB) *testAPI {
	t.Helper()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	client, err := newClient(e.cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	batches, err := newBatchAPI(context.Background(), e.cfg, logger)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(batches.Close)
	mux := http.NewServeMux()
	(&apiServer{client: client, logger: logger, batches: batches}).routes(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return &testAPI{t: t, URL: srv.URL}
}

func (a *testAPI) post(path, ctype, body string) (*http.Response, []byte) {
	a.t.Helper()
	return a.read(http.Post(a.URL+path, ctype, strings.NewReader(body)))
}

func (a *testAPI) get(path string) (*http.Response, []byte) {
	a.t.Helper()
	return a.read(http.Get(a.URL + path))
}

// read returns the response with its body read and closed.
func (a *testAPI) read(resp *http.Response, err error) (*http.Response, []byte) {
	a.t.Helper()
	if err != nil {
		a.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

func TestBatchAPI(t *testing.T) {
	e := newBatchEnv(t)
	e.startWorker(t)
	api := e.startAPI(t)
	post, get := api.post, api.get

	// Inline JSONL in a JSON body.
	input := `{"custom_id":"x1","body":{"prompt":"Hello","max_tokens":4}}` + "\n" + `{"custom_id":"x2","body":{"prompt":"World","max_tokens":4}}`
	req, _ := json.Marshal(map[string]any{"model": "builtin:tiny", "input": input, "chunk_size": 1, "metadata": map[string]string{"k": "v"}})
	resp, body := post("/v1/batches", "application/json", string(req))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("create: %d %s", resp.StatusCode, body)
	}
	var b batch.Batch
	if err := json.Unmarshal(body, &b); err != nil || b.Chunks != 2 {
		t.Fatalf("created %s: %v", body, err)
	}

	// Server-sent events until the batch ends.
	sse, err := http.Get(api.URL + "/v1/batches/" + b.ID + "/events")
	if err != nil {
		t.Fatal(err)
	}
	if ct := sse.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("events content type %q", ct)
	}
	sc := bufio.NewScanner(sse.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	var events []string
	var last string
	for sc.Scan() {
		line := sc.Text()
		if name, ok := strings.CutPrefix(line, "event: "); ok {
			events = append(events, name)
		}
		if d, ok := strings.CutPrefix(line, "data: "); ok {
			last = d
		}
	}
	sse.Body.Close()
	if len(events) == 0 || events[len(events)-1] != "done" || !strings.Contains(last, `"status":"completed"`) {
		t.Fatalf("events %v, last data %s", events, last)
	}

	resp, body = get("/v1/batches/" + b.ID)
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"completed":2`) {
		t.Fatalf("get: %d %s", resp.StatusCode, body)
	}
	resp, body = get("/v1/batches/" + b.ID + "/output")
	if resp.StatusCode != http.StatusOK || strings.Count(string(body), "\n") != 2 || !strings.Contains(string(body), `"custom_id":"x1"`) {
		t.Fatalf("output: %d %s", resp.StatusCode, body)
	}
	if resp, body = get("/v1/batches/" + b.ID + "/output?file=errors"); resp.StatusCode != http.StatusOK || len(body) != 0 {
		t.Fatalf("errors file: %d %q", resp.StatusCode, body)
	}

	// A CSV upload as the raw body, options in the query.
	resp, body = post("/v1/batches?model=builtin:tiny&template="+urlEscape("About {{.topic}}:")+"&trim=true&metadata=src%3Dcsv", "text/csv", "custom_id,topic,max_tokens\nc1,rain,3\n")
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"input_kind":"template"`) || !strings.Contains(string(body), `"src":"csv"`) {
		t.Fatalf("csv upload: %d %s", resp.StatusCode, body)
	}

	// Invalid input: 400 with every problem and its line.
	bad, _ := json.Marshal(map[string]any{"model": "builtin:tiny", "input": "{\"custom_id\":\"a\",\"body\":{\"prompt\":\"x\"}}\n{oops\n{\"custom_id\":\"a\",\"body\":{\"prompt\":\"x\"}}\n"})
	resp, body = post("/v1/batches", "application/json", string(bad))
	var vb validationBody
	if err := json.Unmarshal(body, &vb); err != nil || resp.StatusCode != http.StatusBadRequest || len(vb.Report.Problems) != 2 ||
		vb.Report.Problems[0].Line != 2 || vb.Report.Problems[1].Line != 3 {
		t.Fatalf("invalid input: %d %s", resp.StatusCode, body)
	}
	// Paths are confined to the input directory.
	for _, p := range []string{"../../etc/passwd", "/etc/passwd", "missing.jsonl"} {
		req, _ := json.Marshal(map[string]any{"model": "builtin:tiny", "input_path": p})
		// 400, naming no server directory (issue 22).
		if resp, body := post("/v1/batches", "application/json", string(req)); resp.StatusCode != http.StatusBadRequest || strings.Contains(string(body), e.dir) {
			t.Errorf("input_path %q: %d %s", p, resp.StatusCode, body)
		}
	}
	if err := os.MkdirAll(filepath.Join(e.dir, "inputs"), 0o755); err != nil {
		t.Fatal(err)
	}
	e.write(t, "inputs/in.jsonl", `{"custom_id":"p1","body":{"prompt":"by path","max_tokens":2}}`+"\n")
	// A FIFO is refused before it is opened, not waited on (issue 22).
	if err := syscall.Mkfifo(filepath.Join(e.dir, "inputs", "fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	fifoReq, _ := json.Marshal(map[string]any{"model": "builtin:tiny", "input_path": "fifo"})
	quick := &http.Client{Timeout: 10 * time.Second}
	if resp, body := api.read(quick.Post(api.URL+"/v1/batches", "application/json", bytes.NewReader(fifoReq))); resp.StatusCode != http.StatusBadRequest ||
		!strings.Contains(string(body), `field \"input_path\": open \"fifo\": not a regular file`) {
		t.Fatalf("input_path naming a FIFO: %d %s", resp.StatusCode, body)
	}
	req, _ = json.Marshal(map[string]any{"model": "builtin:tiny", "input_path": "in.jsonl"})
	if resp, body := post("/v1/batches", "application/json", string(req)); resp.StatusCode != http.StatusOK {
		t.Fatalf("input_path: %d %s", resp.StatusCode, body)
	}
	// Bad options are 400s that name the field.
	if resp, body := post("/v1/batches", "application/json", `{"model":"builtin:tiny","input":"x","chunk_size":-3}`); resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), "chunk_size") {
		t.Fatalf("bad chunk_size: %d %s", resp.StatusCode, body)
	}

	if resp, body := get(fmt.Sprintf("/v1/batches?limit=%d", batch.MaxListLimit+1)); resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), "limit") {
		t.Fatalf("a page over MaxListLimit: %d %s", resp.StatusCode, body)
	}
	// Bodies over their limit: 413, naming it.
	for _, c := range []struct {
		path string
		size int
	}{{"/v1/jobs", maxRequestBody + 1}, {"/v1/batches", maxBatchJSONBody + 1}} {
		resp, body := post(c.path, "application/json", `{"x":"`+strings.Repeat("a", c.size)+`"}`)
		if resp.StatusCode != http.StatusRequestEntityTooLarge || !strings.Contains(string(body), fmt.Sprintf("over the limit of %d bytes", c.size-1)) {
			t.Fatalf("POST %s of %d bytes: %d %s", c.path, c.size, resp.StatusCode, body)
		}
	}
	resp, body = get("/v1/batches?limit=2")
	var page batchList
	if err := json.Unmarshal(body, &page); err != nil || resp.StatusCode != http.StatusOK || len(page.Data) != 2 || !page.HasMore || page.Object != "list" {
		t.Fatalf("list: %d %s", resp.StatusCode, body)
	}
	resp, body = get("/v1/batches?limit=2&after=" + page.LastID)
	if err := json.Unmarshal(body, &page); err != nil || len(page.Data) != 1 || page.HasMore {
		t.Fatalf("second page: %d %s", resp.StatusCode, body)
	}
	if resp, _ := get("/v1/batches/batch_nope"); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("missing batch: %d", resp.StatusCode)
	}
	if resp, _ := post("/v1/batches/"+b.ID+"/cancel", "application/json", ""); resp.StatusCode != http.StatusConflict {
		t.Fatalf("cancel of a completed batch: %d", resp.StatusCode)
	}
}

func urlEscape(s string) string {
	r := strings.NewReplacer("{", "%7B", "}", "%7D", " ", "%20", ":", "%3A")
	return r.Replace(s)
}

// --device cuda (CLI) and "device":"cuda" (HTTP) put a batch's chunks on
// the gpu queue, and the batch shows its device; a bad device is refused,
// naming the flag or field, with nothing created.
func TestBatchDevice(t *testing.T) {
	e := newBatchEnv(t) // no worker: the chunks stay where they were put
	ctx := context.Background()
	file := e.write(t, "in.jsonl", `{"custom_id":"a","body":{"prompt":"one","max_tokens":2}}`+"\n"+`{"custom_id":"b","body":{"prompt":"two","max_tokens":2}}`+"\n")

	for _, dev := range []string{"tpu", "cuda:x"} {
		_, _, err := runProducer(t, "batch", "create", file, "--model", "builtin:tiny", "--device", dev)
		if err == nil || !strings.Contains(err.Error(), "--device") {
			t.Errorf("--device %s: %v; want a --device error", dev, err)
		}
	}
	if keys, err := e.rdb.Keys(ctx, "*").Result(); err != nil || len(keys) != 0 {
		t.Fatalf("Redis after refused devices: %v, %v", keys, err)
	}

	insp, err := newClient(e.cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer insp.Close()
	// pending is how many chunk tasks of batch id wait in queue.
	pending := func(queue, id string) int {
		tasks, err := insp.Inspector().ListPendingTasks(queue)
		if err != nil {
			return 0 // the queue does not exist: nothing was put there
		}
		n := 0
		for _, ti := range tasks {
			if ti.Type == jobs.KindBatchChunk && strings.HasPrefix(ti.ID, id+":") {
				n++
			}
		}
		return n
	}
	for _, c := range []struct {
		flags       []string
		device      string
		queue, none string
	}{
		{[]string{"--device", "cuda"}, "cuda", pipeline.QueueGPU, pipeline.QueueDefault},
		{[]string{"--device", "cpu"}, "cpu", pipeline.QueueDefault, pipeline.QueueGPU},
		{nil, "", pipeline.QueueDefault, pipeline.QueueGPU},
	} {
		out, stderr, err := runProducer(t, append([]string{"batch", "create", file, "--model", "builtin:tiny", "--chunk-size", "1", "--json"}, c.flags...)...)
		if err != nil {
			t.Fatalf("create %v: %v\n%s", c.flags, err, stderr)
		}
		var b batch.Batch
		if err := json.Unmarshal([]byte(out), &b); err != nil || b.Device != c.device || b.Chunks != 2 {
			t.Fatalf("create %v printed %s (%v)", c.flags, out, err)
		}
		if got, want := pending(c.queue, b.ID), 2; got != want {
			t.Errorf("create %v: %d chunks pending in %s; want %d", c.flags, got, c.queue, want)
		}
		if got := pending(c.none, b.ID); got != 0 {
			t.Errorf("create %v: %d chunks pending in %s; want none", c.flags, got, c.none)
		}
		// status shows the device; a CPU batch by default has none.
		out, _, err = runProducer(t, "batch", "status", b.ID)
		shown := strings.Contains(out, fmt.Sprintf(`"device": %q`, c.device))
		if err != nil || shown != (c.device != "") || c.device == "" && strings.Contains(out, `"device"`) {
			t.Errorf("status of a %q batch: %s, %v", c.device, out, err)
		}
	}

	api := e.startAPI(t)
	post := func(path, ctype, body string) (int, []byte) {
		resp, b := api.post(path, ctype, body)
		return resp.StatusCode, b
	}
	input := `{"custom_id":"h","body":{"prompt":"http","max_tokens":2}}`
	// The JSON body's device field, and the query parameter of a raw upload.
	for _, send := range []func(device string) (int, []byte){
		func(device string) (int, []byte) {
			req, _ := json.Marshal(map[string]any{"model": "builtin:tiny", "input": input, "device": device})
			return post("/v1/batches", "application/json", string(req))
		},
		func(device string) (int, []byte) {
			return post("/v1/batches?model=builtin:tiny&device="+device, "application/jsonl", input)
		},
	} {
		code, body := send("cuda:0")
		var b batch.Batch
		if err := json.Unmarshal(body, &b); err != nil || code != http.StatusOK || b.Device != "cuda:0" {
			t.Fatalf("create with device cuda:0: %d %s", code, body)
		}
		if got := pending(pipeline.QueueGPU, b.ID); got != 1 {
			t.Errorf("HTTP batch %s: %d chunks pending in gpu; want 1", b.ID, got)
		}
		if _, got := api.get("/v1/batches/" + b.ID); !strings.Contains(string(got), `"device":"cuda:0"`) {
			t.Errorf("GET %s: %s", b.ID, got)
		}
		if code, body := send("tpu"); code != http.StatusBadRequest || !strings.Contains(string(body), "device") {
			t.Errorf("device tpu: %d %s; want 400 naming device", code, body)
		}
	}
}

// TestPersonalizeDevice: producer personalize --device cuda puts the job on
// the GPU workers' queue; no flag keeps the kind's own; a bad device is
// refused, naming the flag, before anything is enqueued.
func TestPersonalizeDevice(t *testing.T) {
	e := newBatchEnv(t) // no worker: the job stays where it was put
	ctx := context.Background()
	t.Setenv("TANDEM_DATA_ROOT", t.TempDir()) // the job's paths are relative to it
	base := []string{"personalize", "--catalog", "catalog.jsonl", "--out", "out"}

	_, _, err := runProducer(t, append(base, "--device", "tpu")...)
	if err == nil || !strings.Contains(err.Error(), "--device") {
		t.Fatalf("--device tpu: %v; want a --device error", err)
	}
	if keys, err := e.rdb.Keys(ctx, "*").Result(); err != nil || len(keys) != 0 {
		t.Fatalf("Redis after a refused device: %v, %v", keys, err)
	}
	for _, c := range []struct {
		flags []string
		queue string
	}{
		{[]string{"--device", "cuda:0"}, pipeline.QueueGPU},
		{nil, pipeline.QueueDefault}, // the kind's own queue
	} {
		out, stderr, err := runProducer(t, append(append([]string{}, base...), c.flags...)...)
		if err != nil {
			t.Fatalf("personalize %v: %v\n%s", c.flags, err, stderr)
		}
		var v struct {
			ID    string `json:"id"`
			Queue string `json:"queue"`
		}
		if err := json.Unmarshal([]byte(out), &v); err != nil || v.Queue != c.queue {
			t.Fatalf("personalize %v printed %s (%v); want queue %s", c.flags, out, err, c.queue)
		}
	}
}

// TestInputPathKeepsOutOfTheServiceState: an operator may point
// TANDEM_BATCH_INPUT_DIR at a directory that holds the data dir (the data
// root, say); input_path still reaches none of the service's state.
func TestInputPathKeepsOutOfTheServiceState(t *testing.T) {
	e := newBatchEnv(t)
	top := filepath.Dir(e.dir)
	t.Setenv(EnvBatchInputDir, top)
	b, err := newBatchAPI(context.Background(), e.cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	secret := filepath.Join(e.dir, "artifacts", "batches", "b1", "output.jsonl")
	if err := os.MkdirAll(filepath.Dir(secret), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(secret, []byte(`{"custom_id":"x","body":{"prompt":"theirs"}}`+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	rel, _ := filepath.Rel(top, secret)
	if f, err := b.openInput(rel); err == nil {
		f.Close()
		t.Fatalf("input_path %q reached the artifact store", rel)
	} else if !strings.Contains(err.Error(), "which no job may read or write") {
		t.Fatalf("input_path %q: %v", rel, err)
	}
	// The default, <data dir>/inputs, still works.
	t.Setenv(EnvBatchInputDir, "")
	b2, err := newBatchAPI(context.Background(), e.cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer b2.Close()
	if err := os.MkdirAll(filepath.Join(e.dir, "inputs"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(e.dir, "inputs", "in.jsonl"), []byte("{}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := b2.openInput("in.jsonl")
	if err != nil {
		t.Fatalf("the default input directory: %v", err)
	}
	f.Close()
}
