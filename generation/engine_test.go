package generation

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"

	"github.com/tandem-ai/tandem/model"
)

// engineTestModel is small, but its widths take the CPU's batch-invariant
// decode kernels, and it keeps GPT-2's vocabulary so the real tokenizer
// decodes what it emits. Weights are scaled up so greedy choices are sharp.
func engineTestModel(t *testing.T) (*model.Model, *model.Tokenizer) {
	t.Helper()
	m, err := model.New(model.Config{NLayer: 2, NHead: 2, NEmbd: 64, NPositions: 96, VocabSize: 50257, LayerNormEpsilon: 1e-5}, 3)
	if err != nil {
		t.Fatal(err)
	}
	for i := range m.Params {
		m.Params[i] *= 4
	}
	tok, err := model.NewTokenizer()
	if err != nil {
		t.Fatal(err)
	}
	return m, tok
}

// testCap is the slot cap the tests run at: the CPU default's ceiling for
// batch invariance.
const testCap = 16

func newTestEngine(t *testing.T, m *model.Model, tok *model.Tokenizer, cfg EngineConfig) *Engine {
	t.Helper()
	if cfg.PrefillChunk == 0 {
		cfg.PrefillChunk = 8 // several chunks per prompt
	}
	if cfg.PrefillTokens == 0 {
		cfg.PrefillTokens = 16
	}
	e := NewEngine(m, tok, cfg)
	t.Cleanup(e.Close)
	return e
}

// testRequests are prompts of 1 to 30 tokens, half greedy and half
// sampled at a fixed seed, with n of 1 or 2.
func testRequests(count int, seed uint64) []model.Request {
	rng := rand.New(rand.NewPCG(seed, 1))
	reqs := make([]model.Request, count)
	for i := range reqs {
		p := make([]int32, 1+rng.IntN(30))
		for j := range p {
			p[j] = int32(rng.IntN(50000))
		}
		// Logprobs make the comparison bit-exact: a rounding difference
		// anywhere in the logits shows in them, where tokens rarely move.
		params := model.SamplingParams{MaxTokens: 4 + rng.IntN(12), IgnoreEOS: true, Logprobs: 1}
		if i%2 == 1 {
			s := int64(100 + i)
			params.Temperature, params.TopP, params.Seed = 0.9, 0.95, &s
			params.N = 1 + i%4/2
		}
		reqs[i] = model.Request{Prompt: p, Params: params}
	}
	return reqs
}

func requireInvariant(t *testing.T) {
	t.Helper()
	if !model.DecodeBatchInvariant() {
		t.Skip("this CPU lacks the batch-invariant decode kernels (AVX2+FMA)")
	}
}

// alone completes every request by itself, one after another.
func alone(t *testing.T, e *Engine, reqs []model.Request) [][]model.Completion {
	t.Helper()
	out := make([][]model.Completion, len(reqs))
	for i, r := range reqs {
		c, err := e.Generate(context.Background(), []model.Request{r}, Options{Class: Batch})
		if err != nil {
			t.Fatalf("request %d alone: %v", i, err)
		}
		out[i] = c[0]
	}
	return out
}

