package model

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"runtime"
	"sync"
	"unicode/utf8"

	"github.com/tandem-ai/tandem/limits"
)

// Finish reasons, as in the OpenAI and vLLM completion APIs.
const (
	FinishStop   = "stop"   // end-of-text token or a stop sequence
	FinishLength = "length" // max_tokens reached, or the context window is full
)

// DefaultMaxRows is how many rows (request choices) Generate decodes
// together when GenerateOptions.MaxRows is zero. The KV cache grows with it:
// for GPT-2 124M a row holds 72 KiB per position, 72 MiB at 1024 positions.
const DefaultMaxRows = limits.DefaultDecodeRows

// Request is one prompt to complete.
type Request struct {
	Prompt []int32
	Params SamplingParams
}

// TokenLogprobs describes one generated token when logprobs are on.
type TokenLogprobs struct {
	Token   int32
	Text    string         // the token's bytes as text (may be part of a UTF-8 character)
	Logprob float32        // under the model's raw distribution
	Top     []TokenLogprob // the Params.Logprobs most likely tokens, most likely first
}

// Completion is one choice of one request.
type Completion struct {
	// Tokens are the generated tokens. The end-of-text token is not among
	// them; the token that completed a stop sequence is.
	Tokens []int32
	// Text is the decoded text, cut before the first stop sequence.
	Text         string
	FinishReason string // FinishStop or FinishLength
	PromptTokens int
	// CompletionTokens counts every token the model generated for this
	// choice: len(Tokens), plus one when it ended on end-of-text.
	CompletionTokens int
	// Logprobs has one entry per generated token (end-of-text included)
	// when Params.Logprobs > 0, else nil.
	Logprobs []TokenLogprobs
}

// GenerateOptions tunes a Generate call. The zero value is usable.
type GenerateOptions struct {
	// MaxRows bounds how many rows share the KV cache and a decode step.
	// A request with N choices is N rows; rows beyond MaxRows wait and take
	// the slot of the first row to finish (continuous batching). 0 means
	// DefaultMaxRows.
	MaxRows int
	// OnToken, if set, is called once per generated token, in order for
	// each choice, from the goroutine that called Generate. req indexes
	// reqs. text is the part of the choice's text that became final with
	// this token; it may be empty (text that could still turn out to start
	// a stop sequence, or an incomplete UTF-8 character, is held back). The
	// texts of one choice concatenate to its Completion.Text.
	OnToken func(req, choice int, tok int32, text string)
	// NewDecoder, when set, makes the Decoder the rows share (an
	// accelerator's KV cache, see gpu.Model.DecoderFactory); nil decodes
	// with the model's own KVCache on its Kernels.
	NewDecoder DecoderFactory
}

// Row is the decoding state of one choice: Generate's unit of work, and
// the generation engine's (package generation), which keeps rows of many
// calls in one KV cache. A row is used by one goroutine at a time.
type Row struct {
	req, choice int
	prompt      []int32
	maxNew      int
	params      SamplingParams
	seed        uint64
	// sampler exists while the row holds a slot: its buffers are a few
	// bytes per vocabulary entry, too much to keep for every waiting or
	// finished row of a large batch.
	sampler   *Sampler
	stop      []string
	logprobs  bool
	ignoreEOS bool

	buf     []byte // decoded text so far
	emitted int    // bytes of buf already passed to OnToken
	done    bool
	out     Completion
	next    SampleResult
	err     error
}

