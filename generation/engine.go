package generation

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tandem-ai/tandem/model"
)

// Class says who waits on a sequence, and so where the engine puts it.
type Class int

const (
	// Batch rows fill the slots that interactive sequences leave; the
	// groups waiting share them fairly. It is the zero value: a caller
	// must ask to go first.
	Batch Class = iota
	// Interactive sequences have a person waiting: they are admitted before
	// any batch row and, when every slot is taken, take one from a batch row.
	Interactive
)

func (c Class) String() string {
	if c == Interactive {
		return "interactive"
	}
	return "batch"
}

// Engine defaults. DefaultCPUSlots was chosen by measurement (docs/
// PERFORMANCE.md, bench/engine): past it a CPU step costs more than the
// tokens it adds, and 16 rows is where the CPU's decode products stop being
// batch-invariant (model.KVCache.Decode).
const (
	DefaultCPUSlots      = 16
	DefaultGPUSlots      = 64
	DefaultPrefillChunk  = 64
	DefaultPrefillTokens = 128
	DefaultIdleRelease   = 30 * time.Second
	// logEvery is how often a busy engine logs its figures.
	logEvery = 10 * time.Second
)

// ErrClosed is returned to the sequences of an engine that was closed.
var ErrClosed = errors.New("generation engine closed")

// EngineConfig configures an Engine. The zero value works on the CPU.
type EngineConfig struct {
	// Name is the model's name in metrics and logs.
	Name string
	// Slots is how many sequences decode together (the KV cache's rows);
	// 0 means DefaultCPUSlots, or DefaultGPUSlots when NewDecoder is set.
	Slots int
	// PrefillChunk is how many prompt tokens of one sequence one decode
	// call takes. Chunk boundaries fall at fixed multiples of it, whatever
	// else runs, so a sequence's cache never depends on its company.
	PrefillChunk int
	// PrefillTokens caps the prompt tokens fed in one step over all
	// sequences (at least one chunk runs), so a long prompt joins over
	// several steps while the others keep decoding.
	PrefillTokens int
	// NewDecoder makes the decoder (an accelerator's KV cache); nil decodes
	// with the model's own KVCache.
	NewDecoder model.DecoderFactory
	// Metrics receives the engine's figures; nil records none.
	Metrics *Metrics
	// Logger gets a line of figures every ten seconds while the engine is
	// busy; nil logs nothing.
	Logger *slog.Logger
	// IdleRelease is how long an idle engine keeps its KV cache before it
	// frees it; 0 means DefaultIdleRelease.
	IdleRelease time.Duration
}

// Options describes one Generate call's sequences.
type Options struct {
	Class Class
	// Group names the batch the rows belong to (a batch id, a job id):
	// waiting groups get slots in turn. Empty means a group of its own.
	Group string
	// MaxSlots, if positive, caps the slots this call's rows hold at once
	// (a batch's batch_size); a request with more choices still gets them
	// all together.
	MaxSlots int
	// OnToken, if set, gets every generated token as model.Generate's
	// OnToken does, on the goroutine that called Generate.
	OnToken func(req, choice int, tok int32, text string)
	// OnLogprobs, if set, gets the log probabilities of every generated
	// token of a request that asks for them (Params.Logprobs > 0), just
	// before OnToken gets the token, on the goroutine that called
	// Generate: a stream can send both together.
	OnLogprobs func(req, choice int, lp model.TokenLogprobs)
	// OnDone, if set, is called once per request when its last choice
	// ends, after its tokens, on the goroutine that called Generate.
	OnDone func(req int)
}

