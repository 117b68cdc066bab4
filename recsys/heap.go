package recsys

import "slices"

// ranked is a candidate in a top-N selection of recommendations: a score
// and the item it belongs to.
type ranked struct {
	score float64
	id    int32
}

// beats is the total order of every top-N list: higher score first, ties to
// the lower index, so results never depend on the order candidates arrive in.
func (a ranked) beats(b ranked) bool {
	return a.score > b.score || (a.score == b.score && a.id < b.id)
}

// topN keeps the n best candidates pushed so far in a binary heap whose root
// is the worst of them, so most candidates cost one comparison.
type topN struct {
	n int
	h []ranked
}

func (t *topN) reset(n int) {
	t.n = n
	t.h = t.h[:0]
}

// admits reports whether x would enter: cheaper than push for the many
// candidates that do not.
func (t *topN) admits(x ranked) bool { return len(t.h) < t.n || x.beats(t.h[0]) }

func (t *topN) push(x ranked) {
	h := t.h
	if len(h) < t.n {
		h = append(h, x)
		for i := len(h) - 1; i > 0; { // sift up: worse candidates rise to the root
			p := (i - 1) / 2
			if !h[p].beats(h[i]) {
				break
			}
			h[p], h[i] = h[i], h[p]
			i = p
		}
		t.h = h
		return
	}
	if !x.beats(h[0]) {
		return
	}
	h[0] = x
	for i := 0; ; { // sift down
		l, r, w := 2*i+1, 2*i+2, i
		if l < len(h) && h[w].beats(h[l]) {
			w = l
		}
		if r < len(h) && h[w].beats(h[r]) {
			w = r
		}
		if w == i {
			break
		}
		h[i], h[w] = h[w], h[i]
		i = w
	}
}

// sorted returns the kept candidates best first. It reorders the heap's
// storage in place, so reset before pushing again.
func (t *topN) sorted() []ranked {
	slices.SortFunc(t.h, cmpRanked)
	return t.h
}

func cmpRanked(a, b ranked) int {
	switch {
	case a.beats(b):
		return -1
	case b.beats(a):
		return 1
	}
	return 0
}
