package model

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"

	"github.com/tandem-ai/tandem/limits"
)

// Limits on sampling parameters. They follow the ranges OpenAI's and vLLM's
// completion APIs accept, so a request that is valid there is valid here
// (except that the context window of the model bounds MaxTokens further, see
// Generate).
const (
	// MaxTokensLimit bounds MaxTokens before the model's context is known.
	MaxTokensLimit = limits.MaxTokens
	// MaxChoices bounds N, the number of completions per request.
	MaxChoices = limits.Choices
	// MaxStopSequences bounds len(Stop).
	MaxStopSequences = limits.StopSequences
	// MaxStopBytes bounds the length of one stop sequence.
	MaxStopBytes = limits.StopBytes
	// MaxLogprobs bounds Logprobs (the number of alternatives reported per token).
	MaxLogprobs = limits.Logprobs
	// DefaultMaxTokens is used when MaxTokens is zero (OpenAI's default).
	DefaultMaxTokens = 16
)

// SamplingParams controls how the next token is chosen.
//
// Zero values mean "default" for the fields whose zero is not a usable
// setting: MaxTokens 0 means DefaultMaxTokens, TopP 0 means 1 (off),
// RepetitionPenalty 0 means 1 (off), N 0 means 1. TopK 0 or -1 means off.
// Temperature 0 means greedy decoding (argmax after penalties).
type SamplingParams struct {
	MaxTokens   int
	Temperature float32 // 0..2; 0 = greedy
	TopK        int     // 0 or -1 = off
	TopP        float32 // (0,1]; 0 = default 1
	MinP        float32 // [0,1]; 0 = off

	// RepetitionPenalty is the CTRL/Hugging Face penalty over every token seen
	// (prompt and output): positive logits are divided by it, negative ones
	// multiplied. 1 = off; must be > 0.
	RepetitionPenalty float32
	// PresencePenalty and FrequencyPenalty follow OpenAI: over the tokens
	// generated so far, logit -= presence*[count>0] + frequency*count.
	PresencePenalty  float32 // -2..2
	FrequencyPenalty float32 // -2..2

	// Seed makes sampling repeatable: the same seed, model and input give
	// the same output. Nil draws a fresh seed.
	Seed *int64
	// Stop sequences end a completion; they are matched on decoded text and
	// excluded from it.
	Stop []string
	// N is the number of completions for the request (1..MaxChoices).
	N int
	// Logprobs is how many top alternatives to report per generated token
	// (0 = off, at most MaxLogprobs). When on, the sampled token's own log
	// probability is reported too.
	Logprobs int
	// IgnoreEOS keeps generating past the end-of-text token (benchmarks).
	IgnoreEOS bool
}

// WithDefaults returns p with its zero-valued "default" fields filled in.
func (p SamplingParams) WithDefaults() SamplingParams {
	if p.MaxTokens == 0 {
		p.MaxTokens = DefaultMaxTokens
	}
	if p.TopP == 0 {
		p.TopP = 1
	}
	if p.RepetitionPenalty == 0 {
		p.RepetitionPenalty = 1
	}
	if p.N == 0 {
		p.N = 1
	}
	if p.TopK < 0 {
		p.TopK = 0
	}
	return p
}

