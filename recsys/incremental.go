package recsys

import (
	"slices"
	"sync"
)

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
// the other row's list. Lists hold Slack entries beyond K: a member that
// falls below the last entry leaves, and only a list left with fewer than K
// entries (and not known to hold every candidate) is recomputed, so no list
// ever misses a neighbour it would have in a rebuild. Dot products
// are recomputed per affected row rather than stored for every co-rated pair:
// one row costs a few thousand multiply-adds, while storing every pair of the
// benchmark data set would take gigabytes.
//
// The IDF base N is fixed when the model is built (Model.IDFBase), so a new
// user changes only the columns it touches, not every weight. With
// SimConfig.FreezeWeights the weights do not move at all, and an event
// recomputes only its own user's and item's rows.

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
	kernels []kernel    // one per worker
	rows    []rowUpdate // per dirty row
	dirty   []int32
	changed [][]int32 // per worker
	epoch   uint32
	tag     []rowTag // per row: its role in this update
	targets []int32  // rows receiving pushes, in first-push order
	start   []int32  // targets[j]'s pushes are pushes[start[j]:start[j+1]]
	pushes  []push
	// parallelAt is the number of similarity pushes from which the second
	// phase of an update uses every worker; below it, starting goroutines
	// costs more than it saves. Zero means defaultParallelAt.
	parallelAt int
}

// rowTag says what a row is in the update numbered epoch: dirty (slot -1)
// or the target with that slot. Tags of older epochs mean nothing. One
// array keeps the check to one memory access per candidate.
type rowTag struct {
	epoch uint32
	slot  int32
}

// push is one new similarity for a target row's list: from row from.
type push struct {
	from int32
	sim  float32
	ok   bool
}

// rowUpdate is a dirty row's recomputed list and its co-rated rows.
type rowUpdate struct {
	list  []Neighbor
	cands []candidate
}

const defaultParallelAt = 8192

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
	for _, r := range m.inc.update(us, ch.user, ch.item, ch.newCell, m.cfg.Workers) {
		up.ChangedUsers = append(up.ChangedUsers, m.store.users.name(r))
	}
	for _, r := range m.inc.update(is, ch.item, ch.user, ch.newCell, m.cfg.Workers) {
		up.ChangedItems = append(up.ChangedItems, m.store.items.name(r))
	}
	return up, nil
}

func (ss *simSide) addRow() {
	ss.norm = append(ss.norm, 0)
	ss.nb = append(ss.nb, nil)
	ss.sum = append(ss.sum, summarize(nil, true))
}

// addFeature appends the weight of a feature the store just created.
func (ss *simSide) addFeature() {
	ss.fw = append(ss.fw, ss.featureWeight(int32(len(ss.fw))))
}

// update brings one side up to date after cell (r, f) changed, and returns
// the rows whose lists changed, r first. The result is valid until the next
// call.
//
// It works in two phases. First every dirty row is recomputed from the
// matrix; then each new similarity is pushed into the other row's list.
// Both phases only read the matrix, weights and norms; in the second, each
// worker owns a share of the target rows, so no list is shared and each list
// sees its pushes in the same order whatever the number of workers: the
// result does not depend on it.
func (inc *incremental) update(ss *simSide, r, f int32, newCell bool, workers int) []int32 {
	n := ss.rows.rows()
	if len(inc.tag) < n {
		inc.tag = append(inc.tag, make([]rowTag, n-len(inc.tag))...)
	}
	inc.epoch++
	if inc.epoch == 0 { // wrapped: old tags could collide, clear them
		clear(inc.tag)
		inc.epoch = 1
	}
	dirty := append(inc.dirty[:0], r)
	if newCell && ss.cfg.Weighting.countBased() && !ss.cfg.FreezeWeights {
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
		inc.tag[d] = rowTag{epoch: inc.epoch, slot: -1}
	}
	if len(inc.kernels) < workers {
		inc.kernels = make([]kernel, workers)
		inc.changed = make([][]int32, workers)
	}
	for len(inc.rows) < len(dirty) {
		inc.rows = append(inc.rows, rowUpdate{})
	}
	rows := inc.rows[:len(dirty)]

	view := ss.sideView()

	// Phase 1: recompute the dirty rows, a row per worker at a time.
	inc.run(min(workers, len(dirty)), func(w, nw int) {
		k := &inc.kernels[w]
		for i := w; i < len(dirty); i += nw {
			rows[i].list = slices.Clone(k.row(view, dirty[i], true))
			rows[i].cands = append(rows[i].cands[:0], k.cands...)
		}
	})
	changed := inc.changed[0][:0]
	for i, d := range dirty {
		ss.setComputed(d, rows[i].list)
		rows[i].list = nil // owned by the side now
		changed = append(changed, d)
	}
	inc.changed[0] = changed

	// Phase 2: push the new similarities into the other rows' lists,
	// grouped by target row (a counting sort), so each list and its summary
	// are read once per update rather than once per push, and each target
	// sees its pushes in dirty-row order whatever the number of workers.
	inc.groupPushes(rows)
	nt := len(inc.targets)
	at, nw := inc.parallelAt, 1
	if at == 0 {
		at = defaultParallelAt
	}
	if len(inc.pushes) >= at {
		nw = min(workers, nt)
	}
	inc.run(nw, func(w, nw int) {
		k := &inc.kernels[w]
		mine := inc.changed[w]
		if w != 0 {
			mine = mine[:0]
		}
		for j := nt * w / nw; j < nt*(w+1)/nw; j++ {
			r2, hit := inc.targets[j], false
			for _, p := range inc.pushes[inc.start[j]:inc.start[j+1]] {
				if ss.propagate(view, r2, Neighbor{ID: p.from, Sim: p.sim}, p.ok, k) {
					hit = true
				}
			}
			if hit {
				mine = append(mine, r2)
			}
		}
		inc.changed[w] = mine
	})
	for w := 1; w < nw; w++ {
		inc.changed[0] = append(inc.changed[0], inc.changed[w]...)
	}
	return inc.changed[0]
}

