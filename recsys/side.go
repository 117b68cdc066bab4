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
	sum   []listSummary // sum[r] summarizes nb[r]; kept by setList
}

// capacity is how many entries a computed list holds: K plus the slack.
func (ss *simSide) capacity() int { return ss.cfg.K + ss.cfg.Slack }

// top is row r's public list: the first K entries.
func (ss *simSide) top(r int32) []Neighbor {
	l := ss.nb[r]
	return l[:min(len(l), ss.cfg.K)]
}

// setList replaces row r's list and its summary.
func (ss *simSide) setList(r int32, l []Neighbor, complete bool) {
	ss.nb[r] = l
	ss.sum[r] = summarize(l, complete)
}

// setComputed installs a list fresh from the kernel: it is complete when
// the kernel found fewer candidates than it had room for.
func (ss *simSide) setComputed(r int32, l []Neighbor) {
	ss.setList(r, l, len(l) < ss.capacity())
}

// setLists installs a whole computed table.
func (ss *simSide) setLists(lists [][]Neighbor) {
	ss.nb = lists
	ss.sum = make([]listSummary, len(lists))
	for r, l := range lists {
		ss.setComputed(int32(r), l)
	}
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

// similarity turns a raw dot product, a co-rated count and the two norms
// into the kept similarity, or false when the pair is filtered out. Full and
// incremental computations both go through here.
func (ss *simSide) similarity(dot float64, n int32, norm, norm2 float64) (float32, bool) {
	if int(n) < ss.cfg.MinOverlap {
		return 0, false
	}
	d := norm * norm2
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
	if s == 0 {
		s = 0 // -0 would order apart from +0 in the packed select keys
	}
	return float32(s), true
}
