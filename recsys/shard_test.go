package recsys

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
)

// TestShardsMergeToFullBuild computes each side in shards, ships them
// through the file format, merges them in shuffled order and checks the
// assembled model equals a single-process build.
func TestShardsMergeToFullBuild(t *testing.T) {
	t.Parallel()
	evs := synth(t, smallSynth(6))
	cfg := simConfigs()["idf-shrink"]
	want := build(t, newTestStore(t, StoreConfig{}, evs), cfg)
	ctx := context.Background()
	var tables [2]*Neighbors
	for _, side := range []Side{SideUsers, SideItems} {
		var shards []*Shard
		for _, rg := range ShardRanges(want.sides[side].rows.rows(), 4) {
			// Each "worker" loads its own copy of the data.
			st := newTestStore(t, StoreConfig{}, evs)
			sh, err := BuildShard(ctx, st, cfg, side, rg[0], rg[1])
			if err != nil {
				t.Fatal(err)
			}
			var buf bytes.Buffer
			if _, err := sh.WriteTo(&buf); err != nil {
				t.Fatal(err)
			}
			back, err := ReadShard(&buf, Limits{})
			if err != nil {
				t.Fatal(err)
			}
			shards = append(shards, back)
		}
		slices.Reverse(shards)
		nb, err := Merge(shards...)
		if err != nil {
			t.Fatal(err)
		}
		tables[side] = nb
	}
	m, err := NewModel(newTestStore(t, StoreConfig{}, evs), cfg, tables[SideUsers], tables[SideItems])
	if err != nil {
		t.Fatal(err)
	}
	for _, side := range []Side{SideUsers, SideItems} {
		if !slices.EqualFunc(m.sides[side].nb, want.sides[side].nb, slices.Equal) {
			t.Fatalf("%v: merged shards differ from the full build", side)
		}
	}
	// The assembled model takes incremental updates like a built one.
	if _, err := m.Apply(Event{User: "u1", Item: "i9", Type: EventPurchase, Value: 1}); err != nil {
		t.Fatal(err)
	}
}

func TestMergeRefusesBadShards(t *testing.T) {
	t.Parallel()
	evs := synth(t, smallSynth(6))
	ctx := context.Background()
	st := newTestStore(t, StoreConfig{}, evs)
	n := st.Users()
	shard := func(st *Store, cfg Config, lo, hi int) *Shard {
		s, err := BuildShard(ctx, st, cfg, SideUsers, lo, hi)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	a, b := shard(st, Config{}, 0, n/2), shard(st, Config{}, n/2, n)
	other := shard(st, Config{Users: SimConfig{K: 7}}, n/2, n)
	more := newTestStore(t, StoreConfig{}, append(slices.Clone(evs), Event{User: "u0", Item: "i0", Type: EventView, Value: 1}))
	changed := shard(more, Config{}, n/2, n)
	for name, tc := range map[string]struct {
		shards []*Shard
		msg    string
	}{
		"gap":         {[]*Shard{a}, "in no shard"},
		"overlap":     {[]*Shard{a, a, b}, "overlaps"},
		"config":      {[]*Shard{a, other}, "other data or settings"},
		"data":        {[]*Shard{a, changed}, "other data or settings"},
		"no shards":   {nil, "no shards"},
		"wrong start": {[]*Shard{b}, "in no shard"},
	} {
		if _, err := Merge(tc.shards...); err == nil || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%s: Merge error %v, want %q", name, err, tc.msg)
		}
	}
	if _, err := BuildShard(ctx, st, Config{}, SideUsers, 3, n+1); err == nil {
		t.Error("shard past the last row accepted")
	}
	// A table from other data is refused when assembling a model.
	full, err := Merge(a, b)
	if err != nil {
		t.Fatal(err)
	}
	items, err := BuildShard(ctx, more, Config{}, SideItems, 0, more.Items())
	if err != nil {
		t.Fatal(err)
	}
	itemTable, _ := Merge(items)
	if _, err := NewModel(more, Config{}, full, itemTable); err == nil {
		t.Error("NewModel accepted a user table from other data")
	}
}

func TestReadShardRefusesDamage(t *testing.T) {
	t.Parallel()
	st := newTestStore(t, StoreConfig{}, synth(t, smallSynth(6)))
	sh, err := BuildShard(context.Background(), st, Config{}, SideItems, 0, st.Items())
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if _, err := sh.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	good := buf.Bytes()
	flipped := slices.Clone(good)
	flipped[len(flipped)/2] ^= 0x40
	for name, data := range map[string][]byte{
		"truncated": good[:len(good)-9],
		"flipped":   flipped,
		"trailing":  append(slices.Clone(good), 0),
		"magic":     append([]byte("NOTSHARD"), good[8:]...),
	} {
		if _, err := ReadShard(bytes.NewReader(data), Limits{}); !errors.Is(err, ErrBadInput) {
			t.Errorf("%s: ReadShard error %v, want ErrBadInput", name, err)
		}
	}
	if _, err := ReadShard(bytes.NewReader(good), Limits{MaxItems: 3}); err == nil {
		t.Error("ReadShard ignored MaxItems")
	}
}

func TestShardRanges(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ n, parts int }{{10, 3}, {2, 5}, {0, 4}, {100_000, 16}} {
		rs := ShardRanges(tc.n, tc.parts)
		at := 0
		for _, r := range rs {
			if r[0] != at || r[1] < r[0] {
				t.Fatalf("ShardRanges(%d, %d) = %v", tc.n, tc.parts, rs)
			}
			at = r[1]
		}
		if at != tc.n {
			t.Fatalf("ShardRanges(%d, %d) = %v does not cover", tc.n, tc.parts, rs)
		}
	}
}
