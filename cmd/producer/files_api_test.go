package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/shared"

	"github.com/tandem-ai/tandem/batch"
	"github.com/tandem-ai/tandem/generation"
	"github.com/tandem-ai/tandem/pipeline"
)

// openAIClient is the official client pointed at api, with no retries.
func filesClient(api *testAPI) openai.Client { return oaiClientAt(api.URL, "test") }

// upload sends content as a batch input file.
func upload(t *testing.T, c openai.Client, name, content string) (*openai.FileObject, error) {
	t.Helper()
	return c.Files.New(context.Background(), openai.FileNewParams{
		File:    openai.File(strings.NewReader(content), name, "application/jsonl"),
		Purpose: openai.FilePurposeBatch,
	})
}

// clientError is err as the client's error, failing the test when it is not one.
func clientError(t *testing.T, err error) *openai.Error {
	t.Helper()
	var e *openai.Error
	if !errors.As(err, &e) {
		t.Fatalf("want an API error, got %v", err)
	}
	return e
}

// waitBatch polls the batch until it ends.
func waitBatch(t *testing.T, c openai.Client, id string) *openai.Batch {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		b, err := c.Batches.Get(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		switch b.Status {
		case openai.BatchStatusCompleted, openai.BatchStatusFailed, openai.BatchStatusExpired, openai.BatchStatusCancelled:
			return b
		}
		if time.Now().After(deadline) {
			t.Fatalf("batch %s still %s", id, b.Status)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// content reads a file's bytes as result lines.
func contentLines(t *testing.T, c openai.Client, id string) []generation.ResponseLine {
	t.Helper()
	resp, err := c.Files.Content(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out []generation.ResponseLine
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var l generation.ResponseLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatalf("result line %s: %v", sc.Text(), err)
		}
		out = append(out, l)
	}
	return out
}

// The documented OpenAI Batch flow, through the official client: upload,
// create with input_file_id, poll, download the output and error files;
// a second batch of the same input gets ids of its own.
func TestOpenAIBatchFlow(t *testing.T) {
	e := newBatchEnv(t)
	e.startWorker(t)
	api := e.startAPI(t)
	c := filesClient(api)
	ctx := context.Background()

	long := strings.Repeat("word ", 300) // past builtin:tiny's 256 positions
	input := `{"custom_id":"a","method":"POST","url":"/v1/completions","body":{"model":"builtin:tiny","prompt":"Hello","max_tokens":3}}
{"custom_id":"b","method":"POST","url":"/v1/completions","body":{"model":"builtin:tiny","prompt":"` + long + `","max_tokens":3}}
{"custom_id":"c","method":"POST","url":"/v1/completions","body":{"model":"builtin:tiny","prompt":"World","max_tokens":3}}
`
	f, err := upload(t, c, "in.jsonl", input)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(f.ID, "file-") || f.Object != "file" || f.Purpose != openai.FileObjectPurposeBatch || f.Bytes != int64(len(input)) || f.Filename != "in.jsonl" || f.CreatedAt == 0 {
		t.Fatalf("file object %s", f.RawJSON())
	}
	got, err := c.Files.Get(ctx, f.ID)
	if err != nil || got.ID != f.ID || got.Bytes != f.Bytes {
		t.Fatalf("retrieve: %v %+v", err, got)
	}

	var ids [2]map[string]string // custom_id -> line id, per batch
	for run := range ids {
		b, err := c.Batches.New(ctx, openai.BatchNewParams{
			InputFileID:      f.ID,
			Endpoint:         openai.BatchNewParamsEndpointV1Completions,
			CompletionWindow: openai.BatchNewParamsCompletionWindow24h,
			Metadata:         shared.Metadata{"run": fmt.Sprint(run)},
		})
		if err != nil {
			t.Fatal(err)
		}
		if b.InputFileID != f.ID || b.CompletionWindow != "24h" || b.Endpoint != "/v1/completions" || b.Metadata["run"] != fmt.Sprint(run) || b.Object != "batch" {
			t.Fatalf("created %s", b.RawJSON())
		}
		b = waitBatch(t, c, b.ID)
		if b.Status != openai.BatchStatusCompleted || b.RequestCounts.Total != 3 || b.RequestCounts.Completed != 2 || b.RequestCounts.Failed != 1 ||
			b.OutputFileID == "" || b.ErrorFileID == "" || b.CompletedAt == 0 || b.InProgressAt == 0 || b.FinalizingAt == 0 {
			t.Fatalf("finished %s", b.RawJSON())
		}
		for _, leak := range []string{e.dir, "output_key", "output_file\"", ".jsonl\""} {
			if strings.Contains(b.RawJSON(), leak) {
				t.Fatalf("batch object shows %q: %s", leak, b.RawJSON())
			}
		}
		ids[run] = map[string]string{}
		out := contentLines(t, c, b.OutputFileID)
		if len(out) != 2 || out[0].CustomID != "a" || out[1].CustomID != "c" {
			t.Fatalf("output %+v", out)
		}
		for _, l := range out {
			if !strings.HasPrefix(l.ID, "batch_req_") || l.Error != nil || l.Response == nil || l.Response.StatusCode != 200 ||
				l.Response.RequestID == "" || l.Response.Body.Object != "text_completion" || len(l.Response.Body.Choices) != 1 {
				t.Fatalf("output line %+v", l)
			}
			ids[run][l.CustomID] = l.ID
		}
		errs := contentLines(t, c, b.ErrorFileID)
		if len(errs) != 1 || errs[0].CustomID != "b" || errs[0].Error == nil || errs[0].Error.Code != "context_length_exceeded" || errs[0].Error.Line != 2 {
			t.Fatalf("errors %+v", errs)
		}
		ids[run]["b"] = errs[0].ID
		// The result files are files.
		of, err := c.Files.Get(ctx, b.OutputFileID)
		if err != nil || of.Purpose != openai.FileObjectPurposeBatchOutput || of.Bytes == 0 {
			t.Fatalf("output file: %v %+v", err, of)
		}
	}
	for id, first := range ids[0] {
		if ids[1][id] == first {
			t.Fatalf("custom_id %s has id %s in both batches", id, first)
		}
	}

	// Paging: batches newest first, files in either order.
	page, err := c.Batches.List(ctx, openai.BatchListParams{Limit: openai.Int(1)})
	if err != nil || len(page.Data) != 1 || !page.HasMore || page.Data[0].Metadata["run"] != "1" {
		t.Fatalf("batches page 1: %v %+v", err, page)
	}
	page, err = c.Batches.List(ctx, openai.BatchListParams{Limit: openai.Int(1), After: openai.String(page.Data[0].ID)})
	if err != nil || len(page.Data) != 1 || page.HasMore || page.Data[0].Metadata["run"] != "0" {
		t.Fatalf("batches page 2: %v %+v", err, page)
	}
	all, err := c.Files.List(ctx, openai.FileListParams{})
	if err != nil || len(all.Data) != 5 { // the input, two outputs, two error files
		t.Fatalf("files: %v %+v", err, all)
	}
	inputs, err := c.Files.List(ctx, openai.FileListParams{Purpose: openai.String("batch")})
	if err != nil || len(inputs.Data) != 1 || inputs.Data[0].ID != f.ID {
		t.Fatalf("batch files: %v %+v", err, inputs)
	}
	var seen []string
	after := ""
	for {
		p := openai.FileListParams{Limit: openai.Int(2), Order: openai.FileListParamsOrderAsc}
		if after != "" {
			p.After = openai.String(after)
		}
		fp, err := c.Files.List(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		for _, x := range fp.Data {
			seen = append(seen, x.ID)
		}
		if !fp.HasMore {
			break
		}
		after = fp.Data[len(fp.Data)-1].ID
	}
	if len(seen) != 5 || seen[0] != f.ID {
		t.Fatalf("files oldest first, two a page: %v", seen)
	}

	// Delete.
	del, err := c.Files.Delete(ctx, f.ID)
	if err != nil || !del.Deleted || del.ID != f.ID {
		t.Fatalf("delete: %v %+v", err, del)
	}
	if _, err := c.Files.Get(ctx, f.ID); clientError(t, err).StatusCode != http.StatusNotFound {
		t.Fatalf("deleted file: %v", err)
	}
	if _, err := c.Files.Content(ctx, f.ID); clientError(t, err).StatusCode != http.StatusNotFound {
		t.Fatalf("deleted file's content: %v", err)
	}
}

// Uploads are checked line by line, and batches against their endpoint.
func TestOpenAIFileChecks(t *testing.T) {
	e := newBatchEnv(t)
	api := e.startAPI(t)
	c := filesClient(api)
	ctx := context.Background()
	line := func(id, model, url, prompt string) string {
		return fmt.Sprintf(`{"custom_id":%q,"method":"POST","url":%q,"body":{"model":%q,"prompt":%q}}`+"\n", id, url, model, prompt)
	}
	for _, c2 := range []struct {
		name, input string
		want        []string
	}{
		{"no prompt", line("a", "builtin:tiny", "/v1/completions", "x") + line("b", "builtin:tiny", "/v1/completions", ""), []string{"line 2", "body.prompt"}},
		{"mixed models", line("a", "builtin:tiny", "/v1/completions", "x") + line("b", "builtin:small", "/v1/completions", "y"), []string{"line 2", "body.model", "builtin:small"}},
		{"bad json", line("a", "builtin:tiny", "/v1/completions", "x") + "\n{oops\n", []string{"line 3", "invalid_json"}},
		{"duplicate custom_id", line("a", "builtin:tiny", "/v1/completions", "x") + line("a", "builtin:tiny", "/v1/completions", "y"), []string{"line 2", "custom_id"}},
		{"empty", "\n\n", []string{"no request lines"}},
	} {
		_, err := upload(t, c, "bad.jsonl", c2.input)
		ae := clientError(t, err)
		if ae.StatusCode != http.StatusBadRequest {
			t.Fatalf("%s: %d %s", c2.name, ae.StatusCode, ae.RawJSON())
		}
		for _, w := range c2.want {
			if !strings.Contains(ae.Message, w) {
				t.Errorf("%s: message %q lacks %q", c2.name, ae.Message, w)
			}
		}
	}
	_, err := c.Files.New(ctx, openai.FileNewParams{File: openai.File(strings.NewReader(line("a", "builtin:tiny", "", "x")), "f.jsonl", "application/jsonl"), Purpose: openai.FilePurposeFineTune})
	if ae := clientError(t, err); ae.StatusCode != http.StatusBadRequest || !strings.Contains(ae.Message, "purpose") {
		t.Fatalf("purpose fine-tune: %d %s", ae.StatusCode, ae.RawJSON())
	}

	// A line whose url is not the batch's endpoint is refused with its line.
	f, err := upload(t, c, "ok.jsonl", line("a", "builtin:tiny", "/v1/completions", "x"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Batches.New(ctx, openai.BatchNewParams{InputFileID: f.ID, Endpoint: openai.BatchNewParamsEndpointV1Embeddings, CompletionWindow: openai.BatchNewParamsCompletionWindow24h})
	if ae := clientError(t, err); ae.StatusCode != http.StatusBadRequest || !strings.Contains(ae.Message, "line 1") || !strings.Contains(ae.Message, "url") {
		t.Fatalf("endpoint mismatch: %d %s", ae.StatusCode, ae.RawJSON())
	}
	_, err = c.Batches.New(ctx, openai.BatchNewParams{InputFileID: "file-000000000000000000000000", Endpoint: openai.BatchNewParamsEndpointV1Completions, CompletionWindow: openai.BatchNewParamsCompletionWindow24h})
	if ae := clientError(t, err); ae.StatusCode != http.StatusNotFound {
		t.Fatalf("unknown input file: %d %s", ae.StatusCode, ae.RawJSON())
	}
	meta := shared.Metadata{}
	for i := range 17 {
		meta[fmt.Sprint("k", i)] = "v"
	}
	_, err = c.Batches.New(ctx, openai.BatchNewParams{InputFileID: f.ID, Endpoint: openai.BatchNewParamsEndpointV1Completions, CompletionWindow: openai.BatchNewParamsCompletionWindow24h, Metadata: meta})
	if ae := clientError(t, err); ae.StatusCode != http.StatusBadRequest || !strings.Contains(ae.Message, "metadata") {
		t.Fatalf("17 metadata pairs: %d %s", ae.StatusCode, ae.RawJSON())
	}
	// A multipart upload to /v1/batches is pointed at /v1/files.
	resp, body := api.post("/v1/batches", "multipart/form-data; boundary=x", "--x--\r\n")
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), "/v1/files") {
		t.Fatalf("multipart batch: %d %s", resp.StatusCode, body)
	}

	// Cancel, with no worker to run it: the batch stops at cancelling.
	b, err := c.Batches.New(ctx, openai.BatchNewParams{InputFileID: f.ID, Endpoint: openai.BatchNewParamsEndpointV1Completions, CompletionWindow: openai.BatchNewParamsCompletionWindow24h})
	if err != nil {
		t.Fatal(err)
	}
	if b.Model != "builtin:tiny" {
		t.Fatalf("model from the lines: %s", b.RawJSON())
	}
	b, err = c.Batches.Cancel(ctx, b.ID)
	if err != nil || b.Status != openai.BatchStatusCancelling || b.CancellingAt == 0 {
		t.Fatalf("cancel: %v %s", err, b.RawJSON())
	}
	if b, err = c.Batches.Get(ctx, b.ID); err != nil || b.Status != openai.BatchStatusCancelling || b.OutputFileID != "" {
		t.Fatalf("cancelled batch: %v %s", err, b.RawJSON())
	}
	// The content route streams what was uploaded.
	resp2, err := c.Files.Content(ctx, f.ID)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp2.Body)
	resp2.Body.Close()
	if string(raw) != line("a", "builtin:tiny", "/v1/completions", "x") {
		t.Fatalf("content %q", raw)
	}
}

// waitEnded waits until every batch of ids has ended, reading the batch
// records as a worker does, never through the API.
func (e *batchEnv) waitEnded(t *testing.T, ids ...string) {
	t.Helper()
	ctx := context.Background()
	svc, err := batch.Open(ctx, e.cfg, batch.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	deadline := time.Now().Add(2 * time.Minute)
	for _, id := range ids {
		for {
			st, _, err := svc.Store.State(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			if st.Terminal() {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("batch %s still %s", id, st)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// The rest of the documented Batch flow, through the official client and
// two producers on one Redis and NATS, as replicas are: batches accepted by
// one are read through the other, whose Files list shows their output and
// error files before anyone has read a batch; a cancel ends in cancelled
// with its counts and its error file; both lists are walked with the
// client's auto-paging iterators; the lifecycle event names the batch and
// its files by their API ids.
func TestOpenAIBatchCancelAndPaging(t *testing.T) {
	e := newBatchEnv(t)
	e.startNATS(t)
	accept, serve := filesClient(e.startAPI(t)), filesClient(e.startAPI(t))
	ctx := context.Background()

	var input strings.Builder
	for i := range 4 {
		fmt.Fprintf(&input, `{"custom_id":"r%d","method":"POST","url":"/v1/completions","body":{"model":"builtin:tiny","prompt":"Row %d","max_tokens":3}}`+"\n", i, i)
	}
	f, err := upload(t, accept, "rows.jsonl", input.String())
	if err != nil {
		t.Fatal(err)
	}
	// Three batches while no worker runs; the second is cancelled before
	// any of its rows can run.
	var ids []string
	for range 3 {
		b, err := accept.Batches.New(ctx, openai.BatchNewParams{InputFileID: f.ID, Endpoint: openai.BatchNewParamsEndpointV1Completions, CompletionWindow: openai.BatchNewParamsCompletionWindow24h})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, b.ID)
	}
	c, err := accept.Batches.Cancel(ctx, ids[1])
	if err != nil || c.Status != openai.BatchStatusCancelling || c.CancellingAt == 0 {
		t.Fatalf("cancel: %v %s", err, c.RawJSON())
	}
	e.startWorker(t)
	e.waitEnded(t, ids...)

	// The files, before any batch is read: the input, then three output
	// and three error files, two a page, oldest first.
	listed := map[string]openai.FileObject{}
	var order []string
	fileIter := serve.Files.ListAutoPaging(ctx, openai.FileListParams{Limit: openai.Int(2), Order: openai.FileListParamsOrderAsc})
	for fileIter.Next() {
		listed[fileIter.Current().ID] = fileIter.Current()
		order = append(order, fileIter.Current().ID)
	}
	if err := fileIter.Err(); err != nil || len(order) != 7 || len(listed) != 7 || order[0] != f.ID {
		t.Fatalf("files, two a page: %v %v", err, order)
	}

	// The batches, through the other producer, name those files.
	var cancelled *openai.Batch
	for i, id := range ids {
		b, err := serve.Batches.Get(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		for _, fid := range []string{b.OutputFileID, b.ErrorFileID} {
			if lf, ok := listed[fid]; !ok || lf.Purpose != openai.FileObjectPurposeBatchOutput {
				t.Fatalf("batch %d names file %q, listed as %+v", i, fid, lf)
			}
		}
		out, errs := contentLines(t, serve, b.OutputFileID), contentLines(t, serve, b.ErrorFileID)
		if i != 1 {
			if b.Status != openai.BatchStatusCompleted || b.RequestCounts.Total != 4 || b.RequestCounts.Completed != 4 || len(out) != 4 || len(errs) != 0 {
				t.Fatalf("batch %d: %s; %d output and %d error lines", i, b.RawJSON(), len(out), len(errs))
			}
			continue
		}
		if b.Status != openai.BatchStatusCancelled || b.CancelledAt == 0 || b.CancellingAt == 0 ||
			b.RequestCounts.Total != 4 || b.RequestCounts.Completed != 0 || b.RequestCounts.Failed != 4 || len(out) != 0 || len(errs) != 4 {
			t.Fatalf("cancelled batch: %s; %d output and %d error lines", b.RawJSON(), len(out), len(errs))
		}
		cancelled = b
		for j, l := range errs {
			if l.CustomID != fmt.Sprint("r", j) || l.Error == nil || l.Error.Code != "batch_cancelled" || l.Response != nil {
				t.Fatalf("error line %d: %+v", j, l)
			}
		}
	}

	// Batches newest first, one a page, through the auto-pager; a page of
	// two says more follow, and its next page is the last.
	var seen []string
	batches := serve.Batches.ListAutoPaging(ctx, openai.BatchListParams{Limit: openai.Int(1)})
	for batches.Next() {
		seen = append(seen, batches.Current().ID)
	}
	if err := batches.Err(); err != nil || fmt.Sprint(seen) != fmt.Sprint([]string{ids[2], ids[1], ids[0]}) {
		t.Fatalf("batches, one a page: %v %v; want %v newest first", err, seen, ids)
	}
	page, err := serve.Batches.List(ctx, openai.BatchListParams{Limit: openai.Int(2)})
	if err != nil || len(page.Data) != 2 || !page.HasMore {
		t.Fatalf("page of two: %v %s", err, page.RawJSON())
	}
	if page, err = page.GetNextPage(); err != nil || page == nil || len(page.Data) != 1 || page.HasMore || page.Data[0].ID != ids[0] {
		t.Fatalf("next page: %v %+v", err, page)
	}

	// The cancelled batch's lifecycle event carries its API ids.
	cons, err := e.bus.JS.OrderedConsumer(ctx, pipeline.StreamEvents, jetstream.OrderedConsumerConfig{FilterSubjects: []string{"tandem.events.batch.cancelled"}})
	if err != nil {
		t.Fatal(err)
	}
	msg, err := cons.Next(jetstream.FetchMaxWait(10 * time.Second))
	if err != nil {
		t.Fatalf("no batch.cancelled event: %v", err)
	}
	var ev batch.Event
	var data batch.Batch
	if err := json.Unmarshal(msg.Data(), &ev); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(ev.Data, &data); err != nil || data.ID != cancelled.ID || data.InputFileID != f.ID ||
		data.OutputFileID != cancelled.OutputFileID || data.ErrorFileID != cancelled.ErrorFileID {
		t.Fatalf("event data %s: %v", ev.Data, err)
	}
}

// TestBatchRefusedWhenWorkersUseAnotherStore: the only running worker has
// another data directory, so it could not read what the producer writes.
// `producer batch create` and POST /v1/batches (through the official
// client) refuse the batch before creating anything, naming the cause and
// the fix, without a server path.
func TestBatchRefusedWhenWorkersUseAnotherStore(t *testing.T) {
	e := newBatchEnv(t)
	producerDir, workerDir := e.cfg.DataDir, t.TempDir()
	e.cfg.DataDir = workerDir
	e.startWorker(t)
	e.cfg.DataDir = producerDir
	api := e.startAPI(t)
	c := filesClient(api)
	input := `{"custom_id":"a","method":"POST","url":"/v1/completions","body":{"model":"builtin:tiny","prompt":"Hello","max_tokens":3}}` + "\n"
	wants := []string{"no running worker shares this producer's artifact store", "the workers use local elsewhere", "TANDEM_ARTIFACT_STORE=nats", "the same TANDEM_DATA_DIR"}

	_, _, err := runProducer(t, "batch", "create", e.write(t, "in.jsonl", input), "--model", "builtin:tiny")
	for _, want := range wants {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("producer batch create: %v; want an error saying %q", err, want)
		}
	}

	f, err := upload(t, c, "in.jsonl", input)
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Batches.New(context.Background(), openai.BatchNewParams{
		InputFileID: f.ID, Endpoint: openai.BatchNewParamsEndpointV1Completions, CompletionWindow: openai.BatchNewParamsCompletionWindow24h,
	})
	ae := clientError(t, err)
	if ae.StatusCode != http.StatusServiceUnavailable || ae.Code != "artifact_store_not_shared" {
		t.Fatalf("POST /v1/batches: %d %s; want 503 artifact_store_not_shared", ae.StatusCode, ae.RawJSON())
	}
	for _, want := range wants {
		if !strings.Contains(ae.Message, want) {
			t.Errorf("message %q lacks %q", ae.Message, want)
		}
	}
	for _, dir := range []string{producerDir, workerDir} {
		if strings.Contains(ae.Message, dir) {
			t.Errorf("message %q names the server path %s", ae.Message, dir)
		}
	}
	if n, err := e.rdb.ZCard(context.Background(), pipeline.BatchKeyPrefix+"index").Result(); err != nil || n != 0 {
		t.Fatalf("batches after the refusals: %d, %v", n, err)
	}
}
