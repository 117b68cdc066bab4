package recsys

import "sync"

// Model holds the interaction store, both similarity tables and what
// incremental updates need. Its methods are safe for concurrent use:
// recommendations share a read lock, Apply takes the write lock.
type Model struct {
	mu    sync.RWMutex
	store *Store
	cfg   Config
	sides [2]*simSide
	pop   []int32 // per item: users whose value is positive, for the fallback
	seen  *recentIDs
	inc   incremental
	recs  sync.Pool // *recScratch
}

func newModel(st *Store, cfg Config, users, items *simSide) *Model {
	m := &Model{store: st, cfg: cfg, sides: [2]*simSide{users, items}, seen: newRecentIDs(cfg.DedupeCap)}
	m.pop = make([]int32, st.items.len())
	for i := range m.pop {
		m.pop[i] = positives(st.byItem.val[i])
	}
	return m
}

func positives(vals []float32) int32 {
	var n int32
	for _, v := range vals {
		if v > 0 {
			n++
		}
	}
	return n
}

// Similar is a neighbour by name.
type Similar struct {
	ID  string  `json:"id"`
	Sim float64 `json:"sim"`
}

// Users is the number of users.
func (m *Model) Users() int {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.store.users.len()
}

// Items is the number of items.
func (m *Model) Items() int {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.store.items.len()
}

// Config returns the configuration with defaults filled in.
func (m *Model) Config() Config { return m.cfg }

// IDFBase returns the N the side's IDF/BM25 weights use. It is fixed when
// the model is built and kept through incremental updates; a rebuild that
// sets SimConfig.IDFBase to it reproduces the incremental state exactly.
func (m *Model) IDFBase(side Side) float64 {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.sides[side].base
}

// FeatureWeights returns the side's current feature weights a_t by feature
// name (items for SideUsers, users for SideItems). Passed as
// SimConfig.Given with WeightGiven, they make a rebuild reproduce a model
// whose weights were frozen (SimConfig.FreezeWeights).
func (m *Model) FeatureWeights(side Side) map[string]float64 {
	m.mu.RLock()
	defer m.mu.RUnlock()
	ss := m.sides[side]
	out := make(map[string]float64, len(ss.fw))
	for f, w := range ss.fw {
		out[ss.feats.name(int32(f))] = w
	}
	return out
}

// Neighbors returns the top-K list of a user (SideUsers) or an item
// (SideItems), best first, and false when the ID is unknown.
func (m *Model) Neighbors(side Side, id string) ([]Similar, bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	ss := m.sides[side]
	names := m.store.users
	if side == SideItems {
		names = m.store.items
	}
	r, ok := names.lookup(id)
	if !ok {
		return nil, false
	}
	top := ss.top(r)
	out := make([]Similar, len(top))
	for i, n := range top {
		out[i] = Similar{ID: names.name(n.ID), Sim: float64(n.Sim)}
	}
	return out, true
}

// Value returns H[user][item], the user's summed interactions with the
// item, and whether the pair has any.
func (m *Model) Value(user, item string) (float64, bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.store.Value(user, item)
}

// Seen returns the items the user has interacted with, in index order.
func (m *Model) Seen(user string) []string {
	m.mu.RLock()
	defer m.mu.RUnlock()
	u, ok := m.store.users.lookup(user)
	if !ok {
		return nil
	}
	ids := m.store.byUser.idx[u]
	out := make([]string, len(ids))
	for k, i := range ids {
		out[k] = m.store.items.name(i)
	}
	return out
}
