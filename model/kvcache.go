package model

import (
	"fmt"

	"github.com/tandem-ai/tandem/limits"
)

// MaxKVCacheBytes bounds one cache's key/value storage.
const MaxKVCacheBytes = limits.KVCacheBytes

// decodeChunkTokens is how many new tokens (over all rows) one pass of
// Decode processes; a longer prompt is fed in several passes. It bounds the
// scratch memory while keeping the matrix products large enough to run at
// full speed.
const decodeChunkTokens = 512

// KVCache holds, for up to `batch` sequences, the keys and values every
// layer computed for the tokens seen so far, plus all the scratch a decode
// step needs: Decode allocates nothing.
type KVCache struct {
	cfg           Config
	batch, maxLen int
	k, v          []float32 // [L, batch, maxLen, C]
	lens          []int

	chunk                int // token capacity of one pass
	tok, pos             []int32
	x, ln, mean, rstd    []float32 // [chunk,C], [chunk,C], [chunk], [chunk]
	qkv, atty, proj, fch []float32 // [chunk,3C], [chunk,C], [chunk,C], [chunk,4C]
	attScratch           []float32 // ScratchParts * DecodeScratchLen(maxLen)
	lastX, lastLn        []float32 // [batch,C]
	lastMean, lastRstd   []float32 // [batch]
	logits               []float32 // [batch,V]
	out                  [][]float32
	spans                []DecodeSpan
	done                 []int
	finished             []int // rows whose last token is in the current pass
	scratchParts         int   // attention scratch areas allocated
}

// NewKVCache allocates a cache for `batch` sequences of up to maxLen
// tokens each (maxLen <= n_positions).
func (m *Model) NewKVCache(batch, maxLen int) (*KVCache, error) {
	c := m.Config
	if batch <= 0 || maxLen <= 0 {
		return nil, fmt.Errorf("kv cache: batch=%d and maxLen=%d must be positive", batch, maxLen)
	}
	if maxLen > c.NPositions {
		return nil, fmt.Errorf("kv cache: maxLen=%d exceeds n_positions=%d", maxLen, c.NPositions)
	}
	L, C, V := int64(c.NLayer), int64(c.NEmbd), int64(c.VocabSize)
	if kv := 2 * L * int64(batch) * int64(maxLen) * C * 4; kv > MaxKVCacheBytes || int64(batch)*V*4 > MaxKVCacheBytes {
		return nil, fmt.Errorf("kv cache: batch=%d maxLen=%d needs %d MiB, limit %d MiB", batch, maxLen, kv>>20, int64(MaxKVCacheBytes)>>20)
	}
	k := m.Kernels
	kc := &KVCache{cfg: c, batch: batch, maxLen: maxLen, scratchParts: k.ScratchParts()}
	n := int(L) * batch * maxLen * int(C)
	kc.k, kc.v = make([]float32, n), make([]float32, n)
	kc.lens = make([]int, batch)
	kc.chunk = min(max(decodeChunkTokens, batch), batch*maxLen)
	ch, Ci := kc.chunk, int(C)
	kc.tok, kc.pos = make([]int32, ch), make([]int32, ch)
	kc.x, kc.ln = make([]float32, ch*Ci), make([]float32, ch*Ci)
	kc.mean, kc.rstd = make([]float32, ch), make([]float32, ch)
	kc.qkv, kc.atty = make([]float32, ch*3*Ci), make([]float32, ch*Ci)
	kc.proj, kc.fch = make([]float32, ch*Ci), make([]float32, ch*4*Ci)
	kc.attScratch = make([]float32, kc.scratchParts*DecodeScratchLen(maxLen))
	kc.lastX, kc.lastLn = make([]float32, batch*Ci), make([]float32, batch*Ci)
	kc.lastMean, kc.lastRstd = make([]float32, batch), make([]float32, batch)
	kc.logits = make([]float32, batch*int(V))
	kc.out = make([][]float32, batch)
	kc.spans = make([]DecodeSpan, 0, batch)
	kc.done = make([]int, batch)
	kc.finished = make([]int, 0, batch)
	return kc, nil
}

