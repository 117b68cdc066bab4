package recsys

import (
	"cmp"
	"math"
	"slices"
)

// rowView is how the kernel sees a side: the rows' features, and the
// inverted index and norms under a labelling of the rows. The incremental
// path uses the side's own labels. The full rebuild relabels rows so that
// rows sharing features get nearby labels (localView): one row's
// accumulations then fall in a narrow band of the accumulator, which stays
// in cache, instead of all over an array of megabytes.
type rowView struct {
	ss     *simSide
	cols   *sparseRows // feature -> rows, by view label, ascending
	norm   []float64   // by view label
	toView []int32     // side row -> view label; nil: the same
	toSide []int32     // view label -> side row; nil: the same
}

// sideView is the identity view, built per use because the side's slices
// grow with new rows.
func (ss *simSide) sideView() *rowView {
	return &rowView{ss: ss, cols: ss.cols, norm: ss.norm}
}

// localView labels rows by their most popular feature (the one most rows
// share), so that rows with a popular feature in common are neighbours in
// the accumulator, and copies the inverted index and norms into that order.
// The similarities it yields are bit-for-bit those of sideView: each dot
// product sums the same terms in the same order (the row's features, in
// index order); only where it is stored changes.
func (ss *simSide) localView() *rowView {
	n := ss.rows.rows()
	key := make([]int32, n)
	for r := range n {
		best, bestN := int32(-1), -1
		for _, f := range ss.rows.idx[r] {
			if c := len(ss.cols.idx[f]); c > bestN {
				best, bestN = f, c
			}
		}
		key[r] = best
	}
	toSide := make([]int32, n)
	for r := range toSide {
		toSide[r] = int32(r)
	}
	slices.SortStableFunc(toSide, func(a, b int32) int { return cmp.Compare(key[a], key[b]) })
	toView := make([]int32, n)
	norm := make([]float64, n)
	for v, r := range toSide {
		toView[r] = int32(v)
		norm[v] = ss.norm[r]
	}
	// Walking rows in view order appends each column's entries in ascending
	// view label: no sort needed.
	nf := ss.cols.rows()
	cols := &sparseRows{idx: make([][]int32, nf), val: make([][]float32, nf)}
	var nnz int
	for f := range nf {
		nnz += len(ss.cols.idx[f])
	}
	ia, va := make([]int32, nnz), make([]float32, nnz)
	at := 0
	for f := range nf { // carve each column's final room out of one arena
		c := len(ss.cols.idx[f])
		cols.idx[f], cols.val[f] = ia[at:at:at+c], va[at:at:at+c]
		at += c
	}
	for v, r := range toSide {
		for j, f := range ss.rows.idx[r] {
			cols.idx[f] = append(cols.idx[f], int32(v))
			cols.val[f] = append(cols.val[f], ss.rows.val[r][j])
		}
	}
	return &rowView{ss: ss, cols: cols, norm: norm, toView: toView, toSide: toSide}
}

// candidate is one co-rated row seen while computing a row, kept for the
// incremental update to push the new similarity into that row's list.
type candidate struct {
	id  int32
	sim float32
	ok  bool
}

// kernel is one goroutine's scratch space for computing rows: a dense
// accumulator over all rows of the side, the rows touched, and the
// selection of the best candidates.
type kernel struct {
	acc     []accCell
	touched []int32
	sel     []uint64 // selectKey of each qualifying candidate
	hist    [histBuckets]int32
	out     []Neighbor
	cands   []candidate
}

// histBuckets cut similarities in [0, 1] into equal buckets for selecting
// the top of a row (see row).
const histBuckets = 1024

// bucketOf maps a similarity to its histogram bucket; everything at or
// below 0 shares bucket 0, so negative similarities are selected exactly
// too, by the final sort.
func bucketOf(s float64) int {
	switch {
	case s <= 0:
		return 0
	case s >= 1:
		return histBuckets - 1
	}
	return int(s * histBuckets)
}

// accCell is one row's running dot product and co-rated count, side by
// side so that an accumulation touches one cache line, not two.
type accCell struct {
	dot float64
	n   int32
}

