//go:build cuda

package gpu

import (
	"errors"
	"fmt"
	"unsafe"

	"gorgonia.org/cu"

	"github.com/tandem-ai/tandem/model"
)

// Decoder is incremental decoding on the device: a KV cache for `batch`
// sequences of up to maxLen tokens and all the scratch a decode step
// needs, allocated once. Decode has model.Model.Decode's contract (ragged
// rows, prompts fed in passes, logits of each row's last new token);
// DecodeGreedy takes the argmax on the device and moves one token per row
// back instead of a row of logits. It implements model.Decoder.
type Decoder struct {
	gm                   *Model
	batch, maxLen, chunk int
	buf                  devBuf
	closed               bool

	kc, vc                  cu.DevicePtr // [L, batch, maxLen, C]
	x, ln, qkv, atty, proj  cu.DevicePtr // [chunk, C|3C|C|C]
	fch                     cu.DevicePtr // [chunk, 4C]
	meta                    cu.DevicePtr // int32: tok [chunk], pos [chunk], slot [chunk], finished rows [batch]
	lastX, lastLn, logits   cu.DevicePtr // [batch, C], [batch, C], [batch, V]
	argmax                  cu.DevicePtr // int32 [batch]
	hostMeta                []int32
	hostLogits              []float32 // page-locked, [batch, V]
	hostArgmax              []int32
	lens, done              []int
	out                     [][]float32
	spans                   []model.DecodeSpan
	finished, finishedSlots []int
	outRow                  []int // per slot: its row among the logits of the call, or -1
}

var _ model.Decoder = (*Decoder)(nil)

// maxDecodeChunk bounds the new tokens of one decode pass (the scratch is
// sized for it); longer prompts are fed in several passes.
const maxDecodeChunk = 4096

// NewDecoder allocates a cache for batch sequences of up to maxLen tokens
// (maxLen <= n_positions).
func (gm *Model) NewDecoder(batch, maxLen int) (*Decoder, error) {
	c := gm.cfg
	if batch <= 0 || maxLen <= 0 {
		return nil, fmt.Errorf("gpu: decoder: batch=%d and maxLen=%d must be positive", batch, maxLen)
	}
	if maxLen > c.NPositions {
		return nil, fmt.Errorf("gpu: decoder: maxLen=%d exceeds n_positions=%d", maxLen, c.NPositions)
	}
	L, C, V := int64(c.NLayer), int64(c.NEmbd), int64(c.VocabSize)
	if kv := 2 * L * int64(batch) * int64(maxLen) * C * 4; kv > model.MaxKVCacheBytes {
		return nil, fmt.Errorf("gpu: decoder: batch=%d maxLen=%d needs %d MiB of cache, limit %d MiB", batch, maxLen, kv>>20, int64(model.MaxKVCacheBytes)>>20)
	}
	dec := &Decoder{gm: gm, batch: batch, maxLen: maxLen}
	dec.chunk = int(min(max(maxDecodeChunk, int64(batch)), int64(batch)*int64(maxLen)))
	ch, B := int64(dec.chunk), int64(batch)
	layout := func(c *carver) {
		dec.kc, dec.vc = c.take(L*B*int64(maxLen)*C), c.take(L*B*int64(maxLen)*C)
		dec.x, dec.ln, dec.qkv = c.take(ch*C), c.take(ch*C), c.take(ch*3*C)
		dec.atty, dec.proj, dec.fch = c.take(ch*C), c.take(ch*C), c.take(ch*4*C)
		dec.meta = c.take(3*ch + B)
		dec.lastX, dec.lastLn, dec.logits = c.take(B*C), c.take(B*C), c.take(B*V)
		dec.argmax = c.take(B)
	}
	var measure carver
	layout(&measure)

	leave, err := gm.enter()
	if err != nil {
		return nil, err
	}
	defer leave()
	d := gm.dev
	if dec.buf, err = d.alloc(measure.size(), fmt.Sprintf("decoder for %d rows of %d tokens", batch, maxLen)); err != nil {
		return nil, err
	}
	cv := carver{base: dec.buf.ptr}
	layout(&cv)
	if dec.hostLogits, err = hostAlloc(int(B * V)); err != nil {
		d.free(&dec.buf)
		return nil, err
	}
	dec.hostMeta = make([]int32, 3*dec.chunk+batch)
	dec.hostArgmax = make([]int32, batch)
	dec.lens, dec.done, dec.outRow = make([]int, batch), make([]int, batch), make([]int, batch)
	dec.out = make([][]float32, batch)
	dec.spans = make([]model.DecodeSpan, 0, batch)
	dec.finished, dec.finishedSlots = make([]int, 0, batch), make([]int, 0, batch)
	return dec, nil
}