// Engine decodes the sequences of every job that uses one model together,
// one step at a time: each step feeds every live sequence its next token in
// one decode call, plus prompt chunks of the sequences joining. A sequence
// joins at the next step after a slot frees and leaves when it ends;
// interactive sequences go first and may pause a batch row, which later
// replays its tokens and goes on exactly where it was.
//
// A sequence's tokens do not depend on the sequences beside it: its prompt
// is fed in chunks at fixed boundaries, each chunk in a decode call of its
// own, and decode steps carry one token per sequence through kernels whose
// per-row arithmetic does not depend on the row count (on the CPU, up to
// 16 rows: see model.KVCache.Decode).
type Engine struct {
	m   *model.Model
	tok *model.Tokenizer
	eot int32
	cfg EngineConfig
	met *engineMetrics

	mu       sync.Mutex
	incoming []*call
	running  bool
	closed   bool
	factory  model.DecoderFactory
	// slotCount is the slots of the next loop: cfg.Slots, or no more
	// than the CPU's default once a GPU engine retires to the CPU.
	slotCount int
	retire    func() // run once the engine is next idle, see Retire
	retired   bool   // a newer engine may serve the model: publish no gauges
	wake      chan struct{}
	loopDone  chan struct{}

	steps atomic.Int64

	// Owned by the loop goroutine.
	dec          model.Decoder
	slots        []*seq // nil: free
	calls        map[*call]struct{}
	waitingInter []*unit
	paused       []*seq
	groups       map[string][]*unit // batch units waiting, by group
	groupOrder   []string           // groups in arrival order, for turns
	turn         int
	rotate       int // which batch rows decode first while people stream
	// groupShort and groupLong say which prompt chunks may share a
	// decode call (prefillCalls).
	groupShort, groupLong bool
	hostDecoder           bool // the model's own KVCache, not an accelerator's
	feed                  [][]int32
	sampleRows            []*model.Row
	prefillLogits         [][]float32
	lastLog               time.Time
	logTokens             int64
	logPreempt            int64
}

// NewEngine makes an engine for m; tok may be nil (no end-of-text, no stop
// sequences: benchmarks on random models). It starts no goroutine until
// the first Generate.
func NewEngine(m *model.Model, tok *model.Tokenizer, cfg EngineConfig) *Engine {
	if cfg.Slots <= 0 {
		cfg.Slots = DefaultCPUSlots
		if cfg.NewDecoder != nil {
			cfg.Slots = DefaultGPUSlots
		}
	}
	if cfg.PrefillChunk <= 0 {
		cfg.PrefillChunk = DefaultPrefillChunk
	}
	if cfg.PrefillTokens <= 0 {
		cfg.PrefillTokens = DefaultPrefillTokens
	}
	if cfg.IdleRelease <= 0 {
		cfg.IdleRelease = DefaultIdleRelease
	}
	eot := int32(-1)
	if tok != nil {
		eot = tok.EOT()
	}
	e := &Engine{m: m, tok: tok, eot: eot, cfg: cfg, factory: cfg.NewDecoder,
		met: cfg.Metrics.forModel(cfg.Name), wake: make(chan struct{}, 1)}
	e.slotCount = cfg.Slots
	e.met.capacity.Set(float64(cfg.Slots))
	return e
}

// Slots is how many sequences the engine decodes together.
func (e *Engine) Slots() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.slotCount
}

// Steps counts the decode steps run so far: tests measure waits in steps.
func (e *Engine) Steps() int64 { return e.steps.Load() }

// call is one Generate call: its rows, and the tokens the engine produced
// for it that the caller has not yet seen.
type call struct {
	ctx   context.Context
	opts  Options
	group string // opts.Group, or a name of its own
	rows  []*model.Row
	units []*unit

	mu       sync.Mutex
	events   []tokenEvent
	err      error
	finished bool
	wake     chan struct{}

	// Loop-owned.
	left       int
	reqLeft    []int // choices not yet ended, per request
	held       int   // slots its rows hold
	submitted  time.Time
	firstToken bool
}

// tokenEvent is a token for OnToken (and its log probabilities for
// OnLogprobs, when asked), or with done set, a request's end for OnDone.
type tokenEvent struct {
	req, choice int
	tok         int32
	text        string
	lp          *model.TokenLogprobs
	done        bool
}

// unit is what is admitted at once: the choices of one request (up to the
// slot count), which share its prefill when the decoder can copy rows.
type unit struct {
	c    *call
	seqs []*seq
}

// phase is where a sequence holding a slot is.
type phase int

const (
	phasePrefill phase = iota // its prompt is being fed
	phaseCopy                 // waiting for its unit's leader to prefill, to copy it
	phaseDecode               // one token per step
)

type seq struct {
	u     *unit
	row   *model.Row
	slot  int // -1: holds none
	phase phase
	fed   int // prompt tokens in the cache
	// pos counts the generated tokens fed back. After a pause it restarts
	// at 0 and the tokens are replayed; the row samples again once
	// pos == len(row.Tokens()).
	pos     int
	started bool
}

