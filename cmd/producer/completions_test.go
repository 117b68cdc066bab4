package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/redis/go-redis/v9"

	"github.com/tandem-ai/tandem/generation"
	"github.com/tandem-ai/tandem/internal/workerproc"
	"github.com/tandem-ai/tandem/jobs"
	"github.com/tandem-ai/tandem/loop"
	"github.com/tandem-ai/tandem/model"
	"github.com/tandem-ai/tandem/pipeline"
	"github.com/tandem-ai/tandem/tokenstream"
)

// tapTokens records every token-stream message on the embedded server,
// per subject, as the worker published them.
func tapTokens(t *testing.T, e *genEnv) func(id string) []tokenstream.Message {
	t.Helper()
	nc := e.connect(t, pipeline.RoleProducer).NC
	var mu sync.Mutex
	got := map[string][][]byte{}
	if _, err := nc.Subscribe(pipeline.SubjectGenTokensAll, func(m *nats.Msg) {
		mu.Lock()
		got[m.Subject] = append(got[m.Subject], m.Data)
		mu.Unlock()
	}); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	// read returns the messages of id once its last one (done or error)
	// is in: the tap's connection may get it after the producer's did.
	return func(id string) []tokenstream.Message {
		deadline := time.Now().Add(10 * time.Second)
		for {
			mu.Lock()
			var out []tokenstream.Message
			// The tap has no stream key (the producer drew it): it checks
			// the order only; the producer checked the seals.
			for i, raw := range got[pipeline.GenTokensSubject(id)] {
				var m tokenstream.Message
				if err := json.Unmarshal(raw, &m); err != nil || m.Seq != i {
					t.Fatalf("token stream of %s: message %d is %s (%v)", id, i, raw, err)
				}
				out = append(out, m)
			}
			mu.Unlock()
			if n := len(out); n > 0 && (out[n-1].Type == tokenstream.TypeDone || out[n-1].Type == tokenstream.TypeError) || time.Now().After(deadline) {
				return out
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
}

func TestCompletionStreamsTokensInOrderAndRecordsThem(t *testing.T) {
	e := newGenEnv(t, "")
	e.startWorker(t)
	tap := tapTokens(t, e)
	const body = `{"model":"builtin:tiny","prompt":"The loop","max_tokens":24,"temperature":0.9,"seed":7,"user":"u1","template":"tpl-a","topic":"cats","stream":true}`
	got := e.stream(t, context.Background(), body, nil)
	if got.err != nil {
		t.Fatal(got.err)
	}
	last := got.last
	if last.Usage == nil || last.Usage.CompletionTokens != len(got.texts) || last.Timing == nil || last.Timing.ModelFirstTokenMS <= 0 {
		t.Fatalf("last chunk %+v after %d token chunks", last, len(got.texts))
	}
	if err := pipeline.ValidateID(got.id); err != nil || !strings.HasPrefix(got.id, "cmpl-") {
		t.Fatalf("completion id %q: %v", got.id, err)
	}

	// The worker published start, one message per token in sequence, done;
	// the client got the same texts in the same order, and the done text is
	// their concatenation.
	msgs := tap(got.id)
	if len(msgs) != len(got.texts)+2 || msgs[0].Type != tokenstream.TypeStart || msgs[len(msgs)-1].Type != tokenstream.TypeDone {
		t.Fatalf("%d messages on the subject for %d chunks: first %+v last %+v", len(msgs), len(got.texts), msgs[0], msgs[len(msgs)-1])
	}
	for i, text := range got.texts {
		if m := msgs[i+1]; m.Type != tokenstream.TypeToken || m.Text != text {
			t.Fatalf("chunk %d = %q, message %d = %+v", i, text, i+1, m)
		}
	}
	done := msgs[len(msgs)-1]
	if done.Text != got.text() || done.FinishReason != *last.Choices[0].FinishReason {
		t.Fatalf("done text %q (%s), streamed %q (%s)", done.Text, done.FinishReason, got.text(), *last.Choices[0].FinishReason)
	}

	// The loop record has the same text, under the completion id.
	rec, err := loop.NewStore(e.rdb, loop.StoreOptions{}).Get(context.Background(), got.id)
	if err != nil {
		t.Fatal(err)
	}
	if rec.Text != got.text() || rec.Source != jobs.SourceInteractive || rec.User != "u1" || rec.Template != "tpl-a" || rec.Topic != "cats" ||
		rec.Model != "builtin:tiny" || rec.Prompt != "The loop" || rec.Tokens != len(got.texts) || rec.FinishReason != done.FinishReason {
		t.Fatalf("record %+v, streamed %q", rec, got.text())
	}

	// The same request without streaming gives the same text (same seed),
	// and so does the model called in-process.
	var resp generation.CompletionResponse
	if code, msg := e.postJSON(t, "/v1/completions", strings.Replace(body, `"stream":true`, `"stream":false`, 1), &resp); code != http.StatusOK {
		t.Fatalf("non-streaming: %d %s", code, msg)
	}
	if resp.Object != "text_completion" || len(resp.Choices) != 1 || resp.Choices[0].Text != got.text() || resp.Usage.CompletionTokens != len(got.texts) || resp.ID == got.id {
		t.Fatalf("non-streaming answer %+v, streamed %q", resp, got.text())
	}
	if want := directCompletion(t, "The loop", 24, 0.9, 7); want != got.text() {
		t.Fatalf("in-process model gives %q, the pipeline %q", want, got.text())
	}

	// A failure on the worker reaches the client: as an error object, or
	// as an error event in the stream.
	const bad = `{"model":"builtin:huge","prompt":"x"}`
	if code, msg := e.postJSON(t, "/v1/completions", bad, nil); code != http.StatusNotFound || !strings.Contains(msg, tokenstream.CodeModel) {
		t.Fatalf("unknown model: %d %s, want 404 as OpenAI answers", code, msg)
	}
	if s := e.stream(t, context.Background(), strings.Replace(bad, `}`, `,"stream":true}`, 1), nil); s.err == nil || !strings.Contains(s.err.Error(), tokenstream.CodeModel) {
		t.Fatalf("unknown model, streamed: %v", s.err)
	}
}

// directCompletion runs the builtin tiny model in-process.
func directCompletion(t *testing.T, prompt string, maxTokens int, temperature float32, seed int64) string {
	t.Helper()
	store := generation.NewModelStore(jobs.OpenEnvDataRoot)
	lm, err := store.Get("builtin:tiny")
	if err != nil {
		t.Fatal(err)
	}
	tok, err := store.Tokenizer()
	if err != nil {
		t.Fatal(err)
	}
	p := model.SamplingParams{MaxTokens: maxTokens, Temperature: temperature, TopP: 1, RepetitionPenalty: 1, N: 1, Seed: &seed}
	out, err := model.Generate(context.Background(), lm.Model, tok, []model.Request{{Prompt: tok.Encode(prompt), Params: p}}, model.GenerateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// The pipeline's texts are valid UTF-8, stray bytes replaced as
	// encoding/json replaces them.
	b, _ := json.Marshal(out[0][0].Text)
	var text string
	if err := json.Unmarshal(b, &text); err != nil {
		t.Fatal(err)
	}
	return text
}

// longContextModel writes a random model whose 1024-position context lets
// a generation run long enough to be cut short.
func longContextModel(t *testing.T) string {
	t.Helper()
	m, err := model.New(model.Config{NLayer: 2, NHead: 4, NEmbd: 128, NPositions: 1024, VocabSize: 50257, LayerNormEpsilon: 1e-5}, 3)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "long")
	if err := m.SaveDir(dir); err != nil {
		t.Fatal(err)
	}
	return dir
}

// repeatingTokenModel writes a model that, sampled greedily, emits tok at
// every step: a zero final LayerNorm gain with a bias along the first axis
// makes every position's output the same vector, and tok's tied embedding
// alone points far along that axis.
func repeatingTokenModel(t *testing.T, tok int32) string {
	t.Helper()
	m, err := model.New(model.Config{NLayer: 1, NHead: 2, NEmbd: 32, NPositions: 1024, VocabSize: 50257, LayerNormEpsilon: 1e-5}, 5)
	if err != nil {
		t.Fatal(err)
	}
	for _, pt := range m.Config.ParamTensors() {
		p := m.Params[pt.Offset : pt.Offset+pt.Size]
		switch pt.Name {
		case "ln_f.weight":
			clear(p)
		case "ln_f.bias":
			p[0] = 1
		case "wte.weight":
			p[int(tok)*m.Config.NEmbd] = 100
		}
	}
	dir := filepath.Join(t.TempDir(), "repeat")
	if err := m.SaveDir(dir); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestCompletionLargerThanOneMessageArrivesWhole generates a reply whose
// text alone exceeds pipeline.MaxEventBytes: 600 tokens of GPT-2 token
// 35496, 128 bytes each. The done message cannot repeat it, so the client
// gets the text the tokens add up to, at once rather than after the
// generation timeout.
func TestCompletionLargerThanOneMessageArrivesWhole(t *testing.T) {
	const tok, n = 35496, 600
	e := newGenEnv(t, "")
	e.startWorker(t)
	tap := tapTokens(t, e)
	tk, err := model.NewTokenizer()
	if err != nil {
		t.Fatal(err)
	}
	want := strings.Repeat(tk.Decode([]int32{tok}), n)
	if len(want) <= pipeline.MaxEventBytes {
		t.Fatalf("the reply is %d bytes; the test needs more than MaxEventBytes (%d)", len(want), pipeline.MaxEventBytes)
	}
	body := fmt.Sprintf(`{"model":%q,"prompt":"Say it","max_tokens":%d,"temperature":0}`, repeatingTokenModel(t, tok), n)
	// A guard against the hang this test is about: a lost done message
	// used to leave the request waiting for the generation timeout (5 min).
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	resp := e.post(t, ctx, "/v1/completions", body)
	var got generation.CompletionResponse
	err = json.NewDecoder(resp.Body).Decode(&got)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("non-streaming: %d %v", resp.StatusCode, err)
	}
	if got.Choices[0].Text != want || got.Usage.CompletionTokens != n || got.Choices[0].FinishReason != "length" {
		t.Fatalf("non-streaming: %d bytes, %d tokens, finish %q; want %d bytes, %d tokens, length",
			len(got.Choices[0].Text), got.Usage.CompletionTokens, got.Choices[0].FinishReason, len(want), n)
	}
	// The done message stayed within the limit by leaving the text out.
	msgs := tap(got.ID)
	if done := msgs[len(msgs)-1]; done.Type != tokenstream.TypeDone || done.Text != "" || done.Usage.CompletionTokens != n {
		t.Fatalf("last message %s with %d bytes of text, want done without text", done.Type, len(done.Text))
	}

	s := e.stream(t, ctx, strings.Replace(body, `}`, `,"stream":true}`, 1), nil)
	if s.err != nil || s.text() != want || s.last.Usage == nil || s.last.Usage.CompletionTokens != n {
		t.Fatalf("streamed: %v, %d bytes", s.err, len(s.text()))
	}
	// The record holds the text, cut to its documented bound.
	if rec := waitRecord(t, e, s.id); rec.Text != want[:loop.MaxRecordTextBytes] {
		t.Fatalf("record: %d bytes, want the first %d", len(rec.Text), loop.MaxRecordTextBytes)
	}
}

func TestDroppedClientCancelsGeneration(t *testing.T) {
	e := newGenEnv(t, "")
	e.startWorker(t)
	dir := longContextModel(t)
	body := fmt.Sprintf(`{"model":%q,"prompt":"Go on and on","max_tokens":%d,"stream":true}`, dir, jobs.MaxInteractiveTokens)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stop := errors.New("client leaves")
	got := e.stream(t, ctx, body, func() error {
		cancel() // drop the connection after the first token
		return stop
	})
	if got.id == "" || !errors.Is(got.err, stop) && !errors.Is(got.err, context.Canceled) {
		t.Fatalf("stream: id %q err %v", got.id, got.err)
	}
	// The worker stops, records the generation as cancelled, and the job
	// ends without a retry.
	rec := waitRecord(t, e, got.id)
	if rec.FinishReason != jobs.FinishCancelled || rec.Tokens >= jobs.MaxInteractiveTokens-10 || rec.Tokens < 1 {
		t.Fatalf("record after the client left: finish %q after %d tokens, want cancelled well before %d", rec.FinishReason, rec.Tokens, jobs.MaxInteractiveTokens)
	}
	t.Logf("cancelled after %d of up to %d tokens", rec.Tokens, jobs.MaxInteractiveTokens)
	waitQueueIdle(t, e)
}

// TestClientLeavingAroundTheStartNeverLeavesWorkRunning drops clients at
// moments around the pick-up, where the job may be queued, just dequeued
// (its start not yet seen), or streaming: each time it must either never
// run or stop early, never run to its end. It goes on until it has seen a
// dropped request that a worker started and one that reached the producer
// but never ran (bounded), so it cannot pass having checked only one side.
func TestClientLeavingAroundTheStartNeverLeavesWorkRunning(t *testing.T) {
	e := newGenEnv(t, "")
	e.startWorker(t)
	dir := longContextModel(t)
	body := fmt.Sprintf(`{"model":%q,"prompt":"Go on","max_tokens":%d,"stream":true}`, dir, jobs.MaxInteractiveTokens)
	e.stream(t, context.Background(), strings.Replace(body, fmt.Sprint(jobs.MaxInteractiveTokens), "1", 1), nil) // load the model
	// The producer's routes again, counting the requests that reach them:
	// a client that leaves before its request is sent tells nothing.
	var reached atomic.Int64
	mux := http.NewServeMux()
	(&apiServer{client: e.api.client, logger: e.logger, completions: e.api}).completionsRoutes(mux)
	guarded := openGuard(t, mux)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reached.Add(1)
		guarded.ServeHTTP(w, r)
	}))
	defer srv.Close()
	store := loop.NewStore(e.rdb, loop.StoreOptions{})
	records := func() []loop.Generation {
		t.Helper()
		recs, err := store.Recent(context.Background(), loop.DefaultRecentMax)
		if err != nil {
			t.Fatal(err)
		}
		return recs
	}
	// At least minDrops that reach the producer, and on until both
	// outcomes were seen, within maxDrops tries.
	const minDrops, maxDrops = 12, 400
	ran, never := 0, 0
	for i := 0; i < maxDrops && (ran+never < minDrops || ran == 0 || never == 0); i++ {
		before, seen := reached.Load(), len(records())
		// 0 to 10 ms in quarter steps, round and round.
		ctx, cancel := context.WithTimeout(context.Background(), time.Duration(i%41)*time.Millisecond/4)
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL+"/v1/completions", strings.NewReader(body))
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close() // headers came: the stream had started; closing leaves it
		}
		cancel()
		waitQueueIdle(t, e)
		if reached.Load() == before {
			continue
		}
		recs := records()
		switch len(recs) - seen {
		case 0:
			never++
		case 1:
			ran++
			if r := recs[0]; r.FinishReason != jobs.FinishCancelled {
				t.Errorf("generation %s ran to %q after %d tokens with its client gone", r.ID, r.FinishReason, r.Tokens)
			}
		default:
			t.Fatalf("one dropped request left %d records", len(recs)-seen)
		}
	}
	if ran == 0 || never == 0 {
		t.Fatalf("%d dropped requests started on a worker and %d never ran; the test needs both to have checked anything", ran, never)
	}
	t.Logf("%d dropped requests had started and stopped early; %d never ran", ran, never)
}