// DecoderFactory adapts NewDecoder to model.GenerateOptions.NewDecoder, so
// that model.Generate decodes on the device.
func (gm *Model) DecoderFactory() model.DecoderFactory {
	return func(batch, maxLen int) (model.Decoder, error) {
		dec, err := gm.NewDecoder(batch, maxLen)
		if err != nil {
			return nil, err
		}
		return dec, nil
	}
}

// Close frees the cache and scratch.
func (dec *Decoder) Close() error {
	if dec.closed {
		return nil
	}
	leave, err := dec.gm.dev.enter()
	if err != nil {
		return err
	}
	defer leave()
	dec.gm.dev.stream.Synchronize() // nothing queued may still use the memory
	dec.gm.dev.free(&dec.buf)
	hostFree(dec.hostLogits)
	dec.hostLogits = nil
	dec.closed = true
	return nil
}

// Batch is the number of sequence slots.
func (dec *Decoder) Batch() int { return dec.batch }

// Len is the number of tokens cached for sequence b.
func (dec *Decoder) Len(b int) int {
	if b < 0 || b >= dec.batch {
		return 0
	}
	return dec.lens[b]
}

// Reset empties every sequence; the memory is kept.
func (dec *Decoder) Reset() { clear(dec.lens) }

// ResetRow empties sequence b only.
func (dec *Decoder) ResetRow(b int) {
	if b >= 0 && b < dec.batch {
		dec.lens[b] = 0
	}
}

// Decode appends tokens[b] to sequence b for every b and returns, per row,
// the logits [V] after its last new token (nil for a row with no tokens),
// exactly as model.Model.Decode. The slices are overwritten by the next
// call. On error nothing is appended.
func (dec *Decoder) Decode(tokens [][]int32) ([][]float32, error) {
	nOut, err := dec.decode(tokens, false)
	if err != nil {
		return nil, err
	}
	V := dec.gm.cfg.VocabSize
	for b := range dec.out {
		dec.out[b] = nil
	}
	for b := range tokens {
		if r := dec.outRow[b]; r >= 0 && r < nOut {
			dec.out[b] = dec.hostLogits[r*V : (r+1)*V : (r+1)*V]
		}
	}
	return dec.out[:len(tokens)], nil
}

// DecodeGreedy is Decode followed by the greedy choice: next[b] is the
// argmax of row b's logits (lowest index on ties, like model.Sampler at
// temperature 0 without penalties), or -1 for a row with no tokens. Only
// the chosen tokens leave the device.
func (dec *Decoder) DecodeGreedy(tokens [][]int32, next []int32) error {
	if len(next) < len(tokens) {
		return fmt.Errorf("gpu: decode: len(next)=%d < %d rows", len(next), len(tokens))
	}
	if _, err := dec.decode(tokens, true); err != nil {
		return err
	}
	for b := range tokens {
		next[b] = -1
		if r := dec.outRow[b]; r >= 0 {
			next[b] = dec.hostArgmax[r]
		}
	}
	return nil
}