// together completes every request at once, each from its own goroutine,
// interactive and batch classes mixed.
func together(t *testing.T, e *Engine, reqs []model.Request) [][]model.Completion {
	t.Helper()
	out := make([][]model.Completion, len(reqs))
	errs := make([]error, len(reqs))
	var wg sync.WaitGroup
	for i, r := range reqs {
		wg.Go(func() {
			class := Batch
			if i%3 == 0 {
				class = Interactive
			}
			c, err := e.Generate(context.Background(), []model.Request{r}, Options{Class: class, Group: fmt.Sprint("g", i%2)})
			if err == nil {
				out[i] = c[0]
			}
			errs[i] = err
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("request %d together: %v", i, err)
		}
	}
	return out
}

func sameCompletions(t *testing.T, what string, want, got [][]model.Completion) {
	t.Helper()
	for i := range want {
		for c := range want[i] {
			w, g := want[i][c], got[i][c]
			if !slices.Equal(w.Tokens, g.Tokens) || w.Text != g.Text || w.FinishReason != g.FinishReason {
				t.Fatalf("%s: request %d choice %d: tokens %v (%q, %s), want %v (%q, %s) as alone",
					what, i, c, g.Tokens, g.Text, g.FinishReason, w.Tokens, w.Text, w.FinishReason)
			}
			for k := range w.Logprobs {
				if w.Logprobs[k].Logprob != g.Logprobs[k].Logprob {
					t.Fatalf("%s: request %d choice %d token %d: logprob %v, want %v as alone (bits differ)",
						what, i, c, k, g.Logprobs[k].Logprob, w.Logprobs[k].Logprob)
				}
			}
		}
	}
}

// TestEngineSameAloneAndTogether checks batch invariance: every request's
// greedy and seeded-sampled tokens are the same whether it runs alone or
// beside the others, at 1, 2, 8 and the cap's slots.
func TestEngineSameAloneAndTogether(t *testing.T) {
	requireInvariant(t)
	m, tok := engineTestModel(t)
	reqs := testRequests(24, 1)
	want := alone(t, newTestEngine(t, m, tok, EngineConfig{Slots: 2}), reqs)
	// One slot holds one choice: choice 0 of a request alone is choice 0
	// of the same request with more choices.
	reqs1 := slices.Clone(reqs)
	want1 := make([][]model.Completion, len(reqs))
	for i := range reqs1 {
		reqs1[i].Params.N = 1
		want1[i] = want[i][:1]
	}
	sameCompletions(t, "1 slot", want1, together(t, newTestEngine(t, m, tok, EngineConfig{Slots: 1}), reqs1))
	for _, slots := range []int{2, 8, testCap} {
		e := newTestEngine(t, m, tok, EngineConfig{Slots: slots})
		sameCompletions(t, fmt.Sprintf("%d slots", slots), want, together(t, e, reqs))
		// One call holding every request: the choices of a request share
		// its prefill.
		got, err := e.Generate(context.Background(), reqs, Options{Class: Batch})
		if err != nil {
			t.Fatal(err)
		}
		sameCompletions(t, fmt.Sprintf("%d slots, one call", slots), want, got)
	}
	// Chunks over 16 tokens take BLAS, whose rounding may depend on the
	// row count (it does with OPENBLAS_CORETYPE=Haswell): a chunk's call
	// holds that chunk alone, so its rows are the same whatever else runs.
	cfg := EngineConfig{Slots: testCap, PrefillChunk: 24, PrefillTokens: 48}
	want = alone(t, newTestEngine(t, m, tok, cfg), reqs)
	sameCompletions(t, "chunks of 24", want, together(t, newTestEngine(t, m, tok, cfg), reqs))
}

// TestEngineStreamOrder checks that each choice's tokens reach OnToken in
// order, on the caller's goroutine, and that its texts add up to its
// completion.
func TestEngineStreamOrder(t *testing.T) {
	m, tok := engineTestModel(t)
	e := newTestEngine(t, m, tok, EngineConfig{Slots: 4})
	seed := int64(7)
	reqs := []model.Request{
		{Prompt: tok.Encode("The engine"), Params: model.SamplingParams{MaxTokens: 20, Temperature: 1, Seed: &seed, N: 3}},
		{Prompt: tok.Encode("A second prompt, longer than one chunk of eight"), Params: model.SamplingParams{MaxTokens: 9}},
	}
	type key struct{ req, choice int }
	toks := map[key][]int32{}
	texts := map[key]*strings.Builder{}
	// A batch beside it, so the stream shares its steps.
	go e.Generate(context.Background(), testRequests(6, 2), Options{Class: Batch})
	comps, err := e.Generate(context.Background(), reqs, Options{Class: Interactive, OnToken: func(req, choice int, t int32, text string) {
		k := key{req, choice}
		toks[k] = append(toks[k], t)
		if texts[k] == nil {
			texts[k] = &strings.Builder{}
		}
		texts[k].WriteString(text)
	}})
	if err != nil {
		t.Fatal(err)
	}
	for r := range reqs {
		if len(comps[r]) != reqs[r].Params.WithDefaults().N {
			t.Fatalf("request %d: %d choices", r, len(comps[r]))
		}
		for c, comp := range comps[r] {
			k := key{r, c}
			// The streamed tokens are the completion's, plus the
			// end-of-text token when the choice ended on it.
			got := toks[k]
			if len(got) == len(comp.Tokens)+1 && got[len(got)-1] == tok.EOT() {
				got = got[:len(got)-1]
			}
			if !slices.Equal(got, comp.Tokens) {
				t.Errorf("request %d choice %d: streamed %v, completion %v", r, c, toks[k], comp.Tokens)
			}
			if texts[k].String() != comp.Text {
				t.Errorf("request %d choice %d: streamed text %q, completion %q", r, c, texts[k].String(), comp.Text)
			}
		}
	}
	if slices.Equal(comps[0][0].Tokens, comps[0][1].Tokens) && slices.Equal(comps[0][1].Tokens, comps[0][2].Tokens) {
		t.Errorf("n=3 at temperature 1 gave three identical choices %v", comps[0][0].Tokens)
	}
}

// fillWithBatch submits batch rows enough to hold every slot for a long
// while and waits until they do.
func fillWithBatch(t *testing.T, e *Engine, reg *prometheus.Registry, rows int) (done chan [][]model.Completion, reqs []model.Request) {
	t.Helper()
	reqs = testRequests(rows, 9)
	for i := range reqs {
		reqs[i].Params.MaxTokens = 40
		reqs[i].Params.N = 1
	}
	done = make(chan [][]model.Completion, 1)
	go func() {
		c, err := e.Generate(context.Background(), reqs, Options{Class: Batch, Group: "fill"})
		if err != nil {
			t.Errorf("batch: %v", err)
		}
		done <- c
	}()
	for {
		n, _ := testutil.GatherAndCount(reg, "tandem_engine_slots_in_use")
		if n > 0 && testutil.ToFloat64(e.met.inUse) == float64(e.Slots()) && e.Steps() > 2 {
			return done, reqs
		}
		time.Sleep(time.Millisecond)
	}
}

// TestEngineInteractiveFirstInSteps checks people first: a stream that
// arrives while batch rows hold every slot gets its first token within a
// bounded number of steps (its prompt's chunks, plus the step under way),
// and the paused batch rows still end with the text they would have had.
func TestEngineInteractiveFirstInSteps(t *testing.T) {
	requireInvariant(t)
	m, tok := engineTestModel(t)
	reg := prometheus.NewRegistry()
	e := newTestEngine(t, m, tok, EngineConfig{Slots: 4, Metrics: NewMetrics(reg), Name: "test"})
	done, batch := fillWithBatch(t, e, reg, 12)
	prompt := tok.Encode("Someone waits for this reply, and the prompt runs to a few chunks of eight tokens")
	bound := int64((len(prompt)+7)/8 + 1)
	var at, first int64 = e.Steps(), -1
	_, err := e.Generate(context.Background(), []model.Request{{Prompt: prompt, Params: model.SamplingParams{MaxTokens: 5}}},
		Options{Class: Interactive, OnToken: func(_, _ int, _ int32, _ string) {
			if first < 0 {
				first = e.Steps()
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	if waited := first - at; waited > bound {
		t.Errorf("first token after %d steps; want at most %d (prompt of %d tokens in chunks of 8, plus the step under way)", waited, bound, len(prompt))
	}
	if p := testutil.ToFloat64(e.met.preemptions); p < 1 {
		t.Errorf("preemptions = %v; want the stream to have paused a batch row", p)
	}
	got := <-done
	want := alone(t, newTestEngine(t, m, tok, EngineConfig{Slots: 2}), batch)
	sameCompletions(t, "paused batch rows", want, got)
}

// TestEngineFairGroups checks that two batches waiting together share the
// slots: the second does not wait for the whole first.
func TestEngineFairGroups(t *testing.T) {
	m, tok := engineTestModel(t)
	e := newTestEngine(t, m, tok, EngineConfig{Slots: 2})
	var mu sync.Mutex
	var order []string
	run := func(g string) {
		reqs := testRequests(6, 5)
		for i := range reqs {
			reqs[i].Params.N = 1
		}
		var wg sync.WaitGroup
		for i := range reqs {
			wg.Go(func() {
				if _, err := e.Generate(context.Background(), reqs[i:i+1], Options{Class: Batch, Group: g}); err != nil {
					t.Error(err)
				}
				mu.Lock()
				order = append(order, g)
				mu.Unlock()
			})
		}
		wg.Wait()
	}
	var wg sync.WaitGroup
	wg.Go(func() { run("a") })
	wg.Go(func() { run("b") })
	wg.Wait()
	// With turns, b's rows finish among a's, not all after them.
	if firstB := slices.Index(order, "b"); firstB > 3 {
		t.Errorf("finish order %v: group b's first row ended after %d of a's", order, firstB)
	}
}

// TestEngineCancelFreesSlot checks that a cancelled call returns its
// context's error and that its slot serves the next call.
func TestEngineCancelFreesSlot(t *testing.T) {
	m, tok := engineTestModel(t)
	e := newTestEngine(t, m, tok, EngineConfig{Slots: 1})
	ctx, cancel := context.WithCancel(context.Background())
	long := []model.Request{{Prompt: []int32{1, 2, 3}, Params: model.SamplingParams{MaxTokens: 90, IgnoreEOS: true}}}
	n := 0
	_, err := e.Generate(ctx, long, Options{Class: Batch, OnToken: func(_, _ int, _ int32, _ string) {
		if n++; n == 3 {
			cancel()
		}
	}})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled call returned %v; want context.Canceled", err)
	}
	short := []model.Request{{Prompt: []int32{4, 5}, Params: model.SamplingParams{MaxTokens: 3, IgnoreEOS: true}}}
	c, err := e.Generate(context.Background(), short, Options{Class: Interactive})
	if err != nil || len(c[0][0].Tokens) != 3 {
		t.Fatalf("call after the cancel: %v, %v", c, err)
	}
}

// TestEngineManySubmitters submits from many goroutines at once (run it
// with -race): every call gets its own tokens.
func TestEngineManySubmitters(t *testing.T) {
	m, tok := engineTestModel(t)
	reqs := testRequests(40, 11)
	e := newTestEngine(t, m, tok, EngineConfig{Slots: 8})
	got := together(t, e, reqs)
	if model.DecodeBatchInvariant() {
		sameCompletions(t, "40 submitters", alone(t, e, reqs), got)
	}
	for i, cs := range got {
		for _, c := range cs {
			if len(c.Tokens) != min(reqs[i].Params.MaxTokens, 96-len(reqs[i].Prompt)) {
				t.Fatalf("request %d: %d tokens; want max_tokens %d", i, len(c.Tokens), reqs[i].Params.MaxTokens)
			}
		}
	}
}

// TestEngineBadInput checks that a bad request fails its call alone, with
// the field named.
func TestEngineBadInput(t *testing.T) {
	m, tok := engineTestModel(t)
	e := newTestEngine(t, m, tok, EngineConfig{Slots: 2})
	for name, r := range map[string]model.Request{
		"prompt":     {Params: model.SamplingParams{MaxTokens: 2}},
		"prompt[1]":  {Prompt: []int32{1, 60000}, Params: model.SamplingParams{MaxTokens: 2}},
		"max_tokens": {Prompt: []int32{1}, Params: model.SamplingParams{MaxTokens: -1}},
	} {
		if _, err := e.Generate(context.Background(), []model.Request{r}, Options{}); err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("%s: error %v; want one naming %s", name, err, name)
		}
	}
}

// TestEngineCloseLeavesNoGoroutines checks that Close ends the calls in
// flight with ErrClosed, refuses later ones and stops every goroutine.
func TestEngineCloseLeavesNoGoroutines(t *testing.T) {
	// The model's kernel pool is the process's, started on first use.
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent(), goleak.IgnoreTopFunction("github.com/tandem-ai/tandem/model.(*workPool).worker"))
	m, tok := engineTestModel(t)
	e := NewEngine(m, tok, EngineConfig{Slots: 2})
	errc := make(chan error, 1)
	started := make(chan struct{})
	var once sync.Once
	go func() {
		_, err := e.Generate(context.Background(), []model.Request{{Prompt: []int32{1}, Params: model.SamplingParams{MaxTokens: 90, IgnoreEOS: true}}},
			Options{OnToken: func(_, _ int, _ int32, _ string) { once.Do(func() { close(started) }) }})
		errc <- err
	}()
	<-started
	e.Close()
	if err := <-errc; !errors.Is(err, ErrClosed) {
		t.Errorf("call in flight at Close: %v; want ErrClosed", err)
	}
	if _, err := e.Generate(context.Background(), []model.Request{{Prompt: []int32{1}, Params: model.SamplingParams{MaxTokens: 1}}}, Options{}); !errors.Is(err, ErrClosed) {
		t.Errorf("call after Close: %v; want ErrClosed", err)
	}
}

// TestEngineIdleRelease checks that an idle engine stops its loop and
// frees its cache, then starts again on the next call.
func TestEngineIdleRelease(t *testing.T) {
	m, tok := engineTestModel(t)
	e := newTestEngine(t, m, tok, EngineConfig{Slots: 2, IdleRelease: 10 * time.Millisecond})
	req := []model.Request{{Prompt: []int32{1, 2}, Params: model.SamplingParams{MaxTokens: 2, IgnoreEOS: true}}}
	for range 2 {
		if _, err := e.Generate(context.Background(), req, Options{}); err != nil {
			t.Fatal(err)
		}
		for {
			e.mu.Lock()
			running := e.running
			e.mu.Unlock()
			if !running {
				break
			}
			time.Sleep(time.Millisecond)
		}
	}
	released := false
	e.Retire(func() { released = true })
	if !released {
		t.Error("Retire on an idle engine did not release at once")
	}
}

// TestEngineMoreChoicesThanSlots checks that a request with more choices
// than slots runs in parts and gives the choices it gives when they all
// fit together.
func TestEngineMoreChoicesThanSlots(t *testing.T) {
	requireInvariant(t)
	m, tok := engineTestModel(t)
	seed := int64(5)
	req := []model.Request{{Prompt: tok.Encode("Five choices, two slots"), Params: model.SamplingParams{MaxTokens: 6, Temperature: 1, Seed: &seed, N: 5, IgnoreEOS: true}}}
	want, err := newTestEngine(t, m, tok, EngineConfig{Slots: 8}).Generate(context.Background(), req, Options{})
	if err != nil {
		t.Fatal(err)
	}
	got, err := newTestEngine(t, m, tok, EngineConfig{Slots: 2}).Generate(context.Background(), req, Options{})
	if err != nil {
		t.Fatal(err)
	}
	sameCompletions(t, "5 choices in 2 slots", want, got)
}

// TestEngineMaxSlots checks that a call's MaxSlots (a batch's batch_size)
// caps the slots its rows hold while other slots stay free, and that
// OnDone reports each request once.
func TestEngineMaxSlots(t *testing.T) {
	m, tok := engineTestModel(t)
	reg := prometheus.NewRegistry()
	e := newTestEngine(t, m, tok, EngineConfig{Slots: 8, Metrics: NewMetrics(reg), Name: "cap"})
	reqs := testRequests(10, 4)
	for i := range reqs {
		reqs[i].Params.N = 1
	}
	most := 0.0
	done := map[int]int{}
	_, err := e.Generate(context.Background(), reqs, Options{Class: Batch, MaxSlots: 2,
		OnToken: func(_, _ int, _ int32, _ string) { most = max(most, testutil.ToFloat64(e.met.inUse)) },
		OnDone:  func(req int) { done[req]++ }})
	if err != nil {
		t.Fatal(err)
	}
	if most > 2 || most == 0 {
		t.Errorf("slots in use reached %v; want at most MaxSlots 2", most)
	}
	for i := range reqs {
		if done[i] != 1 {
			t.Errorf("OnDone(%d) called %d times", i, done[i])
		}
	}
}

// TestEngineBigRequestNotStarved checks that a request whose choices need
// every slot is not passed over by a stream of smaller rows of another
// batch: slots are kept for it as they free.
func TestEngineBigRequestNotStarved(t *testing.T) {
	m, tok := engineTestModel(t)
	e := newTestEngine(t, m, tok, EngineConfig{Slots: 2})
	small := testRequests(20, 6)
	for i := range small {
		small[i].Params.N, small[i].Params.MaxTokens = 1, 6
	}
	started := make(chan struct{})
	var once sync.Once
	var bEnd int64
	var wg sync.WaitGroup
	wg.Go(func() {
		_, err := e.Generate(context.Background(), small, Options{Group: "b", OnToken: func(_, _ int, _ int32, _ string) { once.Do(func() { close(started) }) }})
		if err != nil {
			t.Error(err)
		}
		bEnd = e.Steps()
	})
	<-started
	big := []model.Request{{Prompt: []int32{7, 8}, Params: model.SamplingParams{MaxTokens: 4, N: 2, IgnoreEOS: true}}}
	if _, err := e.Generate(context.Background(), big, Options{Group: "a"}); err != nil {
		t.Fatal(err)
	}
	aEnd := e.Steps()
	wg.Wait()
	if aEnd >= bEnd {
		t.Errorf("the n=2 request ended at step %d, after all 20 rows of the other batch (step %d)", aEnd, bEnd)
	}
}

// panickyDecoder panics on its first Decode.
type panickyDecoder struct {
	model.Decoder
	panicked *bool
}

func (d panickyDecoder) Decode(tokens [][]int32) ([][]float32, error) {
	if !*d.panicked {
		*d.panicked = true
		panic("decoder bug")
	}
	return d.Decoder.Decode(tokens)
}

// TestEnginePanicFailsItsCalls checks that a panic in a step fails the
// calls in flight with an error, not the process, and that the engine
// serves the next call.
func TestEnginePanicFailsItsCalls(t *testing.T) {
	m, tok := engineTestModel(t)
	panicked := false
	factory := func(batch, maxLen int) (model.Decoder, error) {
		d, err := model.NewDecoder(m, nil, batch, maxLen)
		return panickyDecoder{d, &panicked}, err
	}
	e := newTestEngine(t, m, tok, EngineConfig{Slots: 2, NewDecoder: factory})
	req := []model.Request{{Prompt: []int32{1, 2}, Params: model.SamplingParams{MaxTokens: 3, IgnoreEOS: true}}}
	if _, err := e.Generate(context.Background(), req, Options{}); err == nil || !strings.Contains(err.Error(), "panicked") {
		t.Fatalf("call through a panicking step: %v; want an error saying it panicked", err)
	}
	if c, err := e.Generate(context.Background(), req, Options{}); err != nil || len(c[0][0].Tokens) != 3 {
		t.Fatalf("call after the panic: %v, %v", c, err)
	}
}

// TestEngineRetiredToTheCPU checks that an accelerator's engine, retired,
// runs its next calls on the CPU with the CPU's slot count.
func TestEngineRetiredToTheCPU(t *testing.T) {
	m, tok := engineTestModel(t)
	factory := func(batch, maxLen int) (model.Decoder, error) { return model.NewDecoder(m, nil, batch, maxLen) }
	e := newTestEngine(t, m, tok, EngineConfig{NewDecoder: factory})
	if e.Slots() != DefaultGPUSlots {
		t.Fatalf("slots with an accelerator: %d; want %d", e.Slots(), DefaultGPUSlots)
	}
	released := false
	e.Retire(func() { released = true })
	if !released || e.Slots() != DefaultCPUSlots {
		t.Fatalf("after Retire: released %v, slots %d; want true, %d", released, e.Slots(), DefaultCPUSlots)
	}
	req := []model.Request{{Prompt: []int32{1, 2}, Params: model.SamplingParams{MaxTokens: 3, IgnoreEOS: true}}}
	if _, err := e.Generate(context.Background(), req, Options{}); err != nil {
		t.Fatal(err)
	}
}
