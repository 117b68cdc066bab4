package recsys

import "math"

// simSide is the similarity state of one side: user-user (rows are users,
// features items) or item-item (rows are items, features users). Both sides
// read the same two sparse copies of the store, swapped.
type simSide struct {
	side  Side
	cfg   SimConfig
	rows  *sparseRows // row -> features
	cols  *sparseRows // feature -> rows (the inverted index)
	feats *dict       // feature names, for WeightGiven
	base  float64     // N of IDF/BM25, fixed from build to the next rebuild
	fw    []float64   // a_t per feature
	norm  []float64   // |row|_a per row
	nb    [][]Neighbor
}

// newSimSide computes feature weights and norms for the store's current
// contents; neighbour lists are left for the caller to fill.
func newSimSide(st *Store, s Side, cfg SimConfig) *simSide {
	ss := &simSide{side: s, cfg: cfg}
	if s == SideUsers {
		ss.rows, ss.cols, ss.feats = &st.byUser, &st.byItem, st.items
	} else {
		ss.rows, ss.cols, ss.feats = &st.byItem, &st.byUser, st.users
	}
	ss.base = cfg.IDFBase
	if ss.base == 0 {
		ss.base = float64(ss.rows.rows())
	}
	ss.fw = make([]float64, ss.cols.rows())
	for f := range ss.fw {
		ss.fw[f] = ss.featureWeight(int32(f))
	}
	ss.norm = make([]float64, ss.rows.rows())
	for r := range ss.norm {
		ss.norm[r] = ss.rowNorm(int32(r))
	}
	return ss
}

// featureWeight is a_f from the current column count.
func (ss *simSide) featureWeight(f int32) float64 {
	switch ss.cfg.Weighting {
	case WeightIDF, WeightBM25:
		n := float64(len(ss.cols.idx[f]))
		if n == 0 {
			return 0
		}
		var w float64
		if ss.cfg.Weighting == WeightIDF {
			w = math.Log1p(ss.base / n)
		} else {
			w = math.Log1p((ss.base - n + 0.5) / (n + 0.5))
		}
		if !(w > 0) { // also catches NaN from Log1p below -1
			return 0
		}
		return w
	case WeightGiven:
		if w, ok := ss.cfg.Given[ss.feats.name(f)]; ok {
			return w
		}
		return 1
	}
	return 1
}

// rowNorm is sqrt(sum_t a_t x[t]^2), summed in the row's index order so that
// a rebuild and an incremental update produce the same bits.
func (ss *simSide) rowNorm(r int32) float64 {
	ids, vals := ss.rows.idx[r], ss.rows.val[r]
	var s float64
	for k, f := range ids {
		v := float64(vals[k])
		s += ss.fw[f] * v * v
	}
	return math.Sqrt(s)
}

// similarity turns a raw dot product and a co-rated count into the kept
// similarity, or false when the pair is filtered out. Full and incremental
// computations both go through here.
func (ss *simSide) similarity(dot float64, n int32, r, r2 int32) (float32, bool) {
	if int(n) < ss.cfg.MinOverlap {
		return 0, false
	}
	d := ss.norm[r] * ss.norm[r2]
	if d == 0 {
		return 0, false
	}
	s := dot / d
	if ss.cfg.Shrinkage > 0 {
		s *= float64(n) / (float64(n) + ss.cfg.Shrinkage)
	}
	if !(s > ss.cfg.MinSimilarity) {
		return 0, false
	}
	return float32(s), true
}

// candidate is one co-rated row seen while computing a row, kept for the
// incremental update to push the new similarity into that row's list.
type candidate struct {
	id  int32
	sim float32
	ok  bool
}

// kernel is one goroutine's scratch space for computing rows: a dense
// accumulator over all rows of the side, the co-rated counts, the list of
// rows touched, and the top-K heap.
type kernel struct {
	acc     []float64
	cnt     []int32
	touched []int32
	heap    bounded[Neighbor]
	cands   []candidate
}

func (k *kernel) ensure(n int) {
	if len(k.acc) < n {
		k.acc = append(k.acc, make([]float64, n-len(k.acc))...)
		k.cnt = append(k.cnt, make([]int32, n-len(k.cnt))...)
	}
}

// row computes row r's similarities to every row sharing a feature with it,
// as one row of the sparse product (X diag(a)) X^T: for each feature f of r,
// walk the rows that have f and accumulate a_f x_r[f] x_r2[f] into acc[r2].
// It returns r's top-K, best first, valid until the next call; with
// keepCands it also records every co-rated row's similarity in k.cands.
func (k *kernel) row(ss *simSide, r int32, keepCands bool) []Neighbor {
	k.ensure(ss.rows.rows())
	acc, cnt := k.acc, k.cnt
	touched := k.touched[:0]
	ids, vals := ss.rows.idx[r], ss.rows.val[r]
	vals = vals[:len(ids)]
	for j, f := range ids {
		w := ss.fw[f] * float64(vals[j])
		cr, cv := ss.cols.idx[f], ss.cols.val[f]
		cv = cv[:len(cr)]
		for j2, r2 := range cr {
			if cnt[r2] == 0 {
				touched = append(touched, r2)
			}
			cnt[r2]++
			acc[r2] += w * float64(cv[j2])
		}
	}
	k.heap.reset(ss.cfg.K)
	if keepCands {
		k.cands = k.cands[:0]
	}
	for _, r2 := range touched {
		dot, n := acc[r2], cnt[r2]
		acc[r2], cnt[r2] = 0, 0
		if r2 == r {
			continue
		}
		s, ok := ss.similarity(dot, n, r, r2)
		// Most candidates lose to the current K-th: test that inline
		// before paying for the heap's generic call.
		if x := (Neighbor{ID: r2, Sim: s}); ok && (!k.heap.full() || better(x, k.heap.h[0])) {
			k.heap.push(x)
		}
		if keepCands {
			k.cands = append(k.cands, candidate{id: r2, sim: s, ok: ok})
		}
	}
	k.touched = touched
	return k.heap.sorted()
}