// Generate completes reqs as model.Generate does, with the engine's other
// sequences: it returns, for each request, its Params.N completions. It
// blocks until they end; cancelling ctx frees their slots at the next step
// and returns ctx's error.
func (e *Engine) Generate(ctx context.Context, reqs []model.Request, opts Options) ([][]model.Completion, error) {
	rows, err := model.BuildRows(e.m.Config, e.tok, reqs)
	if err != nil {
		return nil, fmt.Errorf("generate: %w", err)
	}
	c := &call{ctx: ctx, opts: opts, rows: rows, wake: make(chan struct{}, 1), left: len(rows), reqLeft: make([]int, len(reqs))}
	for _, r := range rows {
		c.reqLeft[r.Req()]++
	}
	slots := e.Slots()
	for i := 0; i < len(rows); {
		j := i + 1
		// Choices beyond the slot count form units of their own, each
		// prefilling once.
		for j < len(rows) && j-i < slots && rows[j].Req() == rows[i].Req() {
			j++
		}
		u := &unit{c: c}
		for _, r := range rows[i:j] {
			u.seqs = append(u.seqs, &seq{u: u, row: r, slot: -1})
		}
		c.units = append(c.units, u)
		i = j
	}
	out := make([][]model.Completion, len(reqs))
	for i, r := range reqs {
		out[i] = make([]model.Completion, r.Params.WithDefaults().N)
	}
	if len(rows) > 0 {
		if err := e.submit(c); err != nil {
			return nil, err
		}
		if err := c.wait(); err != nil {
			return nil, err
		}
	}
	for _, r := range rows {
		out[r.Req()][r.Choice()] = r.Completion()
	}
	return out, nil
}

// wait delivers c's tokens to OnToken until c ends.
func (c *call) wait() error {
	for {
		select {
		case <-c.wake:
		case <-c.ctx.Done():
			if fin, err := c.deliver(); fin && err == nil {
				return nil // every row ended before the cancel
			}
			return fmt.Errorf("generate: %w", c.ctx.Err())
		}
		if fin, err := c.deliver(); fin {
			return err
		}
	}
}

// deliver hands the pending events to OnToken and reports whether c ended.
func (c *call) deliver() (bool, error) {
	c.mu.Lock()
	evs := c.events
	c.events = nil
	fin, err := c.finished, c.err
	c.mu.Unlock()
	for _, ev := range evs {
		switch {
		case ev.done && c.opts.OnDone != nil:
			c.opts.OnDone(ev.req)
		case !ev.done:
			if ev.lp != nil && c.opts.OnLogprobs != nil {
				c.opts.OnLogprobs(ev.req, ev.choice, *ev.lp)
			}
			if c.opts.OnToken != nil {
				c.opts.OnToken(ev.req, ev.choice, ev.tok, ev.text)
			}
		}
	}
	return fin, err
}

func (c *call) signal() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// end finishes c with err (nil: every row ended).
func (c *call) end(err error) {
	c.mu.Lock()
	if !c.finished {
		c.finished, c.err = true, err
	}
	c.mu.Unlock()
	c.signal()
}

func (e *Engine) submit(c *call) error {
	c.submitted = time.Now()
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return fmt.Errorf("generate: %w", ErrClosed)
	}
	e.incoming = append(e.incoming, c)
	if !e.running {
		e.running = true
		e.loopDone = make(chan struct{})
		go e.loop(e.loopDone)
	}
	select {
	case e.wake <- struct{}{}:
	default:
	}
	return nil
}

// Close fails every sequence not yet finished with ErrClosed, frees the KV
// cache and waits for the step loop to stop. Later Generate calls fail.
func (e *Engine) Close() {
	e.mu.Lock()
	e.closed = true
	done := e.loopDone
	running := e.running
	select {
	case e.wake <- struct{}{}:
	default:
	}
	e.mu.Unlock()
	if running {
		<-done
	}
	e.runRetire()
}