// Generate completes reqs with batched decoding and returns, for each
// request, its Params.N completions.
//
// Rows share one KV cache: the prompts, of any lengths, are prefilled in
// one ragged Decode call, then every live row advances by one token per
// Decode step; a finished row's slot goes to the next waiting row, whose
// prompt is prefilled alongside the others' next tokens. A row finishes on
// the end-of-text token (unless IgnoreEOS), on a stop sequence (matched on
// the decoded text), or after max_tokens.
//
// Context policy: a prompt must leave room for at least one new token
// (len(Prompt) <= n_positions-1, else an error naming the request); beyond
// that, max_tokens is clipped so that prompt plus completion fit in
// n_positions, and a choice cut short that way ends with FinishLength.
//
// tok may be nil (for benchmarks on random models): texts are then empty,
// no token counts as end-of-text, and stop sequences are rejected.
// Cancelling ctx stops generation between decode steps; Generate then
// returns ctx's error.
func Generate(ctx context.Context, m *Model, tok *Tokenizer, reqs []Request, opts GenerateOptions) ([][]Completion, error) {
	if m == nil {
		return nil, errors.New("generate: nil model")
	}
	maxRows := opts.MaxRows
	if maxRows == 0 {
		maxRows = DefaultMaxRows
	}
	if maxRows < 0 {
		return nil, fmt.Errorf("generate: MaxRows %d must be >= 0", opts.MaxRows)
	}
	rows, err := BuildRows(m.Config, tok, reqs)
	if err != nil {
		return nil, err
	}
	eot := int32(-1)
	if tok != nil {
		eot = tok.EOT()
	}
	if err := generateRows(ctx, m, tok, eot, rows, maxRows, opts); err != nil {
		return nil, err
	}
	out := make([][]Completion, len(reqs))
	for i, r := range reqs {
		out[i] = make([]Completion, r.Params.WithDefaults().N)
	}
	for _, r := range rows {
		out[r.req][r.choice] = r.out
	}
	return out, nil
}

// BuildRows validates the requests and expands each into its choices, in
// request order and, within a request, choice order.
func BuildRows(cfg Config, tok *Tokenizer, reqs []Request) ([]*Row, error) {
	var rows []*Row
	for i, rq := range reqs {
		if err := rq.Params.Validate(); err != nil {
			return nil, fmt.Errorf("request %d: %w", i, err)
		}
		p := rq.Params.WithDefaults()
		if len(rq.Prompt) == 0 {
			return nil, fmt.Errorf("request %d: prompt: empty", i)
		}
		if len(rq.Prompt) > cfg.NPositions-1 {
			return nil, fmt.Errorf("request %d: prompt: %d tokens, the model's context holds %d (at most %d leave room for a completion)",
				i, len(rq.Prompt), cfg.NPositions, cfg.NPositions-1)
		}
		for j, t := range rq.Prompt {
			if t < 0 || int(t) >= cfg.VocabSize {
				return nil, fmt.Errorf("request %d: prompt[%d]: token %d outside the vocabulary [0, %d)", i, j, t, cfg.VocabSize)
			}
		}
		if len(p.Stop) > 0 && tok == nil {
			return nil, fmt.Errorf("request %d: stop: stop sequences need a tokenizer", i)
		}
		seed := rand.Uint64()
		if p.Seed != nil {
			seed = uint64(*p.Seed)
		}
		for c := range p.N {
			rows = append(rows, &Row{
				req: i, choice: c, prompt: rq.Prompt,
				maxNew:    min(p.MaxTokens, cfg.NPositions-len(rq.Prompt)),
				params:    p,
				seed:      seed,
				stop:      p.Stop,
				logprobs:  p.Logprobs > 0,
				ignoreEOS: p.IgnoreEOS,
				out:       Completion{PromptTokens: len(rq.Prompt)},
			})
		}
	}
	return rows, nil
}