// Batch is the number of sequence slots.
func (c *KVCache) Batch() int { return c.batch }

// MaxLen is the token capacity of each slot.
func (c *KVCache) MaxLen() int { return c.maxLen }

// Len is the number of tokens cached for sequence b.
func (c *KVCache) Len(b int) int {
	if b < 0 || b >= c.batch {
		return 0
	}
	return c.lens[b]
}

// Reset empties every sequence; the memory is kept.
func (c *KVCache) Reset() { clear(c.lens) }

// ResetRow empties sequence b only, so a finished slot can take a new
// prompt while the others continue.
func (c *KVCache) ResetRow(b int) {
	if b >= 0 && b < c.batch {
		c.lens[b] = 0
	}
}

// Decode appends tokens[b] to sequence b for every b (ragged lengths are
// fine; an empty or missing row is skipped) and returns, per row, the
// logits [V] after its last new token, or nil for a skipped row.
// len(tokens) may be less than the cache's batch; later slots are skipped.
//
// The returned slices are views into the cache, overwritten by the next
// Decode: copy what must outlive it. On error nothing is appended.
//
// A step with at most 16 new tokens in all (vec.SmallM; every step after
// the prompts) is batch-invariant on AVX2 machines: each row's logits are
// bit-identical whichever other rows share the step, so seeded sampling
// gives the same text however requests were grouped. Larger prefills use
// BLAS, whose rounding can depend on the number of rows.
func (m *Model) Decode(c *KVCache, tokens [][]int32) ([][]float32, error) {
	cfg := m.Config
	pv, err := m.checkRows(c, tokens, "decode")
	if err != nil {
		return nil, err
	}
	for b := range c.out {
		c.out[b] = nil
	}
	clear(c.done)
	nOut := 0
	for {
		c.finished = c.finished[:0]
		n := c.pack(tokens)
		if n == 0 {
			break
		}
		m.decodePass(c, &pv, n)
		c.advance()
		// Gather the final hidden state of rows that ended in this pass.
		C := cfg.NEmbd
		for _, s := range c.spans {
			if c.done[s.Slot] == len(tokens[s.Slot]) {
				r := s.Start + s.Count - 1
				copy(c.lastX[len(c.finished)*C:], c.x[r*C:(r+1)*C])
				c.finished = append(c.finished, s.Slot)
			}
		}
		if f := len(c.finished); f > 0 {
			V := cfg.VocabSize
			k := m.Kernels
			k.LayerNormForward(c.lastLn, c.lastMean, c.lastRstd, c.lastX, pv[pLNFW], pv[pLNFB], f, C, cfg.LayerNormEpsilon)
			logits := c.logits[nOut*V : (nOut+f)*V]
			k.MatmulTransposedForward(logits, c.lastLn, pv[pWTE], f, C, V)
			for i, b := range c.finished {
				c.out[b] = logits[i*V : (i+1)*V : (i+1)*V]
			}
			nOut += f
		}
	}
	return c.out[:len(tokens)], nil
}

// checkRows checks that tokens can be appended to c's rows by m (op names
// the caller in the errors) and returns m's parameter views.
func (m *Model) checkRows(c *KVCache, tokens [][]int32, op string) (paramViews, error) {
	cfg := m.Config
	if c == nil {
		return paramViews{}, fmt.Errorf("%s: nil cache", op)
	}
	if c.cfg != cfg {
		return paramViews{}, fmt.Errorf("%s: cache was built for a different config", op)
	}
	if parts := m.Kernels.ScratchParts(); parts > c.scratchParts {
		return paramViews{}, fmt.Errorf("%s: the %s kernels need %d scratch areas, the cache has %d", op, m.Kernels.Name(), parts, c.scratchParts)
	}
	if len(tokens) > c.batch {
		return paramViews{}, fmt.Errorf("%s: %d rows, cache holds %d", op, len(tokens), c.batch)
	}
	pv, err := m.paramViews()
	if err != nil {
		return paramViews{}, err
	}
	limit := min(c.maxLen, cfg.NPositions)
	for b, row := range tokens {
		if n := c.lens[b] + len(row); n > limit {
			return paramViews{}, fmt.Errorf("%s: row %d would hold %d tokens, limit %d", op, b, n, limit)
		}
		for i, t := range row {
			if t < 0 || int(t) >= cfg.VocabSize {
				return paramViews{}, fmt.Errorf("%s: tokens[%d][%d]=%d outside the vocabulary [0,%d)", op, b, i, t, cfg.VocabSize)
			}
		}
	}
	return pv, nil
}

