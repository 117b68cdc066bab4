package recsys

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
	"time"
)

// randomEvents makes a stream that exercises every incremental path: new
// users, new items, new pairs of known users and items, repeated pairs,
// negative and zero contributions, and redelivered IDs (every dup-th event
// reuses an earlier ID).
func randomEvents(rng *rand.Rand, n int, users, items int, start time.Time) []Event {
	types := []string{EventView, EventClick, EventPurchase, EventRating, EventDwell, EventAccepted, EventEdited, EventRejected}
	kinds := []string{"template", "topic", ""}
	var out []Event
	for k := range n {
		ev := Event{ID: fmt.Sprintf("e%d", k), Type: types[rng.IntN(len(types))], Value: float64(rng.IntN(6))}
		if rng.IntN(10) == 0 {
			ev.User = fmt.Sprintf("nu%d", rng.IntN(n/8+1))
		} else {
			ev.User = SynthUser(rng.IntN(users))
		}
		if rng.IntN(10) == 0 {
			ev.Item = fmt.Sprintf("ni%d", rng.IntN(n/8+1))
		} else {
			ev.Item = SynthItem(rng.IntN(items))
		}
		if rng.IntN(4) == 0 && len(out) > 0 { // the same pair again, new ID
			prev := out[rng.IntN(len(out))]
			ev.User, ev.Item = prev.User, prev.Item
		}
		if rng.IntN(8) == 0 && len(out) > 0 { // a redelivery
			ev = out[rng.IntN(len(out))]
		}
		ev.ItemKind = kinds[rng.IntN(len(kinds))]
		ev.Time = start.Add(time.Duration(rng.Int64N(int64(40 * 24 * time.Hour))))
		out = append(out, ev)
	}
	return out
}

// TestIncrementalEqualsRebuild applies random event sequences one by one and
// checks, at several points, that norms, both neighbour tables and the
// recommendations equal those of a full rebuild on the same interactions,
// and that both match the dense brute force.
func TestIncrementalEqualsRebuild(t *testing.T) {
	t.Parallel()
	sc := StoreConfig{HalfLife: 7 * 24 * time.Hour, DecayAnchor: time.Unix(1_701_000_000, 0)}
	for name, cfg := range simConfigs() {
		for seed := uint64(1); seed <= 2; seed++ {
			t.Run(fmt.Sprintf("%s/seed%d", name, seed), func(t *testing.T) {
				t.Parallel()
				base := synth(t, smallSynth(seed))
				cfg := cfg // the seeds' subtests run in parallel
				cfg.Workers = 3
				m := build(t, newTestStore(t, sc, base), cfg)
				if seed == 2 {
					m.inc.parallelAt = 1 // every update on all workers
				}
				rng := rand.New(rand.NewPCG(seed, 99))
				stream := randomEvents(rng, 240, 45, 32, time.Unix(1_699_000_000, 0))
				log := append([]Event(nil), base...)
				applied := map[string]bool{}
				for k, ev := range stream {
					up, err := m.Apply(ev)
					if err != nil {
						t.Fatalf("event %d %+v: %v", k, ev, err)
					}
					if up.Duplicate != applied[ev.ID] {
						t.Fatalf("event %d (ID %s): Duplicate = %v, want %v", k, ev.ID, up.Duplicate, applied[ev.ID])
					}
					if !up.Duplicate {
						applied[ev.ID] = true
						log = append(log, ev)
						if len(up.ChangedUsers) == 0 || up.ChangedUsers[0] != ev.User ||
							len(up.ChangedItems) == 0 || up.ChangedItems[0] != ev.Item {
							t.Fatalf("event %d: update %+v does not lead with the event's user and item", k, up)
						}
					}
					if (k+1)%80 == 0 {
						compareWithRebuild(t, fmt.Sprintf("after %d events", k+1), m, sc, cfg, log)
					}
				}
			})
		}
	}
}

