package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tandem-ai/tandem/model"
)

// workload is what the scenarios ask of a side; the flags set it.
type workload struct {
	tokens        int           // new tokens per stream and per batch row
	runs          int           // repetitions of scenarios 1 and 2
	streams       int           // concurrent streams of scenario 2
	duringStreams int           // streams of scenario 3, one at a time
	interval      time.Duration // scenario 3: the pause before each stream
	besideStreams int           // streams running continuously in scenario 5
	batchRows     int           // rows of one batch
	chunkRows     int           // rows of one chunk job
	handlers      int           // chunk jobs run at once, as a worker's concurrency
}

// prompts hands out random prompts of 16 to 32 token ids, safe for
// concurrent streams. Random ids are enough: the weights are random too.
type prompts struct {
	mu    sync.Mutex
	rng   *rand.Rand
	vocab int
}

func (p *prompts) next() []int32 {
	p.mu.Lock()
	defer p.mu.Unlock()
	t := make([]int32, 16+p.rng.IntN(17))
	for i := range t {
		t[i] = int32(p.rng.IntN(p.vocab))
	}
	return t
}

// runner holds what every scenario shares.
type runner struct {
	w       workload
	prompts *prompts
	report  *report
}

// streamTiming is what one stream's onToken calls saw.
type streamTiming struct {
	start, first, last time.Time
	tokens             int
}

func (t streamTiming) firstToken() time.Duration { return t.first.Sub(t.start) }

// rate is the stream's tokens per second from the request to its last token.
func (t streamTiming) rate() float64 { return float64(t.tokens) / t.last.Sub(t.start).Seconds() }

// decodeRate is the stream's tokens per second after its first token: how
// fast text arrives once it has started.
func (t streamTiming) decodeRate() float64 {
	if t.tokens < 2 {
		return math.NaN()
	}
	return float64(t.tokens-1) / t.last.Sub(t.first).Seconds()
}

// stream runs one stream of w.tokens on s (plus, when count is not nil,
// adds each token to it) and checks that it made them all.
func (r *runner) stream(ctx context.Context, s side, count *atomic.Int64) (streamTiming, error) {
	prompt := r.prompts.next()
	var t streamTiming
	t.start = time.Now()
	err := s.stream(ctx, prompt, r.w.tokens, func() {
		now := time.Now()
		if t.tokens == 0 {
			t.first = now
		}
		t.last = now
		t.tokens++
		if count != nil {
			count.Add(1)
		}
	})
	if err != nil {
		return t, err
	}
	if t.tokens != r.w.tokens {
		return t, fmt.Errorf("stream made %d tokens, want %d", t.tokens, r.w.tokens)
	}
	return t, nil
}

// batch splits w.batchRows rows into chunks of w.chunkRows, runs them on
// w.handlers goroutines, as a worker with that concurrency would, and
// returns how long the whole batch took.
func (r *runner) batch(ctx context.Context, s side, group string) (time.Duration, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	chunks := make(chan []model.Request, r.w.batchRows/r.w.chunkRows+1)
	for lo := 0; lo < r.w.batchRows; lo += r.w.chunkRows {
		reqs := make([]model.Request, min(r.w.chunkRows, r.w.batchRows-lo))
		for i := range reqs {
			reqs[i] = request(r.prompts.next(), r.w.tokens)
		}
		chunks <- reqs
	}
	close(chunks)
	var (
		wg       sync.WaitGroup
		errOnce  sync.Once
		firstErr error
	)
	fail := func(err error) {
		errOnce.Do(func() { firstErr = err; cancel() })
	}
	t0 := time.Now()
	for range r.w.handlers {
		wg.Go(func() {
			for reqs := range chunks {
				out, err := s.batch(ctx, group, reqs)
				if err != nil {
					fail(err)
					return
				}
				for i, c := range out {
					if n := len(c[0].Tokens); n != r.w.tokens {
						fail(fmt.Errorf("batch row %d made %d tokens, want %d", i, n, r.w.tokens))
						return
					}
				}
			}
		})
	}
	wg.Wait()
	return time.Since(t0), firstErr
}