// pack lays out the next pass: up to c.chunk of the tokens not yet fed
// (c.done counts those fed, per row), row after row, into c.tok and c.pos,
// with one span per row it takes tokens from. It returns the number of
// tokens packed, 0 when every row is fed.
func (c *KVCache) pack(tokens [][]int32) int {
	c.spans = c.spans[:0]
	n := 0
	for b, row := range tokens {
		rem := len(row) - c.done[b]
		if rem == 0 || n == c.chunk {
			continue
		}
		take := min(rem, c.chunk-n)
		c.spans = append(c.spans, DecodeSpan{Slot: b, Start: n, Count: take, Pos: c.lens[b]})
		for i := 0; i < take; i++ {
			c.tok[n+i] = row[c.done[b]+i]
			c.pos[n+i] = int32(c.lens[b] + i)
		}
		n += take
	}
	return n
}

// advance records the pass pack laid out as cached and fed.
func (c *KVCache) advance() {
	for _, s := range c.spans {
		c.lens[s.Slot] += s.Count
		c.done[s.Slot] += s.Count
	}
}

// decodePass runs the blocks over the n packed tokens described by
// c.spans, appending their keys and values to the cache; the hidden
// states are left in c.x.
func (m *Model) decodePass(c *KVCache, p *paramViews, n int) {
	cfg := m.Config
	k := m.Kernels
	L, C, NH := cfg.NLayer, cfg.NEmbd, cfg.NHead
	eps := cfg.LayerNormEpsilon
	layerKV := c.batch * c.maxLen * C
	k.EmbedAt(c.x, c.tok[:n], c.pos[:n], p[pWTE], p[pWPE], n, C)
	for l := 0; l < L; l++ {
		lw := layerOf(p, l, C)
		k.LayerNormForward(c.ln, c.mean, c.rstd, c.x, lw.ln1w, lw.ln1b, n, C, eps)
		k.MatmulForward(c.qkv, c.ln, lw.qkvw, lw.qkvb, n, C, 3*C)
		k.AttentionDecode(c.atty, c.qkv, c.k[l*layerKV:(l+1)*layerKV], c.v[l*layerKV:(l+1)*layerKV], c.spans, C, NH, c.maxLen, c.attScratch)
		k.MatmulForward(c.proj, c.atty, lw.attprojw, lw.attprojb, n, C, C)
		k.ResidualForward(c.x, c.x, c.proj, n*C)
		k.LayerNormForward(c.ln, c.mean, c.rstd, c.x, lw.ln2w, lw.ln2b, n, C, eps)
		k.MatmulForward(c.fch, c.ln, lw.fcw, lw.fcb, n, C, 4*C)
		k.GELUForward(c.fch, c.fch, n*4*C)
		k.MatmulForward(c.proj, c.fch, lw.fcprojw, lw.fcprojb, n, 4*C, C)
		k.ResidualForward(c.x, c.x, c.proj, n*C)
	}
}

// CopyRow makes sequence dst a copy of sequence src: the choices of one
// prompt share its prefill this way.
func (c *KVCache) CopyRow(dst, src int) {
	if dst < 0 || dst >= c.batch || src < 0 || src >= c.batch || dst == src {
		return
	}
	n, C := c.lens[src], c.cfg.NEmbd
	for l := range c.cfg.NLayer {
		base := l * c.batch * c.maxLen * C
		from, to := base+src*c.maxLen*C, base+dst*c.maxLen*C
		copy(c.k[to:to+n*C], c.k[from:from+n*C])
		copy(c.v[to:to+n*C], c.v[from:from+n*C])
	}
	c.lens[dst] = n
}