// row computes side row r's similarities to every row sharing a feature with
// it, as one row of the sparse product (X diag(a)) X^T: for each feature f of
// r, walk the rows that have f and accumulate a_f x_r[f] x_r2[f] into
// acc[r2]. It returns r's top K+Slack in side rows, best first, valid until
// the next call; with keepCands it also records every co-rated row's
// similarity in k.cands.
func (k *kernel) row(v *rowView, r int32, keepCands bool) []Neighbor {
	ss := v.ss
	n := len(v.norm)
	if len(k.acc) < n {
		k.acc = append(k.acc, make([]accCell, n-len(k.acc))...)
	}
	// touched has room for every row and one more, so the loop below can
	// store each row unconditionally and only advance on a first visit: no
	// unpredictable branch in the hottest loop of the package.
	if cap(k.touched) < n+1 {
		k.touched = make([]int32, n+1)
	}
	acc, touched := k.acc, k.touched[:cap(k.touched)]
	nt := 0
	ids, vals := ss.rows.idx[r], ss.rows.val[r]
	vals = vals[:len(ids)]
	for j, f := range ids {
		w := ss.fw[f] * float64(vals[j])
		cr, cv := v.cols.idx[f], v.cols.val[f]
		cv = cv[:len(cr)]
		for j2, r2 := range cr {
			a := &acc[r2]
			touched[nt] = r2
			if a.n == 0 {
				nt++
			}
			a.n++
			a.dot += w * float64(cv[j2])
		}
	}
	self := r
	if v.toView != nil {
		self = v.toView[r]
	}
	norm := v.norm[self]
	// Select the best K+Slack candidates in two cheap passes instead of a
	// heap: a histogram of similarities finds the bucket the last kept
	// candidate lies in, and only candidates from that bucket up are sorted.
	sel := k.sel[:0]
	clear(k.hist[:])
	if keepCands {
		k.cands = k.cands[:0]
	}
	for _, r2 := range touched[:nt] {
		a := acc[r2]
		acc[r2] = accCell{}
		if r2 == self {
			continue
		}
		s, ok := ss.similarity(a.dot, a.n, norm, v.norm[r2])
		id := r2
		if v.toSide != nil {
			id = v.toSide[r2]
		}
		if ok {
			sel = append(sel, selectKey(Neighbor{ID: id, Sim: s}))
			k.hist[bucketOf(float64(s))]++
		}
		if keepCands {
			k.cands = append(k.cands, candidate{id: id, sim: s, ok: ok})
		}
	}
	want := ss.capacity()
	if len(sel) > want {
		from, seen := histBuckets-1, int32(0)
		for ; from > 0; from-- {
			if seen += k.hist[from]; int(seen) >= want {
				break
			}
		}
		kept := sel[:0]
		for _, x := range sel {
			if bucketOf(float64(fromSelectKey(x).Sim)) >= from {
				kept = append(kept, x)
			}
		}
		sel = kept
	}
	slices.Sort(sel)
	k.sel = sel
	k.out = k.out[:0]
	for _, x := range sel[:min(len(sel), want)] {
		k.out = append(k.out, fromSelectKey(x))
	}
	return k.out
}

// selectKey packs a neighbour into an integer whose ascending order is the
// list order (better): the similarity's bits, made monotone and inverted, then
// the ID. Sorting plain integers needs no comparison callback, and the rows'
// lists are ranked by their stored float32 similarity and side index, so the
// order never depends on the labelling of a view.
func selectKey(n Neighbor) uint64 {
	b := math.Float32bits(n.Sim)
	if b&(1<<31) != 0 {
		b = ^b // negative: larger magnitude sorts lower
	} else {
		b |= 1 << 31
	}
	return uint64(^b)<<32 | uint64(uint32(n.ID))
}

func fromSelectKey(x uint64) Neighbor {
	b := ^uint32(x >> 32)
	if b&(1<<31) != 0 {
		b &^= 1 << 31
	} else {
		b = ^b
	}
	return Neighbor{ID: int32(uint32(x)), Sim: math.Float32frombits(b)}
}
