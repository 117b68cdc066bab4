package recsys

import (
	"fmt"
	"iter"

	"github.com/tandem-ai/tandem/limits"
)

// Method picks how recommendations are scored.
type Method int

const (
	// UserKNN scores item i for user u as sum over u's neighbours v of
	// sim(u, v) * H[v][i].
	UserKNN Method = iota
	// ItemKNN scores item i as sum over items j that u touched of
	// H[u][j] * sim(j, i).
	ItemKNN
)

func (m Method) String() string {
	switch m {
	case UserKNN:
		return "user-knn"
	case ItemKNN:
		return "item-knn"
	}
	return fmt.Sprintf("Method(%d)", int(m))
}

// ParseMethod reads "user-knn" or "item-knn".
func ParseMethod(s string) (Method, error) {
	for _, m := range []Method{UserKNN, ItemKNN} {
		if m.String() == s {
			return m, nil
		}
	}
	return 0, fmt.Errorf("recsys: unknown method %q (want user-knn or item-knn)", s)
}

// RecOptions configures Recommend.
type RecOptions struct {
	// N is the list length. Default 20; at most 10,000.
	N int
	// Method is UserKNN (the default) or ItemKNN.
	Method Method
	// Kinds keeps only items of these kinds; empty keeps every item.
	Kinds []string
	// Filter, when set, keeps only items it returns true for. It is called
	// under the model's read lock and must not call back into the model.
	Filter func(item, kind string) bool
	// NoFallback turns off the popularity fallback: by default a user with
	// no neighbour-based candidate (a cold-start user, or one whose
	// neighbours have seen nothing new) gets the most popular unseen items,
	// scored by how many users rated them positively.
	NoFallback bool
}

const maxRecN = limits.RecsPerRequest

// Scored is one recommended item.
type Scored struct {
	Item  string  `json:"item"`
	Score float64 `json:"score"`
}

// recScratch is the per-call workspace of Recommend, pooled because a dense
// score array over all items is too big to allocate per call.
type recScratch struct {
	score   []float64
	stamp   []uint32 // stamp == epoch: score is live; seenStamp: item seen
	epoch   uint32
	touched []int32
	top     []ranked
}

// Recommend returns up to N items for user, best first, never an item the
// user has already interacted with. An unknown user is a cold-start user.
func (m *Model) Recommend(user string, opts RecOptions) ([]Scored, error) {
	if err := opts.validate(); err != nil {
		return nil, err
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	u, ok := m.store.users.lookup(user)
	if !ok {
		u = -1
	}
	return m.recommendLocked(u, opts), nil
}

func (o *RecOptions) validate() error {
	if o.N == 0 {
		o.N = 20
	}
	if o.N < 0 || o.N > maxRecN {
		return fmt.Errorf("recsys: N %d out of range [1, %d]", o.N, maxRecN)
	}
	if o.Method != UserKNN && o.Method != ItemKNN {
		return fmt.Errorf("recsys: unknown method %v", o.Method)
	}
	return nil
}

// All returns every user's recommendations in user index order (first-seen
// order of the input), for writing out a rebuild. Each user is computed
// under its own read lock, so Apply may interleave between users.
func (m *Model) All(opts RecOptions) (iter.Seq2[string, []Scored], error) {
	if err := opts.validate(); err != nil {
		return nil, err
	}
	return func(yield func(string, []Scored) bool) {
		for u := int32(0); ; u++ {
			m.mu.RLock()
			if int(u) >= m.store.users.len() {
				m.mu.RUnlock()
				return
			}
			name := m.store.users.name(u)
			recs := m.recommendLocked(u, opts)
			m.mu.RUnlock()
			if !yield(name, recs) {
				return
			}
		}
	}, nil
}

// recommendLocked scores candidates for user index u (-1: unknown user);
// the caller holds the read lock and has validated opts.
func (m *Model) recommendLocked(u int32, opts RecOptions) []Scored {
	st := m.store
	sc, _ := m.recs.Get().(*recScratch)
	if sc == nil {
		sc = &recScratch{}
	}
	defer m.recs.Put(sc)
	nItems := st.items.len()
	if len(sc.score) < nItems {
		sc.score = make([]float64, nItems)
		sc.stamp = make([]uint32, nItems)
		sc.epoch = 0
	}
	// Two epochs per call: live scores and seen items.
	if sc.epoch >= ^uint32(0)-2 {
		clear(sc.stamp)
		sc.epoch = 0
	}
	live, seen := sc.epoch+1, sc.epoch+2
	sc.epoch += 2

	keep := m.itemFilter(opts)
	touched := sc.touched[:0]
	add := func(i int32, s float64) {
		if sc.stamp[i] != live {
			sc.stamp[i] = live
			sc.score[i] = 0
			touched = append(touched, i)
		}
		sc.score[i] += s
	}
	if u >= 0 {
		switch opts.Method {
		case UserKNN:
			for _, nb := range m.sides[SideUsers].top(u) {
				s := float64(nb.Sim)
				ids, vals := st.byUser.idx[nb.ID], st.byUser.val[nb.ID]
				for k, i := range ids {
					add(i, s*float64(vals[k]))
				}
			}
		case ItemKNN:
			items := m.sides[SideItems]
			ids, vals := st.byUser.idx[u], st.byUser.val[u]
			for k, j := range ids {
				h := float64(vals[k])
				for _, nb := range items.top(j) {
					add(nb.ID, h*float64(nb.Sim))
				}
			}
		}
		for _, i := range st.byUser.idx[u] {
			sc.stamp[i] = seen
		}
	}
	top := topN{n: opts.N, h: sc.top[:0]}
	for _, i := range touched {
		if sc.stamp[i] == live && sc.score[i] > 0 && keep(i) {
			top.push(ranked{score: sc.score[i], id: i})
		}
	}
	if len(top.h) == 0 && !opts.NoFallback {
		for i, p := range m.pop {
			if p > 0 && sc.stamp[i] != seen && keep(int32(i)) {
				top.push(ranked{score: float64(p), id: int32(i)})
			}
		}
	}
	sc.touched = touched
	sc.top = top.h
	best := top.sorted()
	out := make([]Scored, len(best))
	for k, x := range best {
		out[k] = Scored{Item: st.items.name(x.id), Score: x.score}
	}
	return out
}

// itemFilter turns Kinds and Filter into one predicate on item indices.
func (m *Model) itemFilter(opts RecOptions) func(int32) bool {
	st := m.store
	var kinds []bool // by 1 + kind index
	if len(opts.Kinds) > 0 {
		kinds = make([]bool, st.kinds.len()+1)
		for _, k := range opts.Kinds {
			if x, ok := st.kinds.lookup(k); ok {
				kinds[x+1] = true
			}
		}
	}
	return func(i int32) bool {
		if kinds != nil && !kinds[st.itemKind[i]] {
			return false
		}
		if opts.Filter != nil && !opts.Filter(st.items.name(i), st.kindName(i)) {
			return false
		}
		return true
	}
}