// generateRows decodes rows with continuous batching: up to maxRows of them
// occupy the slots of one KV cache; when a row finishes, its slot is reset
// and the next waiting row's prompt is prefilled in the same Decode call
// that advances the other rows by one token.
func generateRows(ctx context.Context, m *Model, tok *Tokenizer, eot int32, rows []*Row, maxRows int, opts GenerateOptions) error {
	onToken := opts.OnToken
	if len(rows) == 0 {
		return nil
	}
	slots := min(maxRows, len(rows))
	maxLen := 0
	for _, r := range rows {
		// The last sampled token is never fed back, but reserving its
		// place keeps the arithmetic simple and stays within n_positions.
		maxLen = max(maxLen, len(r.prompt)+r.maxNew)
	}
	dec, err := NewDecoder(m, opts.NewDecoder, slots, maxLen)
	if err != nil {
		return fmt.Errorf("generate: %w", err)
	}
	if c, ok := dec.(io.Closer); ok {
		defer c.Close()
	}
	active := make([]*Row, slots) // nil: free slot
	feed := make([][]int32, slots)
	one := make([]int32, slots) // backing store for the one-token feeds
	next := 0
	fill := func() (int, error) {
		live := 0
		for s := range active {
			if active[s] == nil && next < len(rows) {
				r := rows[next]
				next++
				if err := r.Start(m.Config.VocabSize); err != nil {
					return 0, fmt.Errorf("generate: %w", err)
				}
				dec.ResetRow(s)
				active[s], feed[s] = r, r.prompt
			}
			if active[s] != nil {
				live++
			}
		}
		return live, nil
	}
	for {
		if live, err := fill(); err != nil || live == 0 {
			return err
		}
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("generate: %w", err)
		}
		logits, err := dec.Decode(feed)
		if err != nil {
			return fmt.Errorf("generate: decode: %w", err)
		}
		if err := SampleRows(active, logits); err != nil {
			return err
		}
		for s, r := range active {
			if r == nil {
				continue
			}
			r.Advance(tok, eot, onToken)
			if r.done {
				active[s], feed[s] = nil, nil
				r.Release()
				continue
			}
			one[s] = r.next.Token
			feed[s] = one[s : s+1]
		}
	}
}

// NewDecoder makes the Decoder that rows share: the factory's, or a
// KVCache on the model's Kernels.
func NewDecoder(m *Model, factory DecoderFactory, slots, maxLen int) (Decoder, error) {
	if factory != nil {
		return factory(slots, maxLen)
	}
	cache, err := m.NewKVCache(slots, maxLen)
	if err != nil {
		return nil, err
	}
	return kvDecoder{m: m, c: cache}, nil
}

// Start readies r to decode: it makes r's sampler and shows it the prompt.
// One random stream per choice, so that n>1 gives n different draws and
// each choice is repeatable on its own.
func (r *Row) Start(vocab int) error {
	sm, err := NewSampler(r.params, vocab, r.seed, uint64(r.choice))
	if err != nil {
		return fmt.Errorf("request %d: %w", r.req, err)
	}
	sm.ObservePrompt(r.prompt)
	r.sampler = sm
	return nil
}

// Release drops r's sampler once r is done; a finished row keeps only its
// completion.
func (r *Row) Release() { r.sampler = nil }

// Req is the index of r's request in the reqs it was built from.
func (r *Row) Req() int { return r.req }

// Choice is r's choice index within its request.
func (r *Row) Choice() int { return r.choice }

// Prompt is the request's prompt.
func (r *Row) Prompt() []int32 { return r.prompt }

// Tokens are the tokens r has generated so far, end-of-text excluded: the
// last is the one to feed next while r is not done.
func (r *Row) Tokens() []int32 { return r.out.Tokens }

// MaxLen is the most positions r can take in a KV cache: its prompt plus
// its completion.
func (r *Row) MaxLen() int { return len(r.prompt) + r.maxNew }

// SampleErr is the error SampleRows met drawing r's token, or nil.
func (r *Row) SampleErr() error { return r.err }

// Done reports whether r has finished.
func (r *Row) Done() bool { return r.done }

// Completion is r's result, complete once r is done.
func (r *Row) Completion() Completion { return r.out }

