package recsys

import (
	"context"
	"errors"
	"math"
	"testing"
	"time"
)

// simConfigs are the similarity settings the exactness tests run under.
func simConfigs() map[string]Config {
	given := map[string]float64{"i0": 3, "i1": 0, "i2": 0.5, "u1": 2, "u3": 0.25}
	return map[string]Config{
		"plain":         {Users: SimConfig{K: 5}, Items: SimConfig{K: 4}},
		"no-slack":      {Users: SimConfig{K: 5, Slack: -1}, Items: SimConfig{K: 4, Slack: -1}},
		"idf-shrink":    {Users: SimConfig{K: 6, Slack: 1, Weighting: WeightIDF, Shrinkage: 3}, Items: SimConfig{K: 3, Slack: 1, Weighting: WeightIDF, Shrinkage: 1.5}},
		"bm25-overlap":  {Users: SimConfig{K: 5, Weighting: WeightBM25, MinOverlap: 2}, Items: SimConfig{K: 5, Weighting: WeightBM25, MinOverlap: 3}},
		"given-allsims": {Users: SimConfig{K: 8, Weighting: WeightGiven, Given: given, MinSimilarity: -2}, Items: SimConfig{K: 8, Weighting: WeightGiven, Given: given, MinSimilarity: 0.2}},
		"big-k":         {Users: SimConfig{K: 1000, Weighting: WeightIDF}, Items: SimConfig{K: 1000}, Workers: 3},
	}
}

func smallSynth(seed uint64) SynthConfig {
	return SynthConfig{Users: 45, Items: 32, Interactions: 380, Groups: 3, Noise: 0.25, Rejections: 0.4,
		Kinds: []string{"template", "topic"}, Start: time.Unix(1_700_000_000, 0), Span: 30 * 24 * time.Hour, Seed: seed}
}

// TestBuildMatchesBruteForce checks the sparse rebuild against a dense
// evaluation of the definition, for every weighting and filter, both sides.
func TestBuildMatchesBruteForce(t *testing.T) {
	t.Parallel()
	evs := synth(t, smallSynth(7))
	for name, cfg := range simConfigs() {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			sc := StoreConfig{HalfLife: 10 * 24 * time.Hour, DecayAnchor: time.Unix(1_701_000_000, 0)}
			m := build(t, newTestStore(t, sc, evs), cfg)
			for _, side := range []Side{SideUsers, SideItems} {
				ref := bruteSide(m.store, side, cfg.side(side), 0)
				checkSide(t, side.String(), m.sides[side], ref)
				for r, n := range ref.norm {
					if got := m.sides[side].norm[r]; math.Abs(got-n) > 1e-9*(1+n) {
						t.Fatalf("%v norm of row %d = %g, want %g", side, r, got, n)
					}
				}
			}
		})
	}
}

// TestSimilarityByHand pins the definition on numbers worked out on paper.
func TestSimilarityByHand(t *testing.T) {
	t.Parallel()
	// a: i1=1 i2=2; b: i1=2 i2=4 (parallel to a); c: i2=1 i3=1.
	evs := []Event{
		{User: "a", Item: "i1", Type: "view", Value: 1},
		{User: "a", Item: "i2", Type: "view", Value: 2},
		{User: "b", Item: "i1", Type: "view", Value: 2},
		{User: "b", Item: "i2", Type: "view", Value: 4},
		{User: "c", Item: "i2", Type: "view", Value: 1},
		{User: "c", Item: "i3", Type: "view", Value: 1},
	}
	m := build(t, newTestStore(t, StoreConfig{}, evs), Config{})
	nb, _ := m.Neighbors(SideUsers, "a")
	// sim(a,b) = 1 (parallel); sim(a,c) = 2 / (sqrt(5) sqrt(2)).
	want := []Similar{{"b", 1}, {"c", 2 / (math.Sqrt(5) * math.Sqrt(2))}}
	if len(nb) != 2 || nb[0].ID != "b" || nb[1].ID != "c" ||
		math.Abs(nb[0].Sim-want[0].Sim) > 1e-7 || math.Abs(nb[1].Sim-want[1].Sim) > 1e-7 {
		t.Fatalf("neighbours of a = %v, want %v", nb, want)
	}
	// With IDF, a_i1 = ln(1+3/2), a_i2 = ln(1+3/3), a_i3 = ln(1+3/1); the
	// weighted norm keeps sim(a,b) = 1.
	m = build(t, newTestStore(t, StoreConfig{}, evs), Config{Users: SimConfig{Weighting: WeightIDF}})
	a1, a2, a3 := math.Log(2.5), math.Log(2), math.Log(4)
	wantAC := a2 * 2 / (math.Sqrt(a1+4*a2) * math.Sqrt(a2+a3))
	nb, _ = m.Neighbors(SideUsers, "a")
	if len(nb) != 2 || math.Abs(nb[0].Sim-1) > 1e-7 || math.Abs(nb[1].Sim-wantAC) > 1e-7 {
		t.Fatalf("IDF neighbours of a = %v, want b:1 c:%g", nb, wantAC)
	}
}

func TestBuildCancelled(t *testing.T) {
	t.Parallel()
	st := newTestStore(t, StoreConfig{}, synth(t, smallSynth(1)))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Build(ctx, st, Config{}); !errors.Is(err, context.Canceled) {
		t.Fatalf("Build on a cancelled context: %v, want context.Canceled", err)
	}
}

func TestConfigValidation(t *testing.T) {
	t.Parallel()
	st := newTestStore(t, StoreConfig{}, synth(t, smallSynth(1)))
	for name, cfg := range map[string]Config{
		"negative K":       {Users: SimConfig{K: -1}},
		"K over limit":     {Items: SimConfig{K: 20_000}},
		"shrinkage":        {Users: SimConfig{Shrinkage: -1}},
		"weighting":        {Users: SimConfig{Weighting: 9}},
		"given negative":   {Users: SimConfig{Weighting: WeightGiven, Given: map[string]float64{"x": -1}}},
		"overlap negative": {Items: SimConfig{MinOverlap: -3}},
		"nan similarity":   {Items: SimConfig{MinSimilarity: math.NaN()}},
	} {
		if _, err := Build(context.Background(), st, cfg); err == nil {
			t.Errorf("%s: Build accepted %+v", name, cfg)
		}
	}
}
