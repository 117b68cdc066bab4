package recsys

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"math"
	"os"
	"time"
)

// StoreConfig says how events become matrix values.
type StoreConfig struct {
	// EventWeights maps event types to weights; nil means DefaultEventWeights.
	// An event of a type not in the map is rejected.
	EventWeights map[string]float64
	// HalfLife turns on time decay: an event counts 2^-(age/HalfLife), age
	// measured back from DecayAnchor. Zero (the default) means no decay.
	HalfLife time.Duration
	// DecayAnchor is the time decay is measured from. It is required with
	// HalfLife and must be the same on every worker that builds a shard of
	// one rebuild (the nightly job passes its scheduled time). Events after
	// it count more than 1, up to 64 half-lives ahead.
	DecayAnchor time.Time
	// Limits bounds the input; zero fields take their defaults.
	Limits Limits
}

// Store is the interaction matrix H: one row per user, one column per item,
// H[u][i] = the sum over u's events on i of weight * (value - previous) *
// decay (previous: what a revision replaces, else 0), kept both
// by user (rows) and by item (the inverted index item -> users). Users and
// items get int32 indices in first-seen order. A Store is not safe for
// concurrent use; a Model built on it guards it.
type Store struct {
	sc       scorer
	users    *dict
	items    *dict
	kinds    *dict
	itemKind []uint16 // 1 + index into kinds; 0 = no kind
	byUser   sparseRows
	byItem   sparseRows
	cells    int64
}

// NewStore returns an empty store.
func NewStore(cfg StoreConfig) (*Store, error) {
	lim := cfg.Limits.withDefaults()
	if err := lim.validate(); err != nil {
		return nil, err
	}
	w := cfg.EventWeights
	if w == nil {
		w = DefaultEventWeights()
	}
	if len(w) == 0 {
		return nil, errors.New("recsys: StoreConfig.EventWeights is empty")
	}
	ws := make(map[string]float64, len(w))
	for k, v := range w {
		if k == "" || math.IsNaN(v) || math.IsInf(v, 0) {
			return nil, fmt.Errorf("recsys: event weight %q = %g: want a named type and a finite weight", k, v)
		}
		ws[k] = v
	}
	if cfg.HalfLife < 0 {
		return nil, fmt.Errorf("recsys: HalfLife %v is negative", cfg.HalfLife)
	}
	if cfg.HalfLife > 0 && cfg.DecayAnchor.IsZero() {
		return nil, errors.New("recsys: HalfLife needs a DecayAnchor (the same one on every shard of a rebuild)")
	}
	return &Store{
		sc:    scorer{weights: ws, halfLife: cfg.HalfLife, anchor: cfg.DecayAnchor, lim: lim},
		users: newDict(),
		items: newDict(),
		kinds: newDict(),
	}, nil
}

// Users is the number of distinct users.
func (s *Store) Users() int { return s.users.len() }

// Items is the number of distinct items.
func (s *Store) Items() int { return s.items.len() }

// Cells is the number of distinct (user, item) pairs.
func (s *Store) Cells() int64 { return s.cells }

// Limits returns the store's limits with defaults filled in.
func (s *Store) Limits() Limits { return s.sc.lim }

// Value returns H[user][item] and whether the pair has any event.
func (s *Store) Value(user, item string) (float64, bool) {
	u, ok := s.users.lookup(user)
	if !ok {
		return 0, false
	}
	i, ok := s.items.lookup(item)
	if !ok {
		return 0, false
	}
	v, ok := s.byUser.get(u, i)
	return float64(v), ok
}

// ItemKind returns the item's kind ("" when none or unknown item).
func (s *Store) ItemKind(item string) string {
	i, ok := s.items.lookup(item)
	if !ok {
		return ""
	}
	return s.kindName(i)
}

func (s *Store) kindName(i int32) string {
	if k := s.itemKind[i]; k != 0 {
		return s.kinds.name(int32(k - 1))
	}
	return ""
}

// Add validates ev and adds it to the matrix.
func (s *Store) Add(ev Event) error {
	_, err := s.add(&ev)
	return err
}

