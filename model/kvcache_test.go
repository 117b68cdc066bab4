package model

import (
	"math"
	"runtime"
	"strings"
	"testing"

	"github.com/tandem-ai/tandem/model/internal/vec"
)

// lastLogits runs a full Forward over seq and returns the logits of its
// last position.
func lastLogits(t *testing.T, m *Model, seq []int32) []float32 {
	t.Helper()
	if _, err := m.Forward(seq, 1, len(seq), nil); err != nil {
		t.Fatal(err)
	}
	V := m.Config.VocabSize
	return append([]float32(nil), m.Logits()[(len(seq)-1)*V:]...)
}

func assertClose(t *testing.T, label string, got, want []float32, tol float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: len %d, want %d", label, len(got), len(want))
	}
	for i := range got {
		if math.Abs(float64(got[i]-want[i])) > tol*(1+math.Abs(float64(want[i]))) {
			t.Fatalf("%s: [%d] = %g, want %g", label, i, got[i], want[i])
		}
	}
}

func TestDecodeMatchesFullForward(t *testing.T) {
	cfg := Config{NLayer: 2, NHead: 2, NEmbd: 16, NPositions: 160, VocabSize: 50, LayerNormEpsilon: 1e-5}
	m, err := New(cfg, 11)
	if err != nil {
		t.Fatal(err)
	}
	for i := range m.Params {
		m.Params[i] *= 4 // sharper attention than the 0.02 init gives
	}
	rng := newTestRand(11)
	for _, chunk := range []int{0, 3} { // 0: default pass size; 3: prompts split over passes
		c, err := m.NewKVCache(3, 150)
		if err != nil {
			t.Fatal(err)
		}
		if chunk > 0 {
			c.chunk = chunk
		}
		history := make([][]int32, 3)
		// Ragged steps: a long prefill (more than one query tile in row 0),
		// skipped rows, several tokens at once, then single tokens.
		steps := [][]int{{70, 0, 3}, {1, 4, 0}, {0, 1, 2}, {1, 1, 1}, {2, 0, 1}}
		for si, lens := range steps {
			feed := make([][]int32, 3)
			for b, n := range lens {
				feed[b] = randTokens(rng, n, cfg.VocabSize)
				history[b] = append(history[b], feed[b]...)
			}
			out, err := m.Decode(c, feed)
			if err != nil {
				t.Fatal(err)
			}
			for b, n := range lens {
				if c.Len(b) != len(history[b]) {
					t.Fatalf("step %d row %d: Len %d, want %d", si, b, c.Len(b), len(history[b]))
				}
				if n == 0 {
					if out[b] != nil {
						t.Fatalf("step %d row %d: skipped row has logits", si, b)
					}
					continue
				}
				got := append([]float32(nil), out[b]...)
				assertClose(t, "decode vs forward", got, lastLogits(t, m, history[b]), 2e-4)
			}
		}
		// Reset empties everything and the cache is reusable.
		c.Reset()
		out, err := m.Decode(c, [][]int32{{5, 6, 7}})
		if err != nil {
			t.Fatal(err)
		}
		assertClose(t, "after reset", out[0], lastLogits(t, m, []int32{5, 6, 7}), 2e-4)
		if c.Len(0) != 3 || c.Len(1) != 0 {
			t.Fatalf("lens after reset: %d %d", c.Len(0), c.Len(1))
		}
	}
}

