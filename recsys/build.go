package recsys

import (
	"context"
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"math"
	"slices"
	"sync"
	"sync/atomic"
)

// rowChunk is how many rows a rebuild goroutine claims at a time: small
// enough to balance rows of uneven cost, large enough that the shared
// counter is not contended.
const rowChunk = 64

// buildRange computes the lists (K+Slack long) of rows [lo, hi) with the
// given number of goroutines, each with its own dense accumulator, over the
// cache-friendly localView. Rows are handed out in view order, in chunks from a shared
// counter, so consecutive rows share their accumulator band and a few heavy
// rows do not leave the other goroutines idle. Context cancellation is
// checked per chunk.
func (ss *simSide) buildRange(ctx context.Context, lo, hi, workers int) ([][]Neighbor, error) {
	v := ss.localView()
	order := make([]int32, 0, hi-lo)
	for _, r := range v.toSide {
		if int(r) >= lo && int(r) < hi {
			order = append(order, r)
		}
	}
	out := make([][]Neighbor, hi-lo)
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(workers, (len(order)+rowChunk-1)/rowChunk) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var k kernel
			var sl slab
			for ctx.Err() == nil {
				start := int(next.Add(rowChunk)) - rowChunk
				if start >= len(order) {
					return
				}
				for _, r := range order[start:min(start+rowChunk, len(order))] {
					out[int(r)-lo] = sl.copy(k.row(v, r, false))
				}
			}
		}()
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("recsys: %v rebuild: %w", ss.side, err)
	}
	return out, nil
}

// Build computes both similarity tables over the whole store and returns a
// Model ready for recommendations and incremental updates. The model takes
// ownership of the store: later changes go through Model.Apply.
func Build(ctx context.Context, st *Store, cfg Config) (*Model, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(st.sc.lim); err != nil {
		return nil, err
	}
	st.byUser.compact()
	st.byItem.compact()
	var sides [2]*simSide
	for _, s := range []Side{SideUsers, SideItems} {
		ss := newSimSide(st, s, cfg.side(s))
		nb, err := ss.buildRange(ctx, 0, ss.rows.rows(), cfg.Workers)
		if err != nil {
			return nil, err
		}
		ss.setLists(nb)
		sides[s] = ss
	}
	return newModel(st, cfg, sides[SideUsers], sides[SideItems]), nil
}

// Shard is the neighbour lists of rows [Lo, Hi) of one side, computed by
// BuildShard, possibly on another worker. Rows is the side's row count and
// Fingerprint identifies the data and configuration it was computed from;
// Merge refuses shards that disagree on either.
type Shard struct {
	Side        Side
	Lo, Hi      int
	Rows        int
	Fingerprint uint64
	Lists       [][]Neighbor // Lists[r-Lo] is row r's list, best first, K+Slack long at most
}

// BuildShard computes rows [lo, hi) of one side: the unit of work of a
// sharded nightly rebuild. Every worker loads the same interactions (so the
// indices agree) and computes its own row range; Merge joins the results.
// It does not take ownership of st, though it may compact its storage.
func BuildShard(ctx context.Context, st *Store, cfg Config, side Side, lo, hi int) (*Shard, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(st.sc.lim); err != nil {
		return nil, err
	}
	if side != SideUsers && side != SideItems {
		return nil, fmt.Errorf("recsys: unknown side %v", side)
	}
	st.byUser.compact()
	st.byItem.compact()
	ss := newSimSide(st, side, cfg.side(side))
	n := ss.rows.rows()
	if lo < 0 || hi < lo || hi > n {
		return nil, fmt.Errorf("recsys: shard [%d, %d) out of range for %d %v", lo, hi, n, side)
	}
	lists, err := ss.buildRange(ctx, lo, hi, cfg.Workers)
	if err != nil {
		return nil, err
	}
	return &Shard{Side: side, Lo: lo, Hi: hi, Rows: n, Fingerprint: ss.fingerprint(st.Fingerprint()), Lists: lists}, nil
}

// ShardRanges cuts n rows into at most parts contiguous ranges of nearly
// equal size, for fanning a rebuild out.
func ShardRanges(n, parts int) [][2]int {
	if parts < 1 {
		parts = 1
	}
	parts = min(parts, max(n, 1))
	out := make([][2]int, 0, parts)
	for p := range parts {
		out = append(out, [2]int{n * p / parts, n * (p + 1) / parts})
	}
	return out
}

// Neighbors is one side's complete table, as Merge assembles it.
type Neighbors struct {
	Side        Side
	Fingerprint uint64
	Lists       [][]Neighbor // one per row
}