// Retire arranges for release to run once the engine is next idle (at
// once if it is idle now): a model leaving the worker's cache frees its
// accelerator copy this way without cutting the sequences still running
// on it. Sequences submitted afterwards decode on the host.
func (e *Engine) Retire(release func()) {
	e.mu.Lock()
	if e.factory != nil {
		e.slotCount = min(e.slotCount, DefaultCPUSlots)
	}
	e.retire, e.factory, e.retired = release, nil, true
	idle := !e.running
	e.mu.Unlock()
	if idle {
		e.runRetire()
	}
}

func (e *Engine) runRetire() {
	e.mu.Lock()
	f := e.retire
	e.retire = nil
	e.mu.Unlock()
	if f != nil {
		f()
	}
}

// loop runs steps while there is work, and stops after IdleRelease idle.
func (e *Engine) loop(done chan struct{}) {
	defer close(done)
	n := e.Slots()
	e.met.capacity.Set(float64(n))
	e.calls = map[*call]struct{}{}
	e.groups = map[string][]*unit{}
	e.slots = make([]*seq, n)
	e.feed = make([][]int32, n)
	e.sampleRows = make([]*model.Row, n)
	e.prefillLogits = make([][]float32, n)
	idle := time.NewTimer(e.cfg.IdleRelease)
	defer idle.Stop()
	for {
		closed := e.take()
		if closed {
			e.failAll(fmt.Errorf("generate: %w", ErrClosed))
			e.mu.Lock()
			e.freeDecoder()
			e.running = false
			e.mu.Unlock()
			return
		}
		if len(e.calls) == 0 {
			e.publish()
			idle.Reset(e.cfg.IdleRelease)
			select {
			case <-e.wake:
				continue
			case <-idle.C:
			}
			e.mu.Lock()
			if len(e.incoming) > 0 || e.closed {
				e.mu.Unlock()
				continue
			}
			// Free while holding the lock: a submit that starts the next
			// loop must find this one done with the loop-owned state.
			e.freeDecoder()
			e.running = false
			e.mu.Unlock()
			e.runRetire()
			return
		}
		if err := e.safeStep(); err != nil {
			e.failAll(err)
			e.freeDecoder()
		}
	}
}

// take moves new calls into the queues and reports whether the engine
// was closed.
func (e *Engine) take() bool {
	e.mu.Lock()
	in := e.incoming
	e.incoming = nil
	closed := e.closed
	e.mu.Unlock()
	for _, c := range in {
		e.calls[c] = struct{}{}
		for _, u := range c.units {
			if c.opts.Class == Interactive {
				e.waitingInter = append(e.waitingInter, u)
				continue
			}
			if c.group = c.opts.Group; c.group == "" {
				c.group = fmt.Sprintf("\x00call-%p", c)
			}
			g := c.group
			if _, ok := e.groups[g]; !ok {
				e.groupOrder = append(e.groupOrder, g)
			}
			e.groups[g] = append(e.groups[g], u)
		}
	}
	return closed
}

// failAll ends every call with err and empties the engine.
func (e *Engine) failAll(err error) {
	for c := range e.calls {
		c.end(err)
	}
	clear(e.calls)
	clear(e.slots)
	e.waitingInter, e.paused = nil, nil
	clear(e.groups)
	e.groupOrder = nil
	e.publish()
}

func (e *Engine) freeDecoder() {
	if e.dec == nil {
		return
	}
	if cl, ok := e.dec.(io.Closer); ok {
		cl.Close()
	}
	e.dec = nil
}

// safeStep runs a step, turning a panic into an error: a bug or a bad
// decoder fails the calls in flight, not the worker's other jobs.
func (e *Engine) safeStep() (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("generate: engine step panicked: %v", p)
			if e.cfg.Logger != nil {
				e.cfg.Logger.Error("generation engine step panicked", "model", e.cfg.Name, "panic", p, "stack", string(debug.Stack()))
			}
		}
	}()
	return e.step()
}