// decode runs the passes and leaves the logits (or, greedy, the argmax) of
// the nOut finishing rows on the host; outRow maps slots to those rows.
func (dec *Decoder) decode(tokens [][]int32, greedy bool) (nOut int, err error) {
	if dec.closed {
		return 0, errors.New("gpu: decoder is closed")
	}
	cfg := dec.gm.cfg
	if len(tokens) > dec.batch {
		return 0, fmt.Errorf("decode: %d rows, cache holds %d", len(tokens), dec.batch)
	}
	limit := min(dec.maxLen, cfg.NPositions)
	for b, row := range tokens {
		if n := dec.lens[b] + len(row); n > limit {
			return 0, fmt.Errorf("decode: row %d would hold %d tokens, limit %d", b, n, limit)
		}
		for i, t := range row {
			if t < 0 || int(t) >= cfg.VocabSize {
				return 0, fmt.Errorf("decode: tokens[%d][%d]=%d outside the vocabulary [0,%d)", b, i, t, cfg.VocabSize)
			}
		}
	}
	leave, err := dec.gm.enter()
	if err != nil {
		return 0, err
	}
	defer leave()
	d := dec.gm.dev
	for b := range dec.outRow {
		dec.outRow[b] = -1
	}
	clear(dec.done)
	lens := append([]int(nil), dec.lens...) // committed only when every pass succeeded
	C, V := cfg.NEmbd, cfg.VocabSize
	for {
		dec.spans, dec.finished, dec.finishedSlots = dec.spans[:0], dec.finished[:0], dec.finishedSlots[:0]
		tok, pos, slot := dec.hostMeta[:dec.chunk], dec.hostMeta[dec.chunk:2*dec.chunk], dec.hostMeta[2*dec.chunk:3*dec.chunk]
		fin := dec.hostMeta[3*dec.chunk:]
		n := 0
		for b, row := range tokens {
			rem := len(row) - dec.done[b]
			if rem == 0 || n == dec.chunk {
				continue
			}
			take := min(rem, dec.chunk-n)
			dec.spans = append(dec.spans, model.DecodeSpan{Slot: b, Start: n, Count: take, Pos: lens[b]})
			for i := 0; i < take; i++ {
				tok[n+i] = row[dec.done[b]+i]
				pos[n+i] = int32(lens[b] + i)
				slot[n+i] = int32(b)
			}
			if dec.done[b]+take == len(row) {
				fin[len(dec.finished)] = int32(n + take - 1)
				dec.finished = append(dec.finished, n+take-1)
				dec.finishedSlots = append(dec.finishedSlots, b)
			}
			n += take
		}
		if n == 0 {
			break
		}
		d.upload(dec.meta, unsafe.Pointer(&dec.hostMeta[0]), int64(len(dec.hostMeta)), "decode tokens")
		dec.pass(n)
		for _, s := range dec.spans {
			lens[s.Slot] += s.Count
			dec.done[s.Slot] += s.Count
		}
		if f := len(dec.finished); f > 0 {
			// The final LayerNorm and the head for the rows that ended.
			pp := dec.gm.params.ptr
			lay := &dec.gm.lay
			d.gatherRows(dec.lastX, dec.x, at(dec.meta, 3*int64(dec.chunk)), f, C)
			d.layerNormForward(dec.lastLn, 0, 0, dec.lastX, at(pp, lay.lnfw), at(pp, lay.lnfb), f, C, cfg.LayerNormEpsilon)
			d.matmulTransposedForward(at(dec.logits, int64(nOut)*int64(V)), dec.lastLn, at(pp, lay.wte), f, C, V)
			for i, b := range dec.finishedSlots {
				dec.outRow[b] = nOut + i
			}
			nOut += f
		}
	}
	if nOut > 0 {
		if greedy {
			d.argmaxRows(dec.argmax, dec.logits, nOut, V, int64(V))
			d.download(unsafe.Pointer(&dec.hostArgmax[0]), dec.argmax, int64(nOut), "greedy tokens")
		} else {
			d.download(unsafe.Pointer(&dec.hostLogits[0]), dec.logits, int64(nOut)*int64(V), "logits")
		}
	}
	if err := d.sync(); err != nil {
		return 0, err
	}
	copy(dec.lens, lens)
	return nOut, nil
}

// pass runs the blocks over the n packed tokens whose ids, positions and
// slots are in meta, appending their keys and values to the cache; the
// hidden states are left in x. It mirrors model.Model's decodePass.
func (dec *Decoder) pass(n int) {
	gm, d := dec.gm, dec.gm.dev
	cfg := gm.cfg
	L, C, NH := cfg.NLayer, cfg.NEmbd, cfg.NHead
	eps := cfg.LayerNormEpsilon
	pp := gm.params.ptr
	nc := int64(n) * int64(C)
	ch := int64(dec.chunk)
	tok, pos, slot := dec.meta, at(dec.meta, ch), at(dec.meta, 2*ch)
	layerKV := int64(dec.batch) * int64(dec.maxLen) * int64(C)
	d.encoderForward(dec.x, tok, pos, 1, at(pp, gm.lay.wte), at(pp, gm.lay.wpe), n, C)
	for l := 0; l < L; l++ {
		w := gm.lay.layer(pp, l)
		kc, vc := at(dec.kc, int64(l)*layerKV), at(dec.vc, int64(l)*layerKV)
		d.layerNormForward(dec.ln, 0, 0, dec.x, w.ln1w, w.ln1b, n, C, eps)
		d.matmulForward(dec.qkv, dec.ln, w.qkvw, w.qkvb, n, C, 3*C)
		d.decodeAttention(dec.atty, dec.qkv, kc, vc, slot, pos, n, C, NH, dec.maxLen)
		d.matmulForward(dec.proj, dec.atty, w.attprojw, w.attprojb, n, C, C)
		d.residualForward(dec.x, dec.x, dec.proj, nc)
		d.layerNormForward(dec.ln, 0, 0, dec.x, w.ln2w, w.ln2b, n, C, eps)
		d.matmulForward(dec.fch, dec.ln, w.fcw, w.fcb, n, C, 4*C)
		d.geluForward(dec.fch, dec.fch, 4*nc)
		d.matmulForward(dec.proj, dec.fch, w.fcprojw, w.fcprojb, n, 4*C, C)
		d.residualForward(dec.x, dec.x, dec.proj, nc)
	}
}