// Merge joins shards of one side into the full table. The shards must agree
// on side, row count and fingerprint and cover [0, Rows) exactly once, in
// any order.
func Merge(shards ...*Shard) (*Neighbors, error) {
	if len(shards) == 0 {
		return nil, fmt.Errorf("recsys: merge: no shards")
	}
	sorted := slices.Clone(shards)
	slices.SortFunc(sorted, func(a, b *Shard) int { return a.Lo - b.Lo })
	first := sorted[0]
	out := &Neighbors{Side: first.Side, Fingerprint: first.Fingerprint, Lists: make([][]Neighbor, 0, first.Rows)}
	at := 0
	for _, s := range sorted {
		switch {
		case s.Side != first.Side:
			return nil, fmt.Errorf("recsys: merge: shard [%d, %d) is of side %v, others %v", s.Lo, s.Hi, s.Side, first.Side)
		case s.Rows != first.Rows || s.Fingerprint != first.Fingerprint:
			return nil, fmt.Errorf("recsys: merge: shard [%d, %d) was computed from other data or settings (rows %d, fingerprint %x; first shard: %d, %x)",
				s.Lo, s.Hi, s.Rows, s.Fingerprint, first.Rows, first.Fingerprint)
		case s.Lo != at:
			if s.Lo < at {
				return nil, fmt.Errorf("recsys: merge: shard [%d, %d) overlaps rows below %d", s.Lo, s.Hi, at)
			}
			return nil, fmt.Errorf("recsys: merge: rows [%d, %d) are in no shard", at, s.Lo)
		case len(s.Lists) != s.Hi-s.Lo:
			return nil, fmt.Errorf("recsys: merge: shard [%d, %d) holds %d lists", s.Lo, s.Hi, len(s.Lists))
		}
		out.Lists = append(out.Lists, s.Lists...)
		at = s.Hi
	}
	if at != first.Rows {
		return nil, fmt.Errorf("recsys: merge: rows [%d, %d) are in no shard", at, first.Rows)
	}
	return out, nil
}

// NewModel assembles a Model from merged tables, checking that they were
// computed from this store and configuration. It takes ownership of st.
func NewModel(st *Store, cfg Config, users, items *Neighbors) (*Model, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(st.sc.lim); err != nil {
		return nil, err
	}
	fp := st.Fingerprint()
	var sides [2]*simSide
	for _, nb := range []*Neighbors{users, items} {
		if nb == nil {
			return nil, fmt.Errorf("recsys: NewModel: missing a side's table")
		}
		if nb.Side != SideUsers && nb.Side != SideItems {
			return nil, fmt.Errorf("recsys: NewModel: unknown side %v", nb.Side)
		}
		if sides[nb.Side] != nil {
			return nil, fmt.Errorf("recsys: NewModel: two tables of side %v", nb.Side)
		}
		ss := newSimSide(st, nb.Side, cfg.side(nb.Side))
		if want := ss.fingerprint(fp); nb.Fingerprint != want {
			return nil, fmt.Errorf("recsys: NewModel: %v table fingerprint %x, this store and config give %x", nb.Side, nb.Fingerprint, want)
		}
		if err := validateLists(nb.Lists, ss.rows.rows(), ss.capacity()); err != nil {
			return nil, fmt.Errorf("recsys: NewModel: %v table: %w", nb.Side, err)
		}
		ss.setLists(nb.Lists)
		sides[nb.Side] = ss
	}
	st.byUser.compact()
	st.byItem.compact()
	return newModel(st, cfg, sides[SideUsers], sides[SideItems]), nil
}

func validateLists(lists [][]Neighbor, rows, k int) error {
	if len(lists) != rows {
		return fmt.Errorf("%d lists for %d rows", len(lists), rows)
	}
	for r, l := range lists {
		if len(l) > k {
			return fmt.Errorf("row %d has %d neighbours, over K+Slack=%d", r, len(l), k)
		}
		for j, n := range l {
			if n.ID < 0 || int(n.ID) >= rows || int(n.ID) == r {
				return fmt.Errorf("row %d lists neighbour %d, not a valid other row", r, n.ID)
			}
			if j > 0 && !better(l[j-1], n) {
				return fmt.Errorf("row %d: neighbours not in order (best first) at position %d", r, j)
			}
		}
	}
	return nil
}

// fingerprint hashes the store fingerprint with everything in the side's
// configuration that changes its lists.
func (ss *simSide) fingerprint(store uint64) uint64 {
	h := fnv.New64a()
	var b []byte
	b = binary.LittleEndian.AppendUint64(b, store)
	b = binary.LittleEndian.AppendUint64(b, uint64(ss.side))
	b = binary.LittleEndian.AppendUint64(b, uint64(ss.cfg.K))
	b = binary.LittleEndian.AppendUint64(b, uint64(ss.cfg.Slack))
	b = binary.LittleEndian.AppendUint64(b, uint64(ss.cfg.Weighting))
	b = binary.LittleEndian.AppendUint64(b, math.Float64bits(ss.base))
	b = binary.LittleEndian.AppendUint64(b, math.Float64bits(ss.cfg.Shrinkage))
	b = binary.LittleEndian.AppendUint64(b, uint64(ss.cfg.MinOverlap))
	b = binary.LittleEndian.AppendUint64(b, math.Float64bits(ss.cfg.MinSimilarity))
	if ss.cfg.Weighting == WeightGiven {
		for _, f := range ss.fw {
			b = binary.LittleEndian.AppendUint64(b, math.Float64bits(f))
		}
	}
	h.Write(b)
	return h.Sum64()
}