// Validate reports the first field out of range, by name. Zero values that
// mean "default" are accepted (see SamplingParams).
func (p SamplingParams) Validate() error {
	q := p.WithDefaults()
	// Comparisons are written as !(in range) so that NaN fails them.
	switch {
	case q.MaxTokens < 1 || q.MaxTokens > MaxTokensLimit:
		return fmt.Errorf("max_tokens: %d out of range [1, %d]", p.MaxTokens, MaxTokensLimit)
	case !(q.Temperature >= 0 && q.Temperature <= 2):
		return fmt.Errorf("temperature: %v out of range [0, 2]", p.Temperature)
	case p.TopK < -1:
		return fmt.Errorf("top_k: %d must be >= 1, or 0 / -1 for off", p.TopK)
	case !(q.TopP > 0 && q.TopP <= 1):
		return fmt.Errorf("top_p: %v out of range (0, 1]", p.TopP)
	case !(q.MinP >= 0 && q.MinP <= 1):
		return fmt.Errorf("min_p: %v out of range [0, 1]", p.MinP)
	case !(q.RepetitionPenalty > 0) || math.IsInf(float64(q.RepetitionPenalty), 0):
		return fmt.Errorf("repetition_penalty: %v must be a finite number > 0", p.RepetitionPenalty)
	case !(q.PresencePenalty >= -2 && q.PresencePenalty <= 2):
		return fmt.Errorf("presence_penalty: %v out of range [-2, 2]", p.PresencePenalty)
	case !(q.FrequencyPenalty >= -2 && q.FrequencyPenalty <= 2):
		return fmt.Errorf("frequency_penalty: %v out of range [-2, 2]", p.FrequencyPenalty)
	case q.N < 1 || q.N > MaxChoices:
		return fmt.Errorf("n: %d out of range [1, %d]", p.N, MaxChoices)
	case q.Logprobs < 0 || q.Logprobs > MaxLogprobs:
		return fmt.Errorf("logprobs: %d out of range [0, %d]", p.Logprobs, MaxLogprobs)
	case len(q.Stop) > MaxStopSequences:
		return fmt.Errorf("stop: %d sequences, at most %d", len(p.Stop), MaxStopSequences)
	}
	for i, s := range q.Stop {
		if s == "" {
			return fmt.Errorf("stop[%d]: empty sequence", i)
		}
		if len(s) > MaxStopBytes {
			return fmt.Errorf("stop[%d]: %d bytes, at most %d", i, len(s), MaxStopBytes)
		}
	}
	return nil
}

// TokenLogprob is one token with its log probability (natural log).
type TokenLogprob struct {
	Token   int32
	Logprob float32
}

// SampleResult is the outcome of one sampling step.
type SampleResult struct {
	Token int32
	// Logprob is the log probability of Token under the model's raw
	// distribution (before penalties, temperature and truncation), as vLLM
	// reports it by default. Zero when logprobs are off.
	Logprob float32
	// Top holds the Logprobs most likely tokens of the raw distribution, most
	// likely first. It aliases the sampler's buffer: valid until the next
	// call to Sample.
	Top []TokenLogprob
}

// ErrBadLogits is returned when the logits hold no usable (finite) value.
var ErrBadLogits = errors.New("model: logits have no finite value")

// Sampler draws tokens for one sequence. It keeps the sequence's token
// history (for the penalties) and its own random stream, so two samplers
// built with the same seed and fed the same logits draw the same tokens.
// A Sampler is not safe for concurrent use; Generate keeps one per row.
type Sampler struct {
	p     SamplingParams
	vocab int
	rng   *rand.Rand

	// History for penalties. seen lists every distinct token of prompt and
	// output once (for the repetition penalty); seenBits marks membership.
	// outCount counts output occurrences; outList lists output tokens once.
	seen     []int32
	seenBits []uint64
	outCount map[int32]int32
	outList  []int32

	// Scratch reused across calls so that the hot path does not allocate.
	work     []float32 // penalised, tempered logits
	cand     []int32   // candidate token ids
	prob     []float64 // probabilities aligned with cand
	top      []TokenLogprob
	order    []int32 // sorted prefix used by top-p
	keptTok  []int32 // top-p survivors
	keptProb []float64
}

// NewSampler builds a sampler for a vocabulary of the given size. seed and
// stream select the random stream (Generate uses the request seed and the
// choice index). p must be valid; it is taken with defaults filled in.
func NewSampler(p SamplingParams, vocab int, seed, stream uint64) (*Sampler, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	if vocab <= 0 {
		return nil, fmt.Errorf("vocab: %d must be > 0", vocab)
	}
	p = p.WithDefaults()
	return &Sampler{
		p:        p,
		vocab:    vocab,
		rng:      rand.New(rand.NewPCG(seed, stream)),
		seenBits: make([]uint64, (vocab+63)/64),
		outCount: make(map[int32]int32),
		work:     make([]float32, vocab),
		cand:     make([]int32, 0, vocab),
		prob:     make([]float64, 0, vocab),
		top:      make([]TokenLogprob, 0, MaxLogprobs),
	}, nil
}