func TestDecodeLimits(t *testing.T) {
	m := newTiny(t, 12) // n_positions 32
	if _, err := m.NewKVCache(2, 33); err == nil || !strings.Contains(err.Error(), "n_positions") {
		t.Fatalf("maxLen beyond n_positions: %v", err)
	}
	if _, err := m.NewKVCache(0, 8); err == nil {
		t.Fatal("zero batch accepted")
	}
	c, err := m.NewKVCache(2, 8)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Decode(c, [][]int32{make([]int32, 6), make([]int32, 9)}); err == nil || !strings.Contains(err.Error(), "row 1") {
		t.Fatalf("overflowing row: %v", err)
	}
	if c.Len(0) != 0 {
		t.Fatal("a failed Decode appended tokens")
	}
	if _, err := m.Decode(c, [][]int32{{1, 50}}); err == nil || !strings.Contains(err.Error(), "tokens[0][1]") {
		t.Fatalf("bad token: %v", err)
	}
	if _, err := m.Decode(c, make([][]int32, 3)); err == nil {
		t.Fatal("more rows than the cache accepted")
	}
	if _, err := m.Decode(c, [][]int32{make([]int32, 8)}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Decode(c, [][]int32{{1}}); err == nil {
		t.Fatal("appending past maxLen accepted")
	}
	other, _ := New(Config{NLayer: 1, NHead: 2, NEmbd: 16, NPositions: 32, VocabSize: 50, LayerNormEpsilon: 1e-5}, 1)
	if _, err := other.Decode(c, [][]int32{{1}}); err == nil {
		t.Fatal("cache from another config accepted")
	}
}

func TestDecodeAllocatesNoBuffers(t *testing.T) {
	cfg := Config{NLayer: 2, NHead: 4, NEmbd: 64, NPositions: 64, VocabSize: 1000, LayerNormEpsilon: 1e-5}
	m, err := New(cfg, 13)
	if err != nil {
		t.Fatal(err)
	}
	c, err := m.NewKVCache(4, 64)
	if err != nil {
		t.Fatal(err)
	}
	feed := [][]int32{{1}, {2}, {3}, {4}}
	step := func() {
		if c.Len(0) >= 60 {
			c.Reset()
		}
		if _, err := m.Decode(c, feed); err != nil {
			t.Fatal(err)
		}
	}
	step()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	const steps = 50
	for i := 0; i < steps; i++ {
		step()
	}
	runtime.ReadMemStats(&after)
	// The logits alone are 16 KB per step; handing work to the pool may
	// cost a few small closures, but no buffer may be allocated.
	perStep := (after.TotalAlloc - before.TotalAlloc) / steps
	t.Logf("%d bytes, %d allocations per step", perStep, (after.Mallocs-before.Mallocs)/steps)
	if BLASName == "gonum" {
		return // gonum's SGEMM allocates its own work space on every call
	}
	if perStep > 1024 {
		t.Fatalf("Decode allocated %d bytes per step", perStep)
	}
}

// With the small-M kernels a decode step is batch-invariant: a row's logits
// are bit-identical whether it runs alone or beside other rows, so seeded
// sampling does not depend on how requests were batched.
func TestDecodeIsBatchInvariant(t *testing.T) {
	if !vec.GemmAvailable() {
		t.Skip("batch invariance comes from the AVX2 small-M kernels")
	}
	m := newTiny(t, 14)
	rng := newTestRand(14)
	prompts := [][]int32{randTokens(rng, 5, 50), randTokens(rng, 2, 50), randTokens(rng, 7, 50)}
	together, err := m.NewKVCache(3, 16)
	if err != nil {
		t.Fatal(err)
	}
	alone := make([]*KVCache, 3)
	for b := range alone {
		if alone[b], err = m.NewKVCache(1, 16); err != nil {
			t.Fatal(err)
		}
	}
	// The same schedule (prefill, then one token per step) run once with
	// the three sequences together and once with each on its own.
	feed := prompts
	for step := 0; step < 4; step++ {
		out, err := m.Decode(together, feed)
		if err != nil {
			t.Fatal(err)
		}
		for b := range feed {
			got, err := m.Decode(alone[b], [][]int32{feed[b]})
			if err != nil {
				t.Fatal(err)
			}
			for i, v := range got[0] {
				if math.Float32bits(v) != math.Float32bits(out[b][i]) {
					t.Fatalf("step %d row %d logit %d: alone %g, batched %g", step, b, i, v, out[b][i])
				}
			}
		}
		feed = [][]int32{{int32(step)}, {int32(step + 1)}, {int32(step + 2)}}
	}
}