// groupPushes lays out every push of the dirty rows' candidates by target:
// targets, start and pushes, in dirty-row order within each target. Dirty
// rows are no targets: phase 1 recomputed them in full.
func (inc *incremental) groupPushes(rows []rowUpdate) {
	targets := inc.targets[:0]
	count := inc.start[:0]
	for _, ru := range rows {
		for _, c := range ru.cands {
			t := &inc.tag[c.id]
			if t.epoch != inc.epoch {
				*t = rowTag{epoch: inc.epoch, slot: int32(len(targets))}
				targets = append(targets, c.id)
				count = append(count, 0)
			} else if t.slot < 0 {
				continue // dirty
			}
			count[t.slot]++
		}
	}
	// Counts to start offsets, then fill (next = start, advanced in place
	// and shifted back).
	total := int32(0)
	for j, c := range count {
		count[j] = total
		total += c
	}
	count = append(count, total)
	if cap(inc.pushes) < int(total) {
		inc.pushes = make([]push, total)
	}
	pushes := inc.pushes[:total]
	for i, ru := range rows {
		d := inc.dirty[i]
		for _, c := range ru.cands {
			j := inc.tag[c.id].slot
			if j < 0 {
				continue // dirty
			}
			pushes[count[j]] = push{from: d, sim: c.sim, ok: c.ok}
			count[j]++
		}
	}
	copy(count[1:], count[:len(count)-1]) // each next offset is the following start
	count[0] = 0
	inc.targets, inc.start, inc.pushes = targets, count, pushes
}

// run calls fn(w, n) for w in [0, n), on n goroutines when n > 1.
func (inc *incremental) run(n int, fn func(w, n int)) {
	if n <= 1 {
		fn(0, 1)
		return
	}
	var wg sync.WaitGroup
	for w := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			fn(w, n)
		}()
	}
	wg.Wait()
}

// propagate updates row r2's list for a new similarity x to row x.ID (ok
// false: the pair is now filtered out), keeping the list invariant of
// listSummary. A list only has to be recomputed when it is not complete and
// losing x would leave it shorter than K. It reports whether the list
// changed.
func (ss *simSide) propagate(v *rowView, r2 int32, x Neighbor, ok bool, k *kernel) bool {
	sum := &ss.sum[r2]
	if sum.unaffected(x, ok) {
		return false
	}
	l, complete := ss.nb[r2], sum.complete
	pos := slices.IndexFunc(l, func(n Neighbor) bool { return n.ID == x.ID })
	if pos < 0 {
		if !ok || !complete && !better(x, l[len(l)-1]) {
			return false // x stays outside, no better than the last entry
		}
		p, _ := slices.BinarySearchFunc(l, x, cmpNeighbor)
		l = slices.Insert(l, p, x)
		if len(l) > ss.capacity() {
			// The dropped last entry joins the rows outside, which are all
			// no better than it.
			l, complete = l[:len(l)-1], false
		}
		ss.setList(r2, l, complete)
		return true
	}
	if ok && (complete || !better(l[len(l)-1], x)) {
		// Still at least as good as the old last entry (or the list holds
		// every qualifying row anyway): only the order can change.
		if l[pos] == x {
			return false
		}
		l[pos] = x
		bubble(l, pos)
		ss.setList(r2, l, complete)
		return true
	}
	// x leaves: it no longer qualifies, or it fell below the old last entry
	// of an incomplete list, where rows outside might now rank above it.
	if complete || len(l)-1 >= ss.cfg.K {
		ss.setList(r2, slices.Delete(l, pos, pos+1), complete)
		return true
	}
	ss.setComputed(r2, slices.Clone(k.row(v, r2, false)))
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