// Params returns the sampler's parameters with defaults filled in.
func (s *Sampler) Params() SamplingParams { return s.p }

// ObservePrompt records prompt tokens (they count for the repetition
// penalty only). Tokens outside the vocabulary are ignored.
func (s *Sampler) ObservePrompt(tokens []int32) {
	for _, t := range tokens {
		s.markSeen(t)
	}
}

// Accept records a generated token (for all penalties). Sample does not
// call it, so that a caller may discard a draw; Generate accepts each token
// it keeps.
func (s *Sampler) Accept(t int32) {
	if t < 0 || int(t) >= s.vocab {
		return
	}
	s.markSeen(t)
	if s.outCount[t] == 0 {
		s.outList = append(s.outList, t)
	}
	s.outCount[t]++
}

func (s *Sampler) markSeen(t int32) {
	if t < 0 || int(t) >= s.vocab {
		return
	}
	w, b := t/64, uint64(1)<<(uint(t)%64)
	if s.seenBits[w]&b == 0 {
		s.seenBits[w] |= b
		s.seen = append(s.seen, t)
	}
}

// Sample chooses the next token from logits (len = vocabulary size), which
// it does not modify. The order of operations follows vLLM: penalties,
// temperature, top-k, top-p, then min-p, then a draw.
func (s *Sampler) Sample(logits []float32) (SampleResult, error) {
	if len(logits) != s.vocab {
		return SampleResult{}, fmt.Errorf("logits: length %d, want vocabulary size %d", len(logits), s.vocab)
	}
	var res SampleResult
	w := logits // the steps below only read w
	if s.p.RepetitionPenalty != 1 || s.p.PresencePenalty != 0 || s.p.FrequencyPenalty != 0 {
		w = s.work
		copy(w, logits)
		s.applyPenalties(w)
	}

	var tok int32
	if s.p.Temperature == 0 {
		best := finiteArgmax(w)
		if best < 0 {
			return SampleResult{}, ErrBadLogits
		}
		tok = int32(best)
	} else {
		var err error
		if tok, err = s.draw(w); err != nil {
			return SampleResult{}, err
		}
	}
	res.Token = tok
	if s.p.Logprobs > 0 {
		lse := finiteLogSumExp(logits)
		res.Logprob = float32(float64(logits[tok]) - lse)
		res.Top = s.topLogprobs(logits, lse)
	}
	return res, nil
}

func (s *Sampler) applyPenalties(w []float32) {
	if r := s.p.RepetitionPenalty; r != 1 {
		for _, t := range s.seen {
			if w[t] > 0 {
				w[t] /= r
			} else {
				w[t] *= r
			}
		}
	}
	pp, fp := s.p.PresencePenalty, s.p.FrequencyPenalty
	if pp != 0 || fp != 0 {
		for _, t := range s.outList {
			w[t] -= pp + fp*float32(s.outCount[t])
		}
	}
}

// finiteArgmax returns the index of the largest finite value (lowest index on a
// tie), or -1 when none is finite.
func finiteArgmax(w []float32) int {
	best := -1
	bv, posInf := float32(math.Inf(-1)), float32(math.Inf(1))
	for i, v := range w {
		if v > bv && v < posInf { // false for NaN and -Inf
			best, bv = i, v
		}
	}
	return best
}

func finiteLogSumExp(x []float32) float64 {
	m := math.Inf(-1)
	for _, v := range x {
		if f := float64(v); f > m && !math.IsInf(f, 1) && !math.IsNaN(f) {
			m = f
		}
	}
	if math.IsInf(m, -1) {
		return m
	}
	var sum float64
	for _, v := range x {
		if f := float64(v); !math.IsNaN(f) && !math.IsInf(f, 1) {
			sum += expNonPositive(f - m)
		}
	}
	return m + math.Log(sum)
}