// warmUp makes first-touch allocations and starts worker pools before
// anything is timed.
func (r *runner) warmUp(ctx context.Context, s side) error {
	w := r.w
	r.w.tokens = 2
	defer func() { r.w = w }()
	if _, err := r.stream(ctx, s, nil); err != nil {
		return fmt.Errorf("warm-up stream: %w", err)
	}
	if _, err := r.batch(ctx, s, "warm-up"); err != nil {
		return fmt.Errorf("warm-up batch: %w", err)
	}
	return nil
}

// scenario is one of the five measurements; run records its figures for s
// and may read those of scenarios it depends on (needs).
type scenario struct {
	id    int
	title string
	needs []int
	run   func(r *runner, ctx context.Context, s side) error
}

var scenarios = []scenario{
	{1, "one stream alone", nil, (*runner).alone},
	{2, "concurrent streams", []int{1}, (*runner).concurrent},
	{3, "one stream at a time while a batch runs", []int{1}, (*runner).duringBatch},
	{4, "batch alone", nil, (*runner).batchAlone},
	{5, "batch beside continuous streams", []int{4}, (*runner).batchBeside},
}

func (r *runner) alone(ctx context.Context, s side) error {
	var ts []streamTiming
	for range r.w.runs {
		t, err := r.stream(ctx, s, nil)
		if err != nil {
			return err
		}
		ts = append(ts, t)
	}
	r.recordFirst(s, "1.first_token", "1 alone: ", ts)
	r.report.set(s, "1.tokens_per_s", "1 alone: tokens/s, request to last token", median(ts, streamTiming.rate))
	r.report.set(s, "1.decode_tokens_per_s", "1 alone: tokens/s after the first token", median(ts, streamTiming.decodeRate))
	return nil
}

func (r *runner) concurrent(ctx context.Context, s side) error {
	var (
		ts   []streamTiming
		wall time.Duration
	)
	for range r.w.runs {
		round := make([]streamTiming, r.w.streams)
		errs := make([]error, r.w.streams)
		var wg sync.WaitGroup
		t0 := time.Now()
		for i := range round {
			wg.Go(func() { round[i], errs[i] = r.stream(ctx, s, nil) })
		}
		wg.Wait()
		wall += time.Since(t0)
		if err := errors.Join(errs...); err != nil {
			return err
		}
		ts = append(ts, round...)
	}
	agg := float64(len(ts)*r.w.tokens) / wall.Seconds()
	k := fmt.Sprint(r.w.streams)
	r.report.set(s, "2.tokens_per_s", "2 "+k+" streams: tokens/s in all", agg)
	r.report.set(s, "2.tokens_ratio", "2 "+k+" streams: tokens/s in all / 1 alone", agg/r.report.get(s, "1.tokens_per_s"))
	r.recordFirst(s, "2.first_token", "2 "+k+" streams: ", ts)
	return nil
}

func (r *runner) duringBatch(ctx context.Context, s side) error {
	var (
		wg      sync.WaitGroup
		loadErr error
	)
	defer wg.Wait()
	bctx, stop := context.WithCancel(ctx)
	defer stop()
	// The batch load repeats until the streams are done, so every stream
	// meets it.
	wg.Go(func() {
		for n := 0; bctx.Err() == nil; n++ {
			if _, err := r.batch(bctx, s, fmt.Sprint("load-", n)); err != nil && bctx.Err() == nil {
				loadErr = err
				return
			}
		}
	})
	// Each stream starts an interval after the previous one ended (the
	// first, after the batch's chunks have started), as a user who reads
	// the reply and asks again. Back to back, the baseline's streams would
	// pass the lock from one to the next while the chunks wait, and the
	// streams would no longer meet the batch.
	var ts []streamTiming
	for range r.w.duringStreams {
		select {
		case <-time.After(r.w.interval):
		case <-ctx.Done():
			return ctx.Err()
		}
		t, err := r.stream(ctx, s, nil)
		if err != nil {
			return err
		}
		ts = append(ts, t)
	}
	stop()
	wg.Wait()
	if loadErr != nil {
		return fmt.Errorf("batch load: %w", loadErr)
	}
	r.recordFirst(s, "3.first_token", "3 during batch: ", ts)
	r.report.set(s, "3.first_token_p50_ratio", "3 during batch: first token p50 / 1 alone", r.report.get(s, "3.first_token_p50_ms")/r.report.get(s, "1.first_token_p50_ms"))
	r.report.set(s, "3.first_token_p99_ratio", "3 during batch: first token p99 / 1 alone", r.report.get(s, "3.first_token_p99_ms")/r.report.get(s, "1.first_token_p99_ms"))
	rate := median(ts, streamTiming.decodeRate)
	r.report.set(s, "3.decode_tokens_per_s", "3 during batch: tokens/s after the first token", rate)
	r.report.set(s, "3.decode_ratio", "3 during batch: tokens/s after the first token / 1 alone", rate/r.report.get(s, "1.decode_tokens_per_s"))
	return nil
}