// step is one engine step: drop what was cancelled, admit, feed prompt
// chunks, then advance every decoding sequence by one token.
func (e *Engine) step() error {
	e.dropCancelled()
	if e.dec == nil {
		e.mu.Lock()
		f := e.factory
		e.mu.Unlock()
		// On the host, which prompt chunks may share a call (see
		// prefillCalls); an accelerator's decoder gets a call per chunk.
		e.hostDecoder = f == nil
		e.groupShort = f == nil && e.m.SmallBatchInvariant()
		e.groupLong = f == nil && e.m.PrefillGroupInvariant()
		dec, err := model.NewDecoder(e.m, f, len(e.slots), e.m.Config.NPositions)
		if err != nil {
			return fmt.Errorf("generate: %w", err)
		}
		e.dec = dec
	}
	e.admit()
	if err := e.prefill(); err != nil {
		return err
	}
	if err := e.decode(); err != nil {
		return err
	}
	e.steps.Add(1)
	e.met.steps.Inc()
	e.publish()
	e.maybeLog()
	return nil
}

// dropCancelled ends the calls whose context is done and frees their
// slots and places in the queues.
func (e *Engine) dropCancelled() {
	var gone []*call
	for c := range e.calls {
		if err := c.ctx.Err(); err != nil {
			gone = append(gone, c)
			c.end(fmt.Errorf("generate: %w", err))
		}
	}
	e.remove(gone)
}

// failCall ends c alone with err: an error of one of its rows (its
// sampling parameters, say) is not the other calls' business.
func (e *Engine) failCall(c *call, err error) {
	c.end(err)
	e.remove([]*call{c})
}

// remove takes ended calls out of the slots and the queues.
func (e *Engine) remove(gone []*call) {
	if len(gone) == 0 {
		return
	}
	dead := func(c *call) bool { return slices.Contains(gone, c) }
	for _, c := range gone {
		delete(e.calls, c)
	}
	for s, q := range e.slots {
		if q != nil && dead(q.u.c) {
			e.slots[s] = nil
		}
	}
	e.waitingInter = slices.DeleteFunc(e.waitingInter, func(u *unit) bool { return dead(u.c) })
	e.paused = slices.DeleteFunc(e.paused, func(q *seq) bool { return dead(q.u.c) })
	for g, us := range e.groups {
		e.groups[g] = slices.DeleteFunc(us, func(u *unit) bool { return dead(u.c) })
	}
}

func (e *Engine) freeSlots() int {
	n := 0
	for _, q := range e.slots {
		if q == nil {
			n++
		}
	}
	return n
}

// admit gives free slots to waiting sequences: interactive ones first
// (pausing batch rows when it must), then paused batch rows, then batch
// groups in turn, the group holding the fewest slots first.
func (e *Engine) admit() {
	free := e.freeSlots()
	for len(e.waitingInter) > 0 {
		u := e.waitingInter[0]
		for free < len(u.seqs) && e.preemptOne() {
			free++
		}
		if free < len(u.seqs) {
			break
		}
		e.waitingInter = e.waitingInter[1:]
		e.place(u.seqs)
		free -= len(u.seqs)
	}
	if len(e.waitingInter) > 0 {
		// Slots still go to interactive sequences as they free.
		return
	}
	for free > 0 && len(e.paused) > 0 {
		q := e.paused[0]
		e.paused = e.paused[1:]
		e.place([]*seq{q})
		free--
	}
	for free > 0 {
		g := e.nextGroup()
		if g == "" || len(e.groups[g][0].seqs) > free {
			// A request needing more slots than are free keeps them as
			// they free, rather than wait behind every smaller row.
			break
		}
		u := e.groups[g][0]
		e.groups[g] = e.groups[g][1:]
		e.place(u.seqs)
		free -= len(u.seqs)
	}
	e.groupOrder = slices.DeleteFunc(e.groupOrder, func(g string) bool {
		if len(e.groups[g]) == 0 && e.held(g) == 0 {
			delete(e.groups, g)
			return true
		}
		return false
	})
}

// nextGroup picks the waiting group that holds the fewest slots, taking
// turns among equals; a call at its MaxSlots waits.
func (e *Engine) nextGroup() string {
	best, bestHeld := "", 0
	n := len(e.groupOrder)
	for i := range n {
		g := e.groupOrder[(e.turn+i)%n]
		us := e.groups[g]
		if len(us) == 0 {
			continue
		}
		if c := us[0].c; c.opts.MaxSlots > 0 && c.held > 0 && c.held+len(us[0].seqs) > c.opts.MaxSlots {
			continue
		}
		if h := e.held(g); best == "" || h < bestHeld {
			best, bestHeld = g, h
		}
	}
	if best != "" {
		e.turn++
	}
	return best
}

