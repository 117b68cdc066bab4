package recsys

import "slices"

// Incremental updates.
//
// An event on (user u, item t) changes one cell of H. On the user side that
// changes row u (its norm and its dot products with every user sharing an
// item with it); with IDF or BM25 weighting, a new pair also changes n_t and
// so a_t, which changes the norm of every user of t and their dot products
// with everyone they share an item with. The item side is the mirror image.
//
// The update is exact: the rows whose norm changed ("dirty" rows) are
// recomputed from the sparse matrix with the very code of the full rebuild,
// and the new similarity of every pair (dirty row, other row) is pushed into
// the other row's list. A list that loses a member it can no longer rank
// (a full list whose entry fell below its old last place) is recomputed, so
// no list ever misses a neighbour it would have in a rebuild. Dot products
// are recomputed per affected row rather than stored for every co-rated pair:
// one row costs a few thousand multiply-adds, while storing every pair of the
// benchmark data set would take gigabytes.
//
// The IDF base N is fixed when the model is built (Model.IDFBase), so a new
// user changes only the columns it touches, not every weight.

// Update reports what Apply changed.
type Update struct {
	// Duplicate is true when the event's ID was applied before; nothing changed.
	Duplicate bool
	// NewUser, NewItem and NewPair say whether the event introduced them.
	NewUser, NewItem, NewPair bool
	// ChangedUsers lists users whose neighbour list changed, the event's user
	// first. With user-kNN their recommendations may have changed.
	ChangedUsers []string
	// ChangedItems lists items whose neighbour list changed, the event's item
	// first.
	ChangedItems []string
}

// incremental is the scratch space of Apply, which runs under the write lock.
type incremental struct {
	k       kernel
	cands   []candidate
	dirty   []int32
	changed []int32
	epoch   uint32
	stamp   []uint32 // stamp[r] == epoch: r is dirty in this update
	cstamp  []uint32 // cstamp[r] == epoch: r already listed as changed
}

// Apply adds one event to the model and brings norms, both similarity
// tables and popularity up to date, so that the next Recommend reflects it.
// An event whose non-empty ID is among the last Config.DedupeCap IDs applied
// is ignored. A bad event is rejected with an *InputError and changes
// nothing.
func (m *Model) Apply(ev Event) (Update, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if ev.ID != "" && m.seen.has(ev.ID) {
		return Update{Duplicate: true}, nil
	}
	ch, err := m.store.add(&ev)
	if err != nil {
		return Update{}, err
	}
	if ev.ID != "" {
		m.seen.add(ev.ID)
	}
	us, is := m.sides[SideUsers], m.sides[SideItems]
	if ch.newUser {
		us.addRow()
		is.addFeature()
	}
	if ch.newItem {
		is.addRow()
		us.addFeature()
		m.pop = append(m.pop, 0)
	}
	m.pop[ch.item] = positives(m.store.byItem.val[ch.item])

	up := Update{NewUser: ch.newUser, NewItem: ch.newItem, NewPair: ch.newCell}
	for _, r := range m.inc.update(us, ch.user, ch.item, ch.newCell) {
		up.ChangedUsers = append(up.ChangedUsers, m.store.users.name(r))
	}
	for _, r := range m.inc.update(is, ch.item, ch.user, ch.newCell) {
		up.ChangedItems = append(up.ChangedItems, m.store.items.name(r))
	}
	return up, nil
}

func (ss *simSide) addRow() {
	ss.norm = append(ss.norm, 0)
	ss.nb = append(ss.nb, nil)
}

// addFeature appends the weight of a feature the store just created.
func (ss *simSide) addFeature() {
	ss.fw = append(ss.fw, ss.featureWeight(int32(len(ss.fw))))
}