func (r *runner) batchAlone(ctx context.Context, s side) error {
	d, err := r.batch(ctx, s, "alone")
	if err != nil {
		return err
	}
	r.report.set(s, "4.rows_per_s", "4 batch alone: rows/s", float64(r.w.batchRows)/d.Seconds())
	r.report.set(s, "4.tokens_per_s", "4 batch alone: tokens/s", float64(r.w.batchRows*r.w.tokens)/d.Seconds())
	return nil
}

func (r *runner) batchBeside(ctx context.Context, s side) error {
	sctx, stop := context.WithCancel(ctx)
	defer stop()
	var (
		wg         sync.WaitGroup
		mu         sync.Mutex
		ts         []streamTiming
		streamErrs []error
		tokens     atomic.Int64
	)
	for range r.w.besideStreams {
		wg.Go(func() {
			for sctx.Err() == nil {
				t, err := r.stream(sctx, s, &tokens)
				mu.Lock()
				switch {
				case err == nil:
					ts = append(ts, t)
				case sctx.Err() == nil:
					streamErrs = append(streamErrs, err)
				}
				mu.Unlock()
				if err != nil {
					return
				}
			}
		})
	}
	d, err := r.batch(ctx, s, "beside")
	streamTokens := tokens.Load()
	stop()
	wg.Wait()
	if err != nil {
		return err
	}
	if err := errors.Join(streamErrs...); err != nil {
		return fmt.Errorf("streams beside the batch: %w", err)
	}
	k := fmt.Sprint(r.w.besideStreams)
	tps := float64(r.w.batchRows*r.w.tokens) / d.Seconds()
	r.report.set(s, "5.rows_per_s", "5 batch beside "+k+" streams: rows/s", float64(r.w.batchRows)/d.Seconds())
	r.report.set(s, "5.tokens_per_s", "5 batch beside "+k+" streams: tokens/s", tps)
	r.report.set(s, "5.tokens_ratio", "5 batch beside "+k+" streams: tokens/s / 4 alone", tps/r.report.get(s, "4.tokens_per_s"))
	r.report.set(s, "5.stream_tokens_per_s", "5 the "+k+" streams beside: tokens/s in all", float64(streamTokens)/d.Seconds())
	r.report.set(s, "5.streams_done", "5 the "+k+" streams beside: streams finished", float64(len(ts)))
	if len(ts) > 0 {
		r.recordFirst(s, "5.first_token", "5 the "+k+" streams beside: ", ts)
	}
	return nil
}

// recordFirst sets key_p50_ms and key_p99_ms from the streams' first-token
// latencies; label starts their labels.
func (r *runner) recordFirst(s side, key, label string, ts []streamTiming) {
	ms := make([]float64, len(ts))
	for i, t := range ts {
		ms[i] = float64(t.firstToken()) / float64(time.Millisecond)
	}
	r.report.set(s, key+"_p50_ms", label+"first token p50, ms", percentile(ms, 50))
	r.report.set(s, key+"_p99_ms", label+"first token p99, ms", percentile(ms, 99))
}

// percentile is the nearest-rank p-th percentile of xs.
func percentile(xs []float64, p float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	i := int(math.Ceil(p/100*float64(len(s)))) - 1
	return s[max(i, 0)]
}

// median is the 50th percentile of f over ts.
func median(ts []streamTiming, f func(streamTiming) float64) float64 {
	xs := make([]float64, len(ts))
	for i, t := range ts {
		xs[i] = f(t)
	}
	return percentile(xs, 50)
}