// held counts the slots group g's rows hold.
func (e *Engine) held(g string) int {
	n := 0
	for _, q := range e.slots {
		if q != nil && q.u.c.opts.Class == Batch && q.u.c.group == g {
			n++
		}
	}
	return n
}

// place puts a unit's sequences (or one paused sequence) into free slots;
// the first prefills, the others copy it when it is done.
func (e *Engine) place(qs []*seq) {
	for i, q := range qs {
		for s := range e.slots {
			if e.slots[s] == nil {
				e.slots[s], q.slot = q, s
				q.u.c.held++
				e.dec.ResetRow(s)
				break
			}
		}
		q.phase, q.fed, q.pos = phasePrefill, 0, 0
		if i > 0 {
			q.phase = phaseCopy
		}
		if !q.started {
			q.started = true
			c := q.u.c
			e.met.queueWait.WithLabelValues(c.opts.Class.String()).Observe(time.Since(c.submitted).Seconds())
		}
	}
}

// preemptOne pauses the batch row whose loss is smallest (fewest tokens to
// replay) in the group holding the most slots, and reports whether there
// was one.
func (e *Engine) preemptOne() bool {
	var victim *seq
	vHeld := 0
	for _, q := range e.slots {
		if q == nil || q.u.c.opts.Class != Batch || q.phase == phaseCopy {
			continue
		}
		if q.phase == phasePrefill && waitedOn(q) {
			continue
		}
		h := e.held(q.u.c.group)
		if victim == nil || h > vHeld || (h == vHeld && len(q.row.Tokens()) < len(victim.row.Tokens())) {
			victim, vHeld = q, h
		}
	}
	if victim == nil {
		return false
	}
	e.slots[victim.slot] = nil
	victim.slot = -1
	victim.u.c.held--
	e.paused = append(e.paused, victim)
	e.met.preemptions.Inc()
	e.logPreempt++
	return true
}

// interactiveDecoding reports whether an interactive sequence is past its
// prompt.
func (e *Engine) interactiveDecoding() bool {
	for _, q := range e.slots {
		if q != nil && q.phase == phaseDecode && q.u.c.opts.Class == Interactive {
			return true
		}
	}
	return false
}

// waitedOn reports whether siblings of q wait to copy its prefill.
func waitedOn(q *seq) bool {
	for _, sib := range q.u.seqs {
		if sib != q && sib.slot >= 0 && sib.phase == phaseCopy {
			return true
		}
	}
	return false
}

// prefill feeds prompt chunks, interactive sequences first, until the
// step's prompt-token budget is spent (at least one chunk runs). Each
// chunk gets a decode call of its own.
func (e *Engine) prefill() error {
	var qs []*seq
	for _, q := range e.slots {
		if q != nil && q.phase == phasePrefill {
			qs = append(qs, q)
		}
	}
	slices.SortStableFunc(qs, func(a, b *seq) int { return int(b.u.c.opts.Class) - int(a.u.c.opts.Class) })
	budget := e.cfg.PrefillTokens
	var picked []chunk
	// While a person's stream decodes, batch prompts join one chunk per
	// step, so the stream's steps stay short.
	batchChunks := len(qs)
	if e.interactiveDecoding() {
		batchChunks = 1
	}
	for _, q := range qs {
		prompt := q.row.Prompt()
		n := min(e.cfg.PrefillChunk, len(prompt)-q.fed)
		if len(picked) > 0 && n > budget {
			break
		}
		if q.u.c.opts.Class == Batch {
			if batchChunks == 0 && len(picked) > 0 {
				break
			}
			batchChunks--
		}
		budget -= n
		picked = append(picked, chunk{q, n})
	}
	for _, group := range e.prefillCalls(picked) {
		clear(e.feed)
		for _, ch := range group {
			e.feed[ch.q.slot] = ch.q.row.Prompt()[ch.q.fed : ch.q.fed+ch.n]
		}
		logits, err := e.dec.Decode(e.feed)
		if err != nil {
			return fmt.Errorf("generate: decode: %w", err)
		}
		for _, ch := range group {
			q := ch.q
			q.fed += ch.n
			if q.fed < len(q.row.Prompt()) || q.slot < 0 || e.slots[q.slot] != q {
				continue // more to feed, or its call failed meanwhile
			}
			if err := e.prefilled(q, logits[q.slot]); err != nil {
				return err
			}
		}
	}
	return nil
}