// waitRecord waits for the loop record of id.
func waitRecord(t *testing.T, e *genEnv, id string) loop.Generation {
	t.Helper()
	store := loop.NewStore(e.rdb, loop.StoreOptions{})
	deadline := time.Now().Add(30 * time.Second)
	for {
		rec, err := store.Get(context.Background(), id)
		if err == nil {
			return rec
		}
		if !errors.Is(err, loop.ErrNotFound) || time.Now().After(deadline) {
			t.Fatalf("record %s: %v", id, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitQueueIdle waits until the interactive queue holds no task in any
// state: nothing pending, running, retrying or archived.
func waitQueueIdle(t *testing.T, e *genEnv) {
	t.Helper()
	insp := e.api.client.Inspector()
	deadline := time.Now().Add(30 * time.Second)
	for {
		q, err := insp.GetQueueInfo(pipeline.QueueInteractive)
		if err != nil {
			t.Fatal(err)
		}
		if q.Pending+q.Active+q.Retry+q.Archived+q.Scheduled == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("interactive queue not idle: %+v", q)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestClientLeavingBeforeAnyWorkerDeletesTheJob(t *testing.T) {
	t.Setenv(EnvInteractiveStartTimeout, "500ms")
	e := newGenEnv(t, "") // no worker: the job stays queued
	e.listIdleWorker(t)
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, e.srv.URL+"/v1/completions", strings.NewReader(`{"model":"builtin:tiny","prompt":"hi","stream":true}`))
	if resp, err := http.DefaultClient.Do(req); err == nil {
		resp.Body.Close()
		t.Fatalf("answered %d with no worker before the client left", resp.StatusCode)
	}
	waitQueueIdle(t, e)

	// A client that stays gets a 503 once nobody picked the job up.
	code, msg := e.postJSON(t, "/v1/completions", `{"model":"builtin:tiny","prompt":"hi"}`, nil)
	if code != http.StatusServiceUnavailable || !strings.Contains(msg, "interactive") {
		t.Fatalf("no worker: %d %s", code, msg)
	}
	waitQueueIdle(t, e)
}

func TestCompletionRefusesBadBodies(t *testing.T) {
	e := newGenEnv(t, "")
	long := strings.Repeat("x", jobs.MaxInteractivePromptBytes+1)
	for body, field := range map[string]string{
		`{"model":"builtin:tiny"}`: `prompt`,
		`{"prompt":"x"}`:           `model`,
		`{"model":"builtin:tiny","prompt":"x","max_tokens":5000}`:                                                 `max_tokens`,
		`{"model":"builtin:tiny","prompt":"x","max_tokens":0}`:                                                    `max_tokens`,
		`{"model":"builtin:tiny","prompt":"x","temperature":9}`:                                                   `temperature`,
		`{"model":"builtin:tiny","prompt":"x","top_p":1.5}`:                                                       `top_p`,
		`{"model":"builtin:tiny","prompt":"x","n":9}`:                                                             `n:`,
		`{"model":"builtin:tiny","prompt":"x","n":0}`:                                                             `n:`,
		`{"model":"builtin:tiny","prompt":"x","logprobs":6}`:                                                      `logprobs`,
		`{"model":"builtin:tiny","prompt":"x","n":2,"best_of":3}`:                                                 `best_of`,
		`{"model":"builtin:tiny","prompt":"x","stop":["a","b","c","d","e"]}`:                                      `stop`,
		`{"model":"builtin:tiny","prompt":"x","temprature":1}`:                                                    `temprature`,
		`{"model":"builtin:tiny","prompt":"x","stream":"yes"}`:                                                    `stream`,
		`{"model":"builtin:tiny","prompt":"x","session":"a.b"}`:                                                   `session`,
		`{"model":"builtin:tiny","prompt":"x","user":"a\nb"}`:                                                     `user`,
		`{"model":"builtin:tiny","prompt":"x","template":"` + strings.Repeat("t", loop.MaxRecordIDBytes+1) + `"}`: `template`,
		`{"model":"builtin:tiny","prompt":"` + long + `"}`:                                                        `prompt`,
		`{"model":"builtin:tiny","prompt":"x"} {}`:                                                                `data after the JSON value`,
		`{"model":"builtin:tiny","prompt":"x","echo":true,"logprobs":1}`:                                          `echo`,
		`{"model":"builtin:tiny","prompt":"x","best_of":3}`:                                                       `best_of`,
		`{"model":"builtin:tiny","prompt":"x","logit_bias":{"50256":-100}}`:                                       `logit_bias`,
		`{"model":"builtin:tiny","prompt":"x","stream_options":"usage"}`:                                          `stream_options`,
		`{"model":"builtin:tiny","prompt":["a",""]}`:                                                              `prompt[1]: empty string`,
		`{"model":"builtin:tiny","prompt":["a",1]}`:                                                               `prompt[1]: want a string`,
		`{"model":"builtin:tiny","prompt":[[464],[3290,-1]]}`:                                                     `prompt[1][1]: token id -1`,
		`{"model":"builtin:tiny","prompt":["a","b","c"],"n":8}`:                                                   `prompt: 3 prompts with n = 8 make 24 choices, at most 16`,
		`{"model":"builtin:tiny","prompt":[` + strings.Repeat(`"a",`, 16) + `"a"]}`:                               `prompt: 17 prompts, at most 16`,
		`{"model":"builtin:tiny","prompt":"x","suffix":"y"}`:                                                      `suffix`,
		`{"model":"builtin:tiny","prompt":[]}`:                                                                    `prompt`,
	} {
		code, msg := e.postJSON(t, "/v1/completions", body, nil)
		if code != http.StatusBadRequest || !strings.Contains(msg, field) {
			t.Errorf("POST %.80s = %d %s, want 400 naming %s", body, code, msg, field)
		}
	}
	code, msg := e.postJSON(t, "/v1/completions", `{"model":"builtin:tiny","prompt":"x","session":"sess-nope"}`, nil)
	if code != http.StatusNotFound || !strings.Contains(msg, "session") {
		t.Errorf("unknown session: %d %s", code, msg)
	}
	for body, field := range map[string]string{
		`{"instructions":"length: huge"}`: `length`,
		`{"instructions":"mood: calm"}`:   `mood`,
		`{"id":"a b"}`:                    `id`,
		`{"user":"a\nb"}`:                 `user`,
		`{"turns":[]}`:                    `turns`,
	} {
		code, msg := e.postJSON(t, "/v1/sessions", body, nil)
		if code != http.StatusBadRequest || !strings.Contains(msg, field) {
			t.Errorf("POST /v1/sessions %s = %d %s, want 400 naming %s", body, code, msg, field)
		}
	}
	for path, want := range map[string]int{"/v1/sessions/sess-nope": http.StatusNotFound, "/v1/sessions/a%20b": http.StatusBadRequest} {
		resp, err := http.Get(e.srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("GET %s = %d, want %d", path, resp.StatusCode, want)
		}
	}
	if queued, _ := e.api.client.Inspector().GetQueueInfo(pipeline.QueueInteractive); queued != nil && queued.Size > 0 {
		t.Fatalf("refused bodies enqueued %d jobs", queued.Size)
	}
}

func TestSessionCarriesBoundedHistory(t *testing.T) {
	e := newGenEnv(t, "")
	e.startWorker(t)
	var sess sessionView
	if code, msg := e.postJSON(t, "/v1/sessions", `{"user":"u9","instructions":"length: 3; tone: formal; creativity: low"}`, &sess); code != http.StatusCreated {
		t.Fatalf("create session: %d %s", code, msg)
	}
	if sess.Params.MaxTokens != 3 || sess.Params.Prefix != "Tone: formal.\n" || *sess.Params.Temperature != 0.3 {
		t.Fatalf("session params %+v", sess.Params)
	}
	// More turns than a session keeps, with prompts long enough that the
	// tiny model's 256-token context cannot hold them all either.
	const turns = loop.DefaultSessionTurns + 2
	var ids []string
	for i := 1; i <= turns; i++ {
		var resp generation.CompletionResponse
		body := fmt.Sprintf(`{"model":"builtin:tiny","prompt":"turn %02d: say something about the weather in the hills today","session":%q}`, i, sess.ID)
		if code, msg := e.postJSON(t, "/v1/completions", body, &resp); code != http.StatusOK {
			t.Fatalf("turn %d: %d %s", i, code, msg)
		}
		if resp.Usage.CompletionTokens > 3 {
			t.Fatalf("turn %d: %d tokens; the session's length is 3", i, resp.Usage.CompletionTokens)
		}
		ids = append(ids, resp.ID)
	}
	resp, err := http.Get(e.srv.URL + "/v1/sessions/" + sess.ID)
	if err != nil {
		t.Fatal(err)
	}
	var got sessionView
	err = json.NewDecoder(resp.Body).Decode(&got)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Turns) != loop.DefaultSessionTurns {
		t.Fatalf("session keeps %d turns, want %d", len(got.Turns), loop.DefaultSessionTurns)
	}
	for i, tr := range got.Turns {
		if want := ids[turns-loop.DefaultSessionTurns+i]; tr.GenerationID != want {
			t.Fatalf("turn %d is %s, want %s (oldest dropped first); sent %v, kept %+v", i, tr.GenerationID, want, ids, got.Turns)
		}
	}
	// The last prompt was the transcript: the instructions, the newest
	// turns that fit the context, the new prompt; the oldest stored turns
	// were left out.
	rec := waitRecord(t, e, ids[turns-1])
	if rec.Session != sess.ID || rec.User != "u9" || !strings.HasPrefix(rec.Prompt, "Tone: formal.\nUser: turn") ||
		!strings.HasSuffix(rec.Prompt, fmt.Sprintf("User: turn %02d: say something about the weather in the hills today\nAssistant:", turns)) {
		t.Fatalf("last prompt %q", rec.Prompt)
	}
	prev := got.Turns[len(got.Turns)-2]
	if !strings.Contains(rec.Prompt, prev.Prompt+"\nAssistant:"+prev.Reply+"\n") {
		t.Fatalf("last prompt lacks the previous turn %+v:\n%s", prev, rec.Prompt)
	}
	if oldest := got.Turns[0].Prompt; strings.Contains(rec.Prompt, oldest) {
		t.Fatalf("last prompt kept the oldest turn %q although the context cannot hold every turn", oldest)
	}
}

// chatToken is the API token of the chat tests' server.
const chatToken = "chat-secret-0123456789"

// chatServer serves e as `producer serve` does (serveMux), with chatToken
// allowed to submit and read, and to act for any user (the chats name
// theirs with --user); the returned recs API holds the bus the feedback
// route publishes on.
func chatServer(t *testing.T, e *genEnv) (*httptest.Server, *recsAPI) {
	t.Helper()
	return serveTestServer(t, e, chatToken+" chatter submit,read,impersonate\n")
}

// runChat runs `producer chat --url srv` with stdin piped in.
func runChat(t *testing.T, srv *httptest.Server, stdin string, args ...string) (string, string, error) {
	t.Helper()
	old := chatStdin
	chatStdin = strings.NewReader(stdin)
	defer func() { chatStdin = old }()
	return runProducer(t, append([]string{"chat", "--url", srv.URL}, args...)...)
}

func TestChatStreamsRepliesFromPipedStdin(t *testing.T) {
	e := newGenEnv(t, "")
	e.startWorker(t)
	srv, _ := chatServer(t, e)
	chat := func(stdin string, args ...string) (string, string, error) { return runChat(t, srv, stdin, args...) }
	if _, _, err := chat("hello\n"); err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("chat without a token: %v, want a 401", err)
	}
	stdout, stderr, err := chat("Hello there\n\n  How are you  \n/quit\nnot sent\n", "--token", chatToken, "--max-tokens", "4", "--instructions", "tone: casual", "--user", "u5")
	if err != nil {
		t.Fatalf("chat: %v\n%s", err, stderr)
	}
	id, ok := strings.CutPrefix(strings.TrimSpace(stderr), "session ")
	if !ok {
		t.Fatalf("stderr %q, want the session id", stderr)
	}
	sess, err := loop.NewSessionStore(e.rdb, loop.SessionOptions{}).Get(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	if len(sess.Turns) != 2 || sess.User != "u5" || sess.Instructions != "tone: casual" {
		t.Fatalf("session %+v: want two turns of u5", sess)
	}
	for i, want := range []string{"Hello there", "How are you"} {
		if sess.Turns[i].Prompt != want {
			t.Fatalf("turn %d: %+v, want the prompt %q", i, sess.Turns[i], want)
		}
	}
	// What the chat printed is what the session kept (replies of this
	// random model can hold newlines, so compare the whole output).
	if want := sess.Turns[0].Reply + "\n" + sess.Turns[1].Reply + "\n"; stdout != want {
		t.Fatalf("stdout %q, session replies %q", stdout, want)
	}
}

// TestCompletionAcceptsOpenAIFieldsAtValuesItHonours sends what OpenAI's
// clients send by default: stream_options, echo false, best_of 1, an empty
// logit_bias and a prompt list of one. They change nothing: the text is
// the plain request's.
func TestCompletionAcceptsOpenAIFieldsAtValuesItHonours(t *testing.T) {
	e := newGenEnv(t, "")
	e.startWorker(t)
	const plain = `{"model":"builtin:tiny","prompt":"The loop","max_tokens":8,"seed":3}`
	var want generation.CompletionResponse
	if code, msg := e.postJSON(t, "/v1/completions", plain, &want); code != http.StatusOK {
		t.Fatalf("plain: %d %s", code, msg)
	}
	const openai = `{"model":"builtin:tiny","prompt":["The loop"],"max_tokens":8,"seed":3,"echo":false,"best_of":1,"logit_bias":{}}`
	var got generation.CompletionResponse
	if code, msg := e.postJSON(t, "/v1/completions", openai, &got); code != http.StatusOK {
		t.Fatalf("OpenAI defaults: %d %s", code, msg)
	}
	if got.Choices[0].Text != want.Choices[0].Text {
		t.Fatalf("OpenAI defaults: text %q; want %q", got.Choices[0].Text, want.Choices[0].Text)
	}
	streamed := strings.Replace(openai, `"logit_bias":{}`, `"logit_bias":null,"stream":true,"stream_options":{"include_usage":true}`, 1)
	s := e.stream(t, context.Background(), streamed, nil)
	if s.err != nil || s.text() != want.Choices[0].Text || s.last.Usage == nil || s.usage == nil || *s.usage != *s.last.Usage {
		t.Fatalf("streamed with stream_options: %v, %q, usage %v; want %q with usage", s.err, s.text(), s.last.Usage, want.Choices[0].Text)
	}
}

// TestCompletionTurnsAMalformedWorkerMessageIntoAnError runs a worker that
// sends a done message without usage: the client gets a stream error (502,
// or an error event), never a panic.
func TestCompletionTurnsAMalformedWorkerMessageIntoAnError(t *testing.T) {
	e := newGenEnv(t, "")
	bus := e.connect(t, pipeline.RoleWorker)
	reg := pipeline.NewRegistry()
	pipeline.Register[jobs.InteractiveArgs](reg, pipeline.WorkFunc[jobs.InteractiveArgs](func(_ context.Context, job *pipeline.Job[jobs.InteractiveArgs]) error {
		subject := pipeline.GenTokensSubject(job.Args.ID)
		for _, raw := range []string{`{"seq":0,"type":"start"}`, `{"seq":1,"type":"token","text":"x","token":87}`, `{"seq":2,"type":"done","finish_reason":"stop"}`} {
			// Sealed with the job's key: the message is authentic, only
			// malformed.
			msg := &nats.Msg{Subject: subject, Data: []byte(raw)}
			if err := pipeline.Seal(job.Args.StreamKey, msg); err != nil {
				return err
			}
			if err := bus.NC.PublishMsg(msg); err != nil {
				return err
			}
		}
		return bus.NC.Flush()
	}), pipeline.KindOptions{})
	e.serve(t, reg)
	code, msg := e.postJSON(t, "/v1/completions", `{"model":"builtin:tiny","prompt":"hi"}`, nil)
	if code != http.StatusBadGateway || !strings.Contains(msg, "usage") {
		t.Fatalf("done without usage: %d %s, want 502 naming the missing usage", code, msg)
	}
	if s := e.stream(t, context.Background(), `{"model":"builtin:tiny","prompt":"hi","stream":true}`, nil); s.err == nil || !strings.Contains(s.err.Error(), "usage") {
		t.Fatalf("streamed: %v, want a stream error naming the missing usage", s.err)
	}
}

// TestCompletionWithoutRedisIsUnavailable reads a session from a Redis that
// is not there: 503 with the code "unavailable", not an empty one.
func TestCompletionWithoutRedisIsUnavailable(t *testing.T) {
	e := newGenEnv(t, "")
	goneAddr := workerproc.FreeAddr(t)
	gone := redis.NewClient(&redis.Options{Addr: goneAddr, MaxRetries: -1, DialTimeout: time.Second})
	defer gone.Close()
	api := *e.api
	api.sessions = loop.NewSessionStore(gone, loop.SessionOptions{})
	mux := http.NewServeMux()
	(&apiServer{client: e.api.client, logger: e.logger, completions: &api}).completionsRoutes(mux)
	srv := httptest.NewServer(openGuard(t, mux))
	defer srv.Close()
	resp, err := http.Post(srv.URL+"/v1/completions", "application/json", strings.NewReader(`{"model":"builtin:tiny","prompt":"hi","session":"sess-1"}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body apiError
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusServiceUnavailable || body.Error.Code != "unavailable" {
		t.Fatalf("Redis down: %d %+v, want 503 unavailable", resp.StatusCode, body.Error)
	}
	// The cause (dial tcp <address>) is the log's: the client gets no
	// server address (issue 22).
	if _, port, _ := net.SplitHostPort(goneAddr); strings.Contains(body.Error.Message, port) || body.Error.Message != msgUnavailable {
		t.Fatalf("Redis down: message %q; want %q, naming no address", body.Error.Message, msgUnavailable)
	}
}