// topLogprobs returns the k most likely tokens of the raw distribution by
// insertion into a k-long list: k is at most MaxLogprobs, so this is one
// pass over the vocabulary.
func (s *Sampler) topLogprobs(logits []float32, lse float64) []TokenLogprob {
	k := s.p.Logprobs
	top := s.top[:0]
	for i, v := range logits {
		if math.IsNaN(float64(v)) {
			continue
		}
		if len(top) == k && v <= top[k-1].Logprob {
			continue
		}
		e := TokenLogprob{Token: int32(i), Logprob: v}
		if len(top) < k {
			top = append(top, e)
		} else {
			top[k-1] = e
		}
		for j := len(top) - 1; j > 0 && top[j].Logprob > top[j-1].Logprob; j-- {
			top[j], top[j-1] = top[j-1], top[j]
		}
	}
	for i := range top {
		top[i].Logprob = float32(float64(top[i].Logprob) - lse)
	}
	s.top = top
	return top
}

// draw samples from the tempered, truncated distribution of w. Weights are
// kept unnormalised (top-p compares against a fraction of their total and
// min-p compares ratios), which saves a pass over the vocabulary.
func (s *Sampler) draw(w []float32) (int32, error) {
	invT := 1 / float64(s.p.Temperature)
	negInf, posInf := float32(math.Inf(-1)), float32(math.Inf(1))
	cand := s.cand[:0]
	for i, v := range w {
		if v > negInf && v < posInf { // false for NaN too
			cand = append(cand, int32(i))
		}
	}
	if len(cand) == 0 {
		return 0, ErrBadLogits
	}
	if k := s.p.TopK; k > 0 && k < len(cand) {
		selectTopK(cand, w, k)
		cand = cand[:k]
	}
	m := w[cand[0]]
	for _, t := range cand {
		if w[t] > m {
			m = w[t]
		}
	}
	// Weights exp((l-max)/T) in float64, so that long tails still add up.
	prob := s.prob[:0]
	var total float64
	for _, t := range cand {
		e := expNonPositive(float64(w[t]-m) * invT)
		prob = append(prob, e)
		total += e
	}
	if p := float64(s.p.TopP); p < 1 {
		cand, prob = s.nucleus(cand, prob, p*total)
	}
	if mp := float64(s.p.MinP); mp > 0 {
		// The most likely candidate has weight exactly 1 (exp(0)) and
		// survives top-k and top-p, so the cut is min_p itself.
		n := 0
		for i, q := range prob {
			if q >= mp {
				cand[n], prob[n] = cand[i], q
				n++
			}
		}
		cand, prob = cand[:n], prob[:n]
	}
	total = 0
	for _, q := range prob {
		total += q
	}
	u := s.rng.Float64() * total
	for i, q := range prob {
		u -= q
		if u < 0 {
			return cand[i], nil
		}
	}
	// Rounding left u a hair above zero: the last candidate takes it.
	return cand[len(cand)-1], nil
}

// expNonPositive is exp(x) for x <= 0, to a relative error below 1e-8,
// several times faster than math.Exp: sampling takes one per vocabulary
// entry per token. Values below -700 give 0.
func expNonPositive(x float64) float64 {
	if x < -700 {
		return 0
	}
	// x = k*ln2 + r with |r| <= ln2/2; exp(r) by its Taylor series to r^7
	// (truncation error below r^8/8! < 6e-9).
	// Truncation toward zero of a non-positive y-0.5 rounds y to nearest.
	k := int64(x*math.Log2E - 0.5)
	r := x - float64(k)*math.Ln2
	p := 1 + r*(1+r*(1.0/2+r*(1.0/6+r*(1.0/24+r*(1.0/120+r*(1.0/720+r*(1.0/5040)))))))
	return p * math.Float64frombits(uint64(k+1023)<<52)
}