// chunk is n prompt tokens of q to feed.
type chunk struct {
	q *seq
	n int
}

// prefillCalls groups a step's chunks into decode calls so that no chunk's
// bits depend on the others: chunks of at most 16 tokens share calls of at
// most 16 tokens (the CPU's row-invariant kernels), and longer chunks share
// one call where the machine's BLAS is row-invariant for them
// (model.PrefillGroupInvariant); anything else gets a call of its own.
func (e *Engine) prefillCalls(picked []chunk) [][]chunk {
	var calls [][]chunk
	var short, long []chunk
	shortLen := 0
	for _, ch := range picked {
		switch {
		case e.groupShort && ch.n <= vecRows:
			if shortLen+ch.n > vecRows {
				calls, short, shortLen = append(calls, short), nil, 0
			}
			short, shortLen = append(short, ch), shortLen+ch.n
		case e.groupLong && ch.n > vecRows:
			long = append(long, ch)
		default:
			calls = append(calls, []chunk{ch})
		}
	}
	if len(short) > 0 {
		calls = append(calls, short)
	}
	if len(long) > 0 {
		calls = append(calls, long)
	}
	return calls
}

// peopleBatchRows is how many batch rows share a CPU step with people's
// streams. A CPU step's cost grows with its rows (GPT-2 124M here: 24 ms
// for one, 36 ms for four, 54 ms for eight), so beside four batch rows a
// stream keeps about half its speed alone.
const peopleBatchRows = 4

// vecRows is the most rows the CPU's row-invariant kernels take in one
// product (model.DecodeBatchInvariant).
const vecRows = 16

// prefilled moves q, whose prompt is in the cache, and the siblings
// waiting to copy it to decoding, sampling their first tokens from
// logits. A replaying row skips the sample: its tokens are known.
func (e *Engine) prefilled(q *seq, logits []float32) error {
	qs := []*seq{q}
	copier, copies := e.dec.(model.RowCopier)
	for _, sib := range q.u.seqs {
		if sib == q || sib.slot < 0 || sib.phase != phaseCopy {
			continue
		}
		if !copies {
			sib.phase = phasePrefill // it feeds the prompt itself
			continue
		}
		copier.CopyRow(sib.slot, q.slot)
		qs = append(qs, sib)
	}
	clear(e.sampleRows)
	lg := e.prefillLogits
	clear(lg)
	sample := false
	for _, x := range qs {
		x.phase, x.pos = phaseDecode, 0
		if len(x.row.Tokens()) == 0 {
			if err := x.row.Start(e.m.Config.VocabSize); err != nil {
				// qs are one request's choices: its call ends.
				e.failCall(x.u.c, fmt.Errorf("generate: %w", err))
				return nil
			}
			e.sampleRows[x.slot], lg[x.slot] = x.row, logits
			sample = true
		}
	}
	if !sample {
		return nil
	}
	return e.sampleAndAdvance(lg)
}

// decode feeds every decoding sequence its next token in one call and
// samples those that are not replaying.
func (e *Engine) decode() error {
	clear(e.feed)
	live := false
	// While a person's stream decodes, at most half the slots' batch rows
	// take part in a step, and no more than peopleBatchRows on the CPU, in
	// turns: the others keep their cache and wait, and the stream's steps
	// stay short.
	batchRows, people := len(e.slots), e.interactiveDecoding()
	if people {
		batchRows = max(1, len(e.slots)/2)
		if e.hostDecoder {
			batchRows = min(batchRows, peopleBatchRows)
		}
	}
	for i := range e.slots {
		s := (e.rotate + i) % len(e.slots)
		q := e.slots[s]
		if q == nil || q.phase != phaseDecode {
			continue
		}
		if q.u.c.opts.Class == Batch {
			if batchRows == 0 {
				continue
			}
			batchRows--
		}
		e.feed[s] = q.row.Tokens()[q.pos : q.pos+1]
		live = true
	}
	if people {
		e.rotate++
	}
	if !live {
		return nil
	}
	logits, err := e.dec.Decode(e.feed)
	if err != nil {
		return fmt.Errorf("generate: decode: %w", err)
	}
	clear(e.sampleRows)
	for s, q := range e.slots {
		if q == nil || q.phase != phaseDecode || e.feed[s] == nil {
			continue
		}
		q.pos++
		if q.pos == len(q.row.Tokens()) {
			e.sampleRows[s] = q.row
		}
	}
	return e.sampleAndAdvance(logits)
}