// Load reads every event of r into the store, stopping at the first bad line.
func (s *Store) Load(r io.Reader, format Format) error {
	return ReadEvents(r, format, s.sc.lim, func(_ int, ev Event) error {
		_, err := s.add(&ev)
		return err
	})
}

// LoadFile loads a .csv or .jsonl file; errors name the file and line.
func (s *Store) LoadFile(path string) error {
	format, err := FormatFromPath(path)
	if err != nil {
		return err
	}
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("recsys: %w", err)
	}
	defer f.Close()
	if err := s.Load(f, format); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

// cellChange says what one event changed in the matrix.
type cellChange struct {
	user, item                int32
	newUser, newItem, newCell bool
}

// add validates ev, checks every limit, and only then mutates the store, so
// a rejected event leaves no trace.
func (s *Store) add(ev *Event) (cellChange, error) {
	if err := s.sc.validate(ev); err != nil {
		return cellChange{}, err
	}
	c, err := s.sc.contribution(ev)
	if err != nil {
		return cellChange{}, err
	}
	lim := s.sc.lim
	u, uok := s.users.lookup(ev.User)
	i, iok := s.items.lookup(ev.Item)
	if !uok && s.users.len() >= lim.MaxUsers {
		return cellChange{}, fieldErr("user", "new user would exceed the limit of %d users", lim.MaxUsers)
	}
	if !iok && s.items.len() >= lim.MaxItems {
		return cellChange{}, fieldErr("item", "new item would exceed the limit of %d items", lim.MaxItems)
	}
	cellExists := false
	if uok && iok {
		_, cellExists = s.byUser.get(u, i)
	}
	if !cellExists && s.cells >= lim.MaxCells {
		return cellChange{}, fieldErr("item", "new (user, item) pair would exceed the limit of %d pairs", lim.MaxCells)
	}
	var kind int32
	if ev.ItemKind != "" {
		k, ok := s.kinds.lookup(ev.ItemKind)
		if !ok {
			if s.kinds.len() >= lim.MaxKinds {
				return cellChange{}, fieldErr("kind", "new kind would exceed the limit of %d kinds", lim.MaxKinds)
			}
			k, _ = s.kinds.intern(ev.ItemKind)
		}
		kind = k + 1
	}

	ch := cellChange{newUser: !uok, newItem: !iok, newCell: !cellExists}
	if !uok {
		u, _ = s.users.intern(ev.User)
		s.byUser.addRow()
	}
	if !iok {
		i, _ = s.items.intern(ev.Item)
		s.byItem.addRow()
		s.itemKind = append(s.itemKind, 0)
	}
	if kind != 0 {
		s.itemKind[i] = uint16(kind)
	}
	s.byUser.add(u, i, c)
	s.byItem.add(i, u, c)
	if ch.newCell {
		s.cells++
	}
	ch.user, ch.item = u, i
	return ch, nil
}

// Fingerprint hashes the IDs and the matrix, so that shards computed by
// different workers can prove they started from the same data.
func (s *Store) Fingerprint() uint64 {
	h := fnv.New64a()
	var b [8]byte
	put := func(v uint64) {
		binary.LittleEndian.PutUint64(b[:], v)
		h.Write(b[:])
	}
	put(uint64(s.users.len()))
	put(uint64(s.items.len()))
	for _, d := range []*dict{s.users, s.items} {
		for _, n := range d.names {
			put(uint64(len(n)))
			io.WriteString(h, n)
		}
	}
	// The row copy is enough: the item copy is its transpose.
	buf := make([]byte, 0, 8<<10)
	for r := range s.byUser.idx {
		ids, vals := s.byUser.idx[r], s.byUser.val[r]
		buf = binary.LittleEndian.AppendUint32(buf[:0], uint32(len(ids)))
		for k, c := range ids {
			buf = binary.LittleEndian.AppendUint32(buf, uint32(c))
			buf = binary.LittleEndian.AppendUint32(buf, math.Float32bits(vals[k]))
			if len(buf) > 7<<10 {
				h.Write(buf)
				buf = buf[:0]
			}
		}
		h.Write(buf)
	}
	return h.Sum64()
}