func compareWithRebuild(t *testing.T, when string, m *Model, sc StoreConfig, cfg Config, log []Event) {
	t.Helper()
	// The rebuild keeps the IDF base the incremental model was built with.
	cfg.Users.IDFBase = m.IDFBase(SideUsers)
	cfg.Items.IDFBase = m.IDFBase(SideItems)
	full := build(t, newTestStore(t, sc, log), cfg)
	if m.store.Fingerprint() != full.store.Fingerprint() {
		t.Fatalf("%s: incremental store differs from the rebuilt one", when)
	}
	for _, side := range []Side{SideUsers, SideItems} {
		inc, reb := m.sides[side], full.sides[side]
		for r := range reb.norm {
			if math.Abs(inc.norm[r]-reb.norm[r]) > 1e-9*(1+reb.norm[r]) {
				t.Fatalf("%s: %v norm %d = %g, rebuild %g", when, side, r, inc.norm[r], reb.norm[r])
			}
		}
		for f := range reb.fw {
			if inc.fw[f] != reb.fw[f] {
				t.Fatalf("%s: %v feature weight %d = %g, rebuild %g", when, side, f, inc.fw[f], reb.fw[f])
			}
		}
		ref := bruteSide(full.store, side, cfg.side(side), cfg.side(side).IDFBase)
		checkSide(t, when+": rebuild "+side.String(), reb, ref)
		checkSide(t, when+": incremental "+side.String(), inc, ref)
	}
	for _, method := range []Method{UserKNN, ItemKNN} {
		differ := 0
		for u := range full.store.users.len() {
			user := full.store.users.name(int32(u))
			a, _ := m.Recommend(user, RecOptions{N: 8, Method: method})
			b, _ := full.Recommend(user, RecOptions{N: 8, Method: method})
			if !sameRecs(a, b) {
				differ++
				t.Errorf("%s: %v recommendations of %s:\n incremental %v\n rebuild     %v", when, method, user, a, b)
			}
		}
		if differ > 0 {
			t.FailNow()
		}
	}
}

// TestFrozenWeightsEqualGivenRebuild checks the cheap IDF mode: with
// FreezeWeights the incremental state equals a rebuild that is given the
// model's weights.
func TestFrozenWeightsEqualGivenRebuild(t *testing.T) {
	t.Parallel()
	sc := StoreConfig{}
	cfg := Config{Users: SimConfig{K: 5, Weighting: WeightIDF, FreezeWeights: true},
		Items: SimConfig{K: 4, Weighting: WeightBM25, FreezeWeights: true, Shrinkage: 2}}
	base := synth(t, smallSynth(5))
	m := build(t, newTestStore(t, sc, base), cfg)
	before := m.FeatureWeights(SideUsers)
	log := append([]Event(nil), base...)
	for _, ev := range randomEvents(rand.New(rand.NewPCG(5, 5)), 200, 45, 32, time.Time{}) {
		up, err := m.Apply(ev)
		if err != nil {
			t.Fatal(err)
		}
		if !up.Duplicate {
			log = append(log, ev)
		}
	}
	after := m.FeatureWeights(SideUsers)
	for item, w := range before {
		if after[item] != w {
			t.Fatalf("frozen weight of %s moved from %g to %g", item, w, after[item])
		}
	}
	given := cfg
	given.Users.Weighting, given.Users.Given = WeightGiven, after
	given.Items.Weighting, given.Items.Given = WeightGiven, m.FeatureWeights(SideItems)
	full := build(t, newTestStore(t, sc, log), given)
	for _, side := range []Side{SideUsers, SideItems} {
		ref := bruteSide(full.store, side, given.side(side), 0)
		checkSide(t, "rebuild "+side.String(), full.sides[side], ref)
		checkSide(t, "frozen incremental "+side.String(), m.sides[side], ref)
	}
}

func TestApplyRejectsBadEventsWithoutChange(t *testing.T) {
	t.Parallel()
	m := build(t, newTestStore(t, StoreConfig{}, synth(t, smallSynth(3))), Config{})
	before := m.store.Fingerprint()
	for _, ev := range []Event{
		{User: "u1", Item: "i1", Type: "teleport", Value: 1},
		{User: "", Item: "i1", Type: "view", Value: 1},
		{User: "u1", Item: "i1", Type: "view", Value: math.Inf(1)},
		{User: "u1\x01", Item: "i1", Type: "view", Value: 1},
	} {
		if _, err := m.Apply(ev); err == nil {
			t.Errorf("Apply accepted %+v", ev)
		}
	}
	if m.store.Fingerprint() != before {
		t.Fatal("rejected events changed the store")
	}
}

func TestDedupeForgetsOldestIDs(t *testing.T) {
	t.Parallel()
	m := build(t, newTestStore(t, StoreConfig{}, synth(t, smallSynth(3))), Config{DedupeCap: 2})
	apply := func(id string) bool {
		up, err := m.Apply(Event{ID: id, User: "u1", Item: "i2", Type: EventView, Value: 1})
		if err != nil {
			t.Fatal(err)
		}
		return up.Duplicate
	}
	for _, step := range []struct {
		id  string
		dup bool
	}{{"a", false}, {"a", true}, {"b", false}, {"c", false}, {"b", true}, {"a", false}} {
		if got := apply(step.id); got != step.dup {
			t.Fatalf("ID %s: Duplicate = %v, want %v", step.id, got, step.dup)
		}
	}
	// Four events were applied: a, b, c, then a again once forgotten.
	v0 := newTestStore(t, StoreConfig{}, synth(t, smallSynth(3)))
	base, _ := v0.Value("u1", "i2")
	if got, _ := m.store.Value("u1", "i2"); math.Abs(got-(base+4)) > 1e-5 {
		t.Fatalf("H[u1][i2] = %g, want %g", got, base+4)
	}
}
