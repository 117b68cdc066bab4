package model

import (
	"math"

	"github.com/tandem-ai/tandem/model/internal/vec"
)

// Attention runs one task per (batch row, head), spread over the pool, and
// inside a task uses single-threaded SGEMMs (SGEMV for a single query) that read the heads in place
// from the interleaved qkv layout (row stride 3C). Causality is exploited
// by working in tiles of attTile query rows: tile [r0, r1) only needs keys
// [0, r1), which halves the arithmetic for long sequences.
const attTile = 64

// softmaxPrefix turns row[:valid] into a softmax and zeroes row[valid:].
func softmaxPrefix(row []float32, valid int) {
	p := row[:valid]
	sum := vec.ExpShift(p, p, vec.Max(p))
	inv := 1 / sum
	for j := range p {
		p[j] *= inv
	}
	clear(row[valid:])
}

func (k *cpuKernels) AttentionForward(out, att, qkv []float32, B, T, C, NH int) {
	if !k.pool.split(B*NH, T*T*C/NH) {
		attentionHeads(out, att, qkv, T, C, NH, 0, B*NH)
		return
	}
	k.pool.parallelFor(B*NH, 1, func(_, lo, hi int) { attentionHeads(out, att, qkv, T, C, NH, lo, hi) })
}

// attentionHeads runs the forward pass of (batch row, head) pairs [lo, hi).
func attentionHeads(out, att, qkv []float32, T, C, NH, lo, hi int) {
	hs := C / NH
	C3 := 3 * C
	scale := float32(1 / math.Sqrt(float64(hs)))
	for bh := lo; bh < hi; bh++ {
		b, h := bh/NH, bh%NH
		base := b*T*C3 + h*hs
		q, key, val := qkv[base:], qkv[base+C:], qkv[base+2*C:]
		a := att[bh*T*T : (bh+1)*T*T]
		for r0 := 0; r0 < T; r0 += attTile {
			r1 := min(r0+attTile, T)
			sgemmOne(false, true, r1-r0, r1, hs, scale, q[r0*C3:], C3, key, C3, 0, a[r0*T:], T)
		}
		for t := 0; t < T; t++ {
			softmaxPrefix(a[t*T:(t+1)*T], t+1)
		}
		o := out[b*T*C+h*hs:]
		for r0 := 0; r0 < T; r0 += attTile {
			r1 := min(r0+attTile, T)
			sgemmOne(false, false, r1-r0, hs, r1, 1, a[r0*T:], T, val, C3, 0, o[r0*C:], C)
		}
	}
}

func (k *cpuKernels) AttentionBackward(dqkv, datt, dout, qkv, att []float32, B, T, C, NH int) {
	if !k.pool.split(B*NH, T*T*C/NH) {
		attentionGradHeads(dqkv, datt, dout, qkv, att, T, C, NH, 0, B*NH)
		return
	}
	k.pool.parallelFor(B*NH, 1, func(_, lo, hi int) { attentionGradHeads(dqkv, datt, dout, qkv, att, T, C, NH, lo, hi) })
}