// SampleRows draws the next token of every active row. Rows are
// independent, so they are sampled in parallel: over a 50k vocabulary,
// sampling costs a noticeable share of a decode step.
func SampleRows(active []*Row, logits [][]float32) error {
	var live []int
	for s, r := range active {
		if r != nil {
			if s >= len(logits) || logits[s] == nil {
				return fmt.Errorf("generate: decode returned no logits for active slot %d", s)
			}
			live = append(live, s)
		}
	}
	workers := min(runtime.GOMAXPROCS(0), len(live))
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < len(live); i += workers {
				r := active[live[i]]
				r.next, r.err = r.sampler.Sample(logits[live[i]])
				if r.err == nil && r.logprobs {
					// Top aliases the sampler's buffer; keep a copy.
					r.next.Top = append([]TokenLogprob(nil), r.next.Top...)
				}
			}
		}()
	}
	wg.Wait()
	for _, s := range live {
		if r := active[s]; r.err != nil {
			return fmt.Errorf("generate: request %d choice %d: %w", r.req, r.choice, r.err)
		}
	}
	return nil
}

// Advance takes the token SampleRows drew for r: records it, updates the text,
// checks the finishing conditions and reports the token.
func (r *Row) Advance(tok *Tokenizer, eot int32, onToken func(int, int, int32, string)) {
	t := r.next.Token
	r.out.CompletionTokens++
	var piece string
	if t == eot && !r.ignoreEOS {
		r.finish(FinishStop, len(r.buf))
	} else {
		r.sampler.Accept(t)
		r.out.Tokens = append(r.out.Tokens, t)
		if tok != nil {
			piece = string(tok.DecodeBytes([]int32{t}))
		}
		old := len(r.buf)
		r.buf = append(r.buf, piece...)
		if at := firstStop(r.buf, old, r.stop); at >= 0 {
			r.finish(FinishStop, at)
		} else if len(r.out.Tokens) >= r.maxNew {
			r.finish(FinishLength, len(r.buf))
		}
	}
	if r.logprobs {
		r.out.Logprobs = append(r.out.Logprobs, TokenLogprobs{
			Token: t, Text: piece, Logprob: r.next.Logprob, Top: r.next.Top,
		})
	}
	var end int
	if r.done {
		// Held-back text never reaches a stop sequence's start, so this
		// max is only a guard.
		end = max(len(r.out.Text), r.emitted)
	} else {
		end = safeEmitEnd(r.buf, r.emitted, r.stop)
	}
	if onToken != nil {
		onToken(r.req, r.choice, t, string(r.buf[r.emitted:end]))
	}
	r.emitted = end
}

func (r *Row) finish(reason string, textEnd int) {
	r.done = true
	r.out.FinishReason = reason
	r.out.Text = string(r.buf[:textEnd])
}

// firstStop returns where the earliest stop sequence starts in buf, looking
// only at matches that end past old (the earlier text was checked before),
// or -1.
func firstStop(buf []byte, old int, stops []string) int {
	at := -1
	for _, s := range stops {
		from := max(0, old-len(s)+1)
		if i := bytes.Index(buf[from:], []byte(s)); i >= 0 && (at < 0 || from+i < at) {
			at = from + i
		}
	}
	return at
}

// safeEmitEnd is how far text can be released: it holds back the longest
// tail of buf that could still grow into a stop sequence, and an
// incomplete UTF-8 character at the end.
func safeEmitEnd(buf []byte, emitted int, stops []string) int {
	end := len(buf)
	for _, s := range stops {
		for k := min(len(s)-1, len(buf)); k > 0; k-- {
			if bytes.HasSuffix(buf, []byte(s[:k])) {
				end = min(end, len(buf)-k)
				break
			}
		}
	}
	for i := end - 1; i >= max(emitted, end-utf8.UTFMax); i-- {
		if utf8.RuneStart(buf[i]) {
			if !utf8.FullRune(buf[i:end]) {
				end = i
			}
			break
		}
	}
	return max(end, emitted)
}