// sampleAndAdvance samples the rows in e.sampleRows from logits, passes
// the tokens on to their calls and frees the slots of rows that ended.
func (e *Engine) sampleAndAdvance(logits [][]float32) error {
	if err := model.SampleRows(e.sampleRows, logits); err != nil {
		// A row that could not draw ends its own call only.
		for s, r := range e.sampleRows {
			if r != nil && r.SampleErr() != nil {
				if q := e.slots[s]; q != nil {
					e.failCall(q.u.c, fmt.Errorf("generate: request %d choice %d: %w", r.Req(), r.Choice(), r.SampleErr()))
				}
			}
		}
		for s := range e.sampleRows {
			if e.slots[s] == nil {
				e.sampleRows[s] = nil
			}
		}
	}
	for s, r := range e.sampleRows {
		if r == nil {
			continue
		}
		q := e.slots[s]
		c := q.u.c
		class := c.opts.Class.String()
		if !c.firstToken {
			c.firstToken = true
			e.met.firstToken.WithLabelValues(class).Observe(time.Since(c.submitted).Seconds())
		}
		r.Advance(e.tok, e.eot, func(req, choice int, tok int32, text string) {
			ev := tokenEvent{req: req, choice: choice, tok: tok, text: text}
			// Advance has recorded this token's log probabilities last.
			if c.opts.OnLogprobs != nil {
				if lps := r.Completion().Logprobs; len(lps) > 0 {
					lp := lps[len(lps)-1]
					ev.lp = &lp
				}
			}
			c.mu.Lock()
			c.events = append(c.events, ev)
			c.mu.Unlock()
		})
		c.signal()
		e.met.tokens.WithLabelValues(class).Inc()
		e.logTokens++
		if r.Done() {
			r.Release()
			e.slots[s] = nil
			c.held--
			c.left--
			if c.reqLeft[r.Req()]--; c.reqLeft[r.Req()] == 0 {
				c.mu.Lock()
				c.events = append(c.events, tokenEvent{req: r.Req(), done: true})
				c.mu.Unlock()
			}
			if c.left == 0 {
				delete(e.calls, c)
				c.end(nil)
			}
		}
	}
	return nil
}

// publish sets the gauges, unless the engine retired: the model's next
// engine owns its series then.
func (e *Engine) publish() {
	e.mu.Lock()
	retired := e.retired
	e.mu.Unlock()
	if retired {
		return
	}
	inter, batch := e.waiting()
	e.met.inUse.Set(float64(len(e.slots) - e.freeSlots()))
	e.met.waiting.WithLabelValues(Interactive.String()).Set(float64(inter))
	e.met.waiting.WithLabelValues(Batch.String()).Set(float64(batch))
}

// waiting counts the sequences waiting for a slot, by class.
func (e *Engine) waiting() (inter, batch int) {
	for _, u := range e.waitingInter {
		inter += len(u.seqs)
	}
	batch = len(e.paused)
	for _, us := range e.groups {
		for _, u := range us {
			batch += len(u.seqs)
		}
	}
	return inter, batch
}

// maybeLog writes the engine's figures every logEvery while it is busy.
func (e *Engine) maybeLog() {
	if e.cfg.Logger == nil {
		return
	}
	now := time.Now()
	if e.lastLog.IsZero() {
		e.lastLog = now
		return
	}
	el := now.Sub(e.lastLog)
	if el < logEvery {
		return
	}
	used := len(e.slots) - e.freeSlots()
	inter, batch := e.waiting()
	e.cfg.Logger.Info("generation engine", "model", e.cfg.Name, "slots_in_use", used, "slots", len(e.slots),
		"waiting_interactive", inter, "waiting_batch", batch,
		"tokens_per_s", float64(e.logTokens)/el.Seconds(), "preemptions", e.logPreempt, "steps", e.steps.Load())
	e.lastLog, e.logTokens, e.logPreempt = now, 0, 0
}