// attentionGradHeads runs the backward pass of (batch row, head) pairs
// [lo, hi).
func attentionGradHeads(dqkv, datt, dout, qkv, att []float32, T, C, NH, lo, hi int) {
	hs := C / NH
	C3 := 3 * C
	scale := float32(1 / math.Sqrt(float64(hs)))
	for bh := lo; bh < hi; bh++ {
		b, h := bh/NH, bh%NH
		base := b*T*C3 + h*hs
		q, key, val := qkv[base:], qkv[base+C:], qkv[base+2*C:]
		dq, dk, dv := dqkv[base:], dqkv[base+C:], dqkv[base+2*C:]
		a := att[bh*T*T : (bh+1)*T*T]
		da := datt[bh*T*T : (bh+1)*T*T]
		do := dout[b*T*C+h*hs:]
		// datt = dout @ vᵀ, lower triangle by row tiles.
		for r0 := 0; r0 < T; r0 += attTile {
			r1 := min(r0+attTile, T)
			sgemmOne(false, true, r1-r0, r1, hs, 1, do[r0*C:], C, val, C3, 0, da[r0*T:], T)
		}
		// Through the softmax (and the score scale), in place.
		for t := 0; t < T; t++ {
			ar := a[t*T : t*T+t+1]
			dr := da[t*T : (t+1)*T]
			var dot float32
			for j, p := range ar {
				dot += p * dr[j]
			}
			for j, p := range ar {
				dr[j] = p * (dr[j] - dot) * scale
			}
			clear(dr[t+1:])
		}
		for r0 := 0; r0 < T; r0 += attTile {
			r1 := min(r0+attTile, T)
			// dq = dpre @ k over the keys the tile saw.
			sgemmOne(false, false, r1-r0, hs, r1, 1, da[r0*T:], T, key, C3, 0, dq[r0*C3:], C3)
			// Key/value tile [r0, r1) is seen by queries [r0, T):
			// dv = attᵀ @ dout, dk = dpreᵀ @ q over those queries.
			sgemmOne(true, false, r1-r0, hs, T-r0, 1, a[r0*T+r0:], T, do[r0*C:], C, 0, dv[r0*C3:], C3)
			sgemmOne(true, false, r1-r0, hs, T-r0, 1, da[r0*T+r0:], T, q[r0*C3:], C3, 0, dk[r0*C3:], C3)
		}
	}
}

func (k *cpuKernels) AttentionDecode(out, qkv, kCache, vCache []float32, spans []DecodeSpan, C, NH, maxLen int, scratch []float32) {
	work := 0
	for _, s := range spans {
		work += s.Count * (s.Pos + s.Count) * C
	}
	if !k.pool.split(len(spans)*NH, work/max(1, len(spans)*NH)) {
		attentionDecodeTasks(out, qkv, kCache, vCache, spans, C, NH, maxLen, scratch, 0, len(spans)*NH)
		return
	}
	per := DecodeScratchLen(maxLen)
	k.pool.parallelFor(len(spans)*NH, 1, func(part, lo, hi int) {
		attentionDecodeTasks(out, qkv, kCache, vCache, spans, C, NH, maxLen, scratch[part*per:(part+1)*per], lo, hi)
	})
}

// attentionDecodeTasks runs tasks [lo, hi), task = span*NH + head, using
// scr as score scratch.
func attentionDecodeTasks(out, qkv, kCache, vCache []float32, spans []DecodeSpan, C, NH, maxLen int, scr []float32, lo, hi int) {
	hs := C / NH
	C3 := 3 * C
	scale := float32(1 / math.Sqrt(float64(hs)))
	for task := lo; task < hi; task++ {
		s, h := spans[task/NH], task%NH
		slot := s.Slot * maxLen * C
		// Append this head's keys and values for the new positions.
		for i := 0; i < s.Count; i++ {
			src := (s.Start+i)*C3 + h*hs
			dst := slot + (s.Pos+i)*C + h*hs
			copy(kCache[dst:dst+hs], qkv[src+C:src+C+hs])
			copy(vCache[dst:dst+hs], qkv[src+2*C:src+2*C+hs])
		}
		keys, vals := kCache[slot+h*hs:], vCache[slot+h*hs:]
		for i0 := 0; i0 < s.Count; i0 += decodeQueryTile {
			i1 := min(i0+decodeQueryTile, s.Count)
			m, L := i1-i0, s.Pos+i1
			sgemmOne(false, true, m, L, hs, scale, qkv[(s.Start+i0)*C3+h*hs:], C3, keys, C, 0, scr, L)
			for r := 0; r < m; r++ {
				softmaxPrefix(scr[r*L:(r+1)*L], s.Pos+i0+r+1)
			}
			sgemmOne(false, false, m, hs, L, 1, scr, L, vals, C, 0, out[(s.Start+i0)*C+h*hs:], C)
		}
	}
}
