package recsys

import (
	"cmp"
	"context"
	"math"
	"slices"
	"testing"
)

// brute is a dense, direct evaluation of the similarity definition, the
// reference the sparse kernels are checked against.
type brute struct {
	sim     []map[int32]float64 // every kept pair's similarity, by row
	ranking [][]Neighbor        // every kept pair by (float32 sim desc, id asc)
	lists   [][]Neighbor        // the first K of ranking
	norm    []float64
}

func bruteSide(st *Store, side Side, cfg SimConfig, base float64) brute {
	cfg = cfg.withDefaults()
	nr, nf := st.users.len(), st.items.len()
	rowNames, featNames := st.users, st.items
	if side == SideItems {
		nr, nf = nf, nr
		rowNames, featNames = featNames, rowNames
	}
	// Dense matrix with an explicit "has an entry" mask.
	val := make([][]float64, nr)
	has := make([][]bool, nr)
	for r := range nr {
		val[r] = make([]float64, nf)
		has[r] = make([]bool, nf)
		for f := range nf {
			u, i := rowNames.name(int32(r)), featNames.name(int32(f))
			if side == SideItems {
				u, i = i, u
			}
			if v, ok := st.Value(u, i); ok {
				val[r][f], has[r][f] = v, true
			}
		}
	}
	if base == 0 {
		base = float64(nr)
	}
	a := make([]float64, nf)
	for f := range nf {
		n := 0.0
		for r := range nr {
			if has[r][f] {
				n++
			}
		}
		switch cfg.Weighting {
		case WeightNone:
			a[f] = 1
		case WeightIDF:
			a[f] = math.Log(1 + base/n)
		case WeightBM25:
			a[f] = math.Max(0, math.Log(1+(base-n+0.5)/(n+0.5)))
		case WeightGiven:
			a[f] = 1
			if w, ok := cfg.Given[featNames.name(int32(f))]; ok {
				a[f] = w
			}
		}
	}
	b := brute{sim: make([]map[int32]float64, nr), ranking: make([][]Neighbor, nr), lists: make([][]Neighbor, nr), norm: make([]float64, nr)}
	for r := range nr {
		for f := range nf {
			b.norm[r] += a[f] * val[r][f] * val[r][f]
		}
		b.norm[r] = math.Sqrt(b.norm[r])
	}
	for r := range nr {
		b.sim[r] = map[int32]float64{}
		var cands []Neighbor
		for r2 := range nr {
			if r2 == r {
				continue
			}
			var dot float64
			n := 0
			for f := range nf {
				if has[r][f] && has[r2][f] {
					dot += a[f] * val[r][f] * val[r2][f]
					n++
				}
			}
			if n == 0 || n < cfg.MinOverlap || b.norm[r] == 0 || b.norm[r2] == 0 {
				continue
			}
			s := dot / (b.norm[r] * b.norm[r2])
			s *= float64(n) / (float64(n) + cfg.Shrinkage)
			if !(s > cfg.MinSimilarity) {
				continue
			}
			b.sim[r][int32(r2)] = s
			cands = append(cands, Neighbor{ID: int32(r2), Sim: float32(s)})
		}
		slices.SortFunc(cands, cmpNeighbor)
		b.ranking[r] = cands
		b.lists[r] = cands[:min(len(cands), cfg.K)]
	}
	return b
}

const simTol = 1e-6

// tops is a side's public table: the first K of every list.
func tops(ss *simSide) [][]Neighbor {
	out := make([][]Neighbor, len(ss.nb))
	for r := range out {
		out[r] = ss.top(int32(r))
	}
	return out
}

// checkSide checks a side's public table against the reference, and the
// invariant its internal lists keep: each is the exact best len(list) rows,
// all of them when marked complete, at least K otherwise, and its summary
// matches it.
func checkSide(t *testing.T, what string, ss *simSide, ref brute) {
	t.Helper()
	checkLists(t, what, tops(ss), ref.lists, ref)
	prefix := make([][]Neighbor, len(ss.nb))
	for r, l := range ss.nb {
		want := ref.ranking[r]
		sum := ss.sum[r]
		switch {
		case sum.complete && len(l) != len(want):
			t.Fatalf("%s: row %d marked complete with %d of %d rows", what, r, len(l), len(want))
		case !sum.complete && len(l) < min(ss.cfg.K, len(want)):
			t.Fatalf("%s: row %d incomplete with %d rows, K is %d", what, r, len(l), ss.cfg.K)
		case len(l) > len(want) || len(l) > ss.capacity():
			t.Fatalf("%s: row %d holds %d rows; %d qualify, capacity %d", what, r, len(l), len(want), ss.capacity())
		case sum != summarize(l, sum.complete):
			t.Fatalf("%s: row %d summary out of date", what, r)
		}
		prefix[r] = want[:len(l)]
	}
	checkLists(t, what+" (internal)", ss.nb, prefix, ref)
}

// checkLists asserts that got is a correct top list given the reference
// want: the same length, the same similarity at every rank (to simTol), and
// every listed neighbour a real pair with that similarity. Which of two rows
// whose similarities agree to simTol takes the last place is left open.
func checkLists(t *testing.T, what string, got, wantLists [][]Neighbor, ref brute) {
	t.Helper()
	if len(got) != len(wantLists) {
		t.Fatalf("%s: %d lists, want %d", what, len(got), len(wantLists))
	}
	bad := 0
	for r := range got {
		g, w := got[r], wantLists[r]
		ok := len(g) == len(w)
		seen := map[int32]bool{}
		for j := 0; ok && j < len(g); j++ {
			truth, real := ref.sim[r][g[j].ID]
			ok = real && !seen[g[j].ID] &&
				math.Abs(float64(g[j].Sim)-truth) <= simTol &&
				math.Abs(float64(g[j].Sim-w[j].Sim)) <= simTol
			seen[g[j].ID] = true
		}
		if !ok {
			if bad++; bad <= 3 {
				t.Errorf("%s: row %d:\n got  %v\n want %v", what, r, g, w)
			}
		}
	}
	if bad > 0 {
		t.Fatalf("%s: %d of %d rows differ", what, bad, len(got))
	}
}

// sameRecs compares two recommendation lists: equal length and scores, and
// equal items wherever the score is not tied (to tol) with a neighbour.
func sameRecs(a, b []Scored) bool {
	if len(a) != len(b) {
		return false
	}
	tol := func(x float64) float64 { return 1e-6 * (1 + math.Abs(x)) }
	for j := range a {
		if math.Abs(a[j].Score-b[j].Score) > tol(a[j].Score) {
			return false
		}
		tied := (j > 0 && math.Abs(a[j].Score-a[j-1].Score) <= tol(a[j].Score)) ||
			(j+1 < len(a) && math.Abs(a[j].Score-a[j+1].Score) <= tol(a[j].Score))
		if !tied && a[j].Item != b[j].Item {
			return false
		}
	}
	return true
}

func newTestStore(t testing.TB, cfg StoreConfig, events []Event) *Store {
	t.Helper()
	st, err := NewStore(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for i, ev := range events {
		if err := st.Add(ev); err != nil {
			t.Fatalf("event %d %+v: %v", i, ev, err)
		}
	}
	return st
}

func build(t testing.TB, st *Store, cfg Config) *Model {
	t.Helper()
	m, err := Build(context.Background(), st, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func synth(t testing.TB, c SynthConfig) []Event {
	t.Helper()
	evs, err := SynthEvents(c)
	if err != nil {
		t.Fatal(err)
	}
	return evs
}

func sortedKeys[K cmp.Ordered, V any](m map[K]V) []K {
	out := make([]K, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
