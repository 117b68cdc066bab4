package recsys

import (
	"slices"
	"testing"
)

func plantedConfig() SynthConfig {
	return SynthConfig{Users: 600, Items: 300, Interactions: 12_000, Groups: 6, Noise: 0.1, Skew: 1.3, Seed: 11}
}

// TestPlantedGroupsRecovered checks that neighbours come from the user's
// (item's) own planted group, under plain and IDF weighting.
func TestPlantedGroupsRecovered(t *testing.T) {
	t.Parallel()
	sc := plantedConfig()
	evs := synth(t, sc)
	for _, w := range []Weighting{WeightNone, WeightIDF, WeightBM25} {
		cfg := Config{Users: SimConfig{K: 20, Weighting: w, Shrinkage: 2}, Items: SimConfig{K: 20, Weighting: w}}
		m := build(t, newTestStore(t, StoreConfig{}, evs), cfg)
		for _, side := range []Side{SideUsers, SideItems} {
			names := m.store.users
			if side == SideItems {
				names = m.store.items
			}
			same, total := 0, 0
			for r := range names.len() {
				g, _ := sc.GroupOf(names.name(int32(r)))
				nb, _ := m.Neighbors(side, names.name(int32(r)))
				for _, n := range nb {
					if h, _ := sc.GroupOf(n.ID); h == g {
						same++
					}
					total++
				}
			}
			frac := float64(same) / float64(total)
			t.Logf("%v %v: %.3f of %d neighbours in the same group", w, side, frac, total)
			if total < names.len()*15 || frac < 0.9 {
				t.Errorf("%v %v: %.3f of %d neighbours in the same group, want >= 0.9 of >= %d", w, side, frac, total, names.len()*15)
			}
		}
	}
}

// TestHoldoutBeatsPopularity evaluates both methods on a seeded holdout: they
// must clearly beat recommending the most popular unseen items, and most of
// their picks must come from the user's block.
func TestHoldoutBeatsPopularity(t *testing.T) {
	t.Parallel()
	sc := plantedConfig()
	train, test, err := HoldoutSplit(synth(t, sc), 0.2, 5)
	if err != nil {
		t.Fatal(err)
	}
	m := build(t, newTestStore(t, StoreConfig{}, train), Config{Users: SimConfig{K: 30}, Items: SimConfig{K: 30}})
	const k = 10
	eval := func(recommend func(string) []string) Metrics {
		mt, err := Evaluate(k, sc.Items, test, recommend)
		if err != nil {
			t.Fatal(err)
		}
		return mt
	}
	pop := eval(func(u string) []string { return popularUnseen(m, u, k) })
	for _, method := range []Method{UserKNN, ItemKNN} {
		inBlock, total := 0, 0
		mt := eval(func(u string) []string {
			recs, err := m.Recommend(u, RecOptions{N: k, Method: method})
			if err != nil {
				t.Fatal(err)
			}
			g, _ := sc.GroupOf(u)
			for _, r := range recs {
				if h, _ := sc.GroupOf(r.Item); h == g {
					inBlock++
				}
				total++
			}
			return names(recs)
		})
		t.Logf("%v: %v; in-block %.3f; popularity: %v", method, mt, float64(inBlock)/float64(total), pop)
		if mt.Users < 500 || mt.Recall < 2*pop.Recall || mt.NDCG < 2*pop.NDCG || float64(inBlock) < 0.85*float64(total) {
			t.Errorf("%v: %v, in-block %d/%d; popularity %v", method, mt, inBlock, total, pop)
		}
	}
}

// popularUnseen is the baseline: the n most popular items the user has not
// seen, the ranking of the cold-start fallback.
func popularUnseen(m *Model, user string, n int) []string {
	m.mu.RLock()
	defer m.mu.RUnlock()
	u, _ := m.store.users.lookup(user)
	order := make([]int32, len(m.pop))
	for i := range order {
		order[i] = int32(i)
	}
	slices.SortStableFunc(order, func(a, b int32) int { return int(m.pop[b] - m.pop[a]) })
	var out []string
	for _, i := range order {
		if _, seen := m.store.byUser.get(u, i); !seen && len(out) < n {
			out = append(out, m.store.items.name(i))
		}
	}
	return out
}

func names(recs []Scored) []string {
	out := make([]string, len(recs))
	for i, r := range recs {
		out[i] = r.Item
	}
	return out
}

func TestSynthDeterministic(t *testing.T) {
	t.Parallel()
	a, b := synth(t, smallSynth(4)), synth(t, smallSynth(4))
	if !slices.Equal(a, b) || len(a) != smallSynth(4).Interactions {
		t.Fatalf("two runs of one config differ or miscount (%d, %d events)", len(a), len(b))
	}
	if c := synth(t, smallSynth(5)); slices.Equal(a, c) {
		t.Fatal("different seeds gave the same events")
	}
	if _, err := SynthEvents(SynthConfig{Users: 3, Items: 2, Groups: 3}); err == nil {
		t.Fatal("more groups than items accepted")
	}
}
