package recsys

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// TestSelectKeyOrder checks that sorting packed keys gives the list order,
// negative, zero and tied similarities included, and that keys unpack.
// (similarity never returns -0, which the keys would order apart from +0.)
func TestSelectKeyOrder(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(1, 2))
	sims := []float32{-1, -0.5, 0, 1e-30, 0.25, 0.25, 0.5, 1}
	var ns []Neighbor
	for range 500 {
		ns = append(ns, Neighbor{ID: rng.Int32N(1 << 30), Sim: sims[rng.IntN(len(sims))]})
	}
	keys := make([]uint64, len(ns))
	for i, n := range ns {
		keys[i] = selectKey(n)
		if back := fromSelectKey(keys[i]); back.ID != n.ID || math.Float32bits(back.Sim) != math.Float32bits(n.Sim) {
			t.Fatalf("%v packs and unpacks to %v", n, back)
		}
	}
	slices.Sort(keys)
	slices.SortStableFunc(ns, cmpNeighbor)
	for i := range keys {
		if got := fromSelectKey(keys[i]); got != ns[i] {
			t.Fatalf("position %d: key order gives %v, list order %v", i, got, ns[i])
		}
	}
}