// update brings one side up to date after cell (r, f) changed, and returns
// the rows whose lists changed, r first. The result is valid until the next
// call.
func (inc *incremental) update(ss *simSide, r, f int32, newCell bool) []int32 {
	n := ss.rows.rows()
	if len(inc.stamp) < n {
		inc.stamp = append(inc.stamp, make([]uint32, n-len(inc.stamp))...)
		inc.cstamp = append(inc.cstamp, make([]uint32, n-len(inc.cstamp))...)
	}
	inc.epoch++
	if inc.epoch == 0 { // wrapped: old stamps could collide, clear them
		clear(inc.stamp)
		clear(inc.cstamp)
		inc.epoch = 1
	}
	dirty := append(inc.dirty[:0], r)
	if newCell && ss.cfg.Weighting.countBased() {
		// a_f moved with n_f: every row having f has a new norm and new dot
		// products with its co-rated rows.
		ss.fw[f] = ss.featureWeight(f)
		dirty = append(dirty[:0], ss.cols.idx[f]...)
		// Keep r first so the report lists the event's own row first.
		if p := slices.Index(dirty, r); p > 0 {
			dirty[0], dirty[p] = dirty[p], dirty[0]
		}
	}
	inc.dirty = dirty
	for _, d := range dirty {
		ss.norm[d] = ss.rowNorm(d)
		inc.stamp[d] = inc.epoch
	}
	changed := inc.changed[:0]
	mark := func(x int32) {
		if inc.cstamp[x] != inc.epoch {
			inc.cstamp[x] = inc.epoch
			changed = append(changed, x)
		}
	}
	for _, d := range dirty {
		ss.nb[d] = slices.Clone(inc.k.row(ss, d, true))
		mark(d)
		// The kernel's candidate list is reused when a propagation has to
		// recompute a row, so work from a copy.
		inc.cands = append(inc.cands[:0], inc.k.cands...)
		for _, c := range inc.cands {
			if inc.stamp[c.id] == inc.epoch {
				continue // recomputed in full in this loop
			}
			if ss.propagate(c.id, Neighbor{ID: d, Sim: c.sim}, c.ok, &inc.k) {
				mark(c.id)
			}
		}
	}
	inc.changed = changed
	return changed
}

// propagate updates row r2's list for a new similarity x to row x.ID (ok
// false: the pair is now filtered out). It relies on the list invariant: a
// list shorter than K holds every row that passes the filters; a full list
// holds K rows no worse than any row outside it. It reports whether the list
// changed.
func (ss *simSide) propagate(r2 int32, x Neighbor, ok bool, k *kernel) bool {
	l := ss.nb[r2]
	full := len(l) >= ss.cfg.K
	pos := -1
	for i := range l {
		if l[i].ID == x.ID {
			pos = i
			break
		}
	}
	if pos < 0 {
		switch {
		case !ok:
			return false
		case !full:
			p, _ := slices.BinarySearchFunc(l, x, cmpNeighbor)
			ss.nb[r2] = slices.Insert(l, p, x)
			return true
		case better(x, l[len(l)-1]):
			// x displaces the last entry, which joins the rows outside, all
			// of which it was no worse than.
			l[len(l)-1] = x
			bubble(l, len(l)-1)
			return true
		}
		return false
	}
	switch {
	case ok && (!full || !better(l[len(l)-1], x)):
		// Still at least as good as the old last place: every row outside
		// stays behind it, so the list keeps its members.
		if l[pos] == x {
			return false
		}
		l[pos] = x
		bubble(l, pos)
		return true
	case !ok && !full:
		ss.nb[r2] = slices.Delete(l, pos, pos+1)
		return true
	}
	// x fell below the old last place of a full list (or out of it): a row
	// outside might now rank above it, and only a recomputation can tell.
	ss.nb[r2] = slices.Clone(k.row(ss, r2, false))
	return true
}

// bubble moves l[i] to its place in an otherwise sorted list.
func bubble(l []Neighbor, i int) {
	for i > 0 && better(l[i], l[i-1]) {
		l[i], l[i-1] = l[i-1], l[i]
		i--
	}
	for i+1 < len(l) && better(l[i+1], l[i]) {
		l[i], l[i+1] = l[i+1], l[i]
		i++
	}
}