// nucleus keeps the smallest set of most likely candidates whose weight
// reaches mass (top_p times the total; the token that crosses it is
// kept). Sorting the whole vocabulary for every token would cost as much
// as a decode step, so it first looks for a weight threshold whose upper
// set already holds that mass (the nucleus lies inside it), then finds the
// nucleus in that set by selection rather than sorting.
func (s *Sampler) nucleus(cand []int32, prob []float64, mass float64) ([]int32, []float64) {
	pmax := 0.0
	for _, q := range prob {
		pmax = max(pmax, q)
	}
	thr := pmax * 1e-2
	for thr > 1e-300 {
		var sum float64
		for _, q := range prob {
			if q >= thr {
				sum += q
			}
		}
		if sum >= mass {
			break
		}
		thr *= 1e-2
	}
	if thr <= 1e-300 {
		thr = 0
	}
	order := s.order[:0]
	for i, q := range prob {
		if q >= thr {
			order = append(order, int32(i))
		}
	}
	keep := nucleusSelect(order, prob, cand, mass)
	order = order[:keep]
	s.order = order
	// Gather the kept entries into their own buffers: compacting in place
	// would overwrite entries not yet read.
	kt, kp := s.keptTok[:0], s.keptProb[:0]
	for _, j := range order {
		kt = append(kt, cand[j])
		kp = append(kp, prob[j])
	}
	s.keptTok, s.keptProb = kt, kp
	return kt, kp
}

// nucleusSelect reorders idx (indices into prob and cand) so that
// idx[:k] is the nucleus, and returns k: the most likely entries, in
// descending order of prob with ties going to the lower token id, up to
// and including the first at which the running sum reaches need. It
// partitions around pivots (quickselect on mass) in expected linear time;
// the entries of idx[:k] are left in no particular order, but always in
// the same one for the same input.
func nucleusSelect(idx []int32, prob []float64, cand []int32, need float64) int {
	lo, hi := 0, len(idx)
	for lo < hi {
		// Median of three values as the pivot.
		a, b, c := prob[idx[lo]], prob[idx[lo+(hi-lo)/2]], prob[idx[hi-1]]
		pv := max(min(a, b), min(max(a, b), c))
		// Three-way partition of idx[lo:hi]: > pv, == pv, < pv.
		gt, i, lt := lo, lo, hi
		for i < lt {
			switch q := prob[idx[i]]; {
			case q > pv:
				idx[gt], idx[i] = idx[i], idx[gt]
				gt++
				i++
			case q < pv:
				lt--
				idx[lt], idx[i] = idx[i], idx[lt]
			default:
				i++
			}
		}
		var sumGT float64
		for _, j := range idx[lo:gt] {
			sumGT += prob[j]
		}
		if sumGT >= need && gt > lo {
			hi = gt // the nucleus ends among the larger entries
			continue
		}
		need -= sumGT
		// The entries equal to the pivot: lower token ids first.
		eq := idx[gt:lt]
		slices.SortFunc(eq, func(x, y int32) int { return int(cand[x]) - int(cand[y]) })
		for n, j := range eq {
			need -= prob[j]
			if need <= 0 {
				return gt + n + 1
			}
		}
		lo = lt // all of the larger and equal entries are in
	}
	return lo
}

// selectTopK moves the k largest values of w (by candidate) to cand[:k],
// in no particular order, by quickselect. Ties break towards the lower
// token id so the result is deterministic.
func selectTopK(cand []int32, w []float32, k int) {
	less := func(a, b int32) bool { // a ranks before b
		if w[a] != w[b] {
			return w[a] > w[b]
		}
		return a < b
	}
	lo, hi := 0, len(cand)-1
	for lo < hi {
		// Median of three as pivot keeps sorted inputs from going quadratic.
		mid := lo + (hi-lo)/2
		if less(cand[mid], cand[lo]) {
			cand[mid], cand[lo] = cand[lo], cand[mid]
		}
		if less(cand[hi], cand[lo]) {
			cand[hi], cand[lo] = cand[lo], cand[hi]
		}
		if less(cand[hi], cand[mid]) {
			cand[hi], cand[mid] = cand[mid], cand[hi]
		}
		pivot := cand[mid]
		i, j := lo, hi
		for i <= j {
			for less(cand[i], pivot) {
				i++
			}
			for less(pivot, cand[j]) {
				j--
			}
			if i <= j {
				cand[i], cand[j] = cand[j], cand[i]
				i++
				j--
			}
		}
		switch {
		case k-1 <= j:
			hi = j
		case k-1 >= i:
			lo = i
		default:
			return
		}
	}
}
