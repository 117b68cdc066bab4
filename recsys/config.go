package recsys

import (
	"fmt"
	"math"
	"runtime"
)

// Weighting chooses the feature weights a_t of the weighted cosine
//
//	sim(x, y) = sum_t a_t x[t] y[t] / (|x|_a |y|_a),  |x|_a = sqrt(sum_t a_t x[t]^2)
//
// Norms are weighted with the same a_t, so sim(x, x) = 1 and the measure is
// the plain cosine of the vectors scaled by sqrt(a_t). For user-user
// similarity the features are items; for item-item they are users.
type Weighting int

const (
	// WeightNone sets every a_t = 1 (plain cosine).
	WeightNone Weighting = iota
	// WeightIDF sets a_t = ln(1 + N/n_t): n_t rows have feature t, N is the
	// IDF base (SimConfig.IDFBase). Always positive.
	WeightIDF
	// WeightBM25 sets a_t = max(0, ln(1 + (N - n_t + 0.5)/(n_t + 0.5))), the
	// BM25 inverse document frequency; it falls to 0 for a feature that every
	// row has.
	WeightBM25
	// WeightGiven takes a_t from SimConfig.Given by feature name; features
	// not named there weigh 1.
	WeightGiven
)

func (w Weighting) String() string {
	switch w {
	case WeightNone:
		return "none"
	case WeightIDF:
		return "idf"
	case WeightBM25:
		return "bm25"
	case WeightGiven:
		return "given"
	}
	return fmt.Sprintf("Weighting(%d)", int(w))
}

// ParseWeighting reads "none", "idf", "bm25" or "given".
func ParseWeighting(s string) (Weighting, error) {
	for _, w := range []Weighting{WeightNone, WeightIDF, WeightBM25, WeightGiven} {
		if w.String() == s {
			return w, nil
		}
	}
	return 0, fmt.Errorf("recsys: unknown weighting %q (want none, idf, bm25 or given)", s)
}

// countBased reports whether a_t depends on how many rows have feature t, so
// that a new (user, item) pair changes the weight of a whole column.
func (w Weighting) countBased() bool { return w == WeightIDF || w == WeightBM25 }

// SimConfig configures one similarity side (user-user or item-item).
type SimConfig struct {
	// K is the number of neighbours per row. Default 50.
	K int
	// Slack is how many neighbours beyond K each row keeps internally, so
	// that an incremental update which pushes a neighbour out of the top K
	// can promote the next one instead of recomputing the row. Zero means
	// K/2; negative means none. Shards carry K+Slack entries per row; every
	// reader sees the first K.
	Slack int
	// Weighting picks the feature weights. Default WeightNone.
	Weighting Weighting
	// Given holds the weights for WeightGiven, by feature name (item IDs for
	// the user side, user IDs for the item side). Weights must be >= 0.
	Given map[string]float64
	// IDFBase is N in the IDF and BM25 formulas. Zero means the number of rows
	// when the model is built; the model then keeps that N through
	// incremental updates (see Model.IDFBase), so that only the columns an
	// event touches change weight. The nightly rebuild takes the new count.
	IDFBase float64
	// FreezeWeights keeps IDF/BM25 weights fixed through incremental
	// updates: every a_t stays as the build computed it, and a feature first
	// seen by an update keeps the weight of its first count (1 row). An update
	// then costs the same as with WeightNone (only the event's own rows are
	// recomputed) instead of recomputing every row that has the event's item.
	// The state equals a rebuild with Weighting WeightGiven and Given =
	// Model.FeatureWeights. The default (false) keeps weights exact.
	FreezeWeights bool
	// Shrinkage is lambda in sim * n/(n + lambda), n the number of features
	// both rows have; it pulls similarities that rest on few co-ratings toward
	// 0. Zero (the default) turns it off.
	Shrinkage float64
	// MinOverlap drops pairs sharing fewer than this many features.
	// Default 1.
	MinOverlap int
	// MinSimilarity drops neighbours whose similarity (after shrinkage) is
	// not above it. Default 0: only positive similarities are kept. Use a
	// value below -1 to keep every co-rated pair.
	MinSimilarity float64
}

func (c SimConfig) withDefaults() SimConfig {
	if c.K == 0 {
		c.K = 50
	}
	switch {
	case c.Slack == 0:
		c.Slack = c.K / 2
	case c.Slack < 0:
		c.Slack = 0
	}
	if c.MinOverlap == 0 {
		c.MinOverlap = 1
	}
	return c
}

func (c SimConfig) validate(name string, lim Limits) error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("recsys: %s similarity: "+format, append([]any{name}, args...)...)
	}
	switch {
	case c.K < 1 || c.K+c.Slack > lim.MaxK:
		return bad("K %d + Slack %d out of range [1, %d]", c.K, c.Slack, lim.MaxK)
	case c.Weighting < WeightNone || c.Weighting > WeightGiven:
		return bad("unknown weighting %v", c.Weighting)
	case c.IDFBase < 0 || math.IsNaN(c.IDFBase) || math.IsInf(c.IDFBase, 0):
		return bad("IDFBase %g: want a finite number >= 0", c.IDFBase)
	case c.Shrinkage < 0 || math.IsNaN(c.Shrinkage) || math.IsInf(c.Shrinkage, 0):
		return bad("Shrinkage %g: want a finite number >= 0", c.Shrinkage)
	case c.MinOverlap < 1:
		return bad("MinOverlap %d: want >= 1", c.MinOverlap)
	case math.IsNaN(c.MinSimilarity):
		return bad("MinSimilarity is NaN")
	}
	for k, v := range c.Given {
		if v < 0 || math.IsNaN(v) || math.IsInf(v, 0) {
			return bad("Given[%q] = %g: want a finite weight >= 0", k, v)
		}
	}
	return nil
}

// Config configures a Model.
type Config struct {
	// Users configures user-user similarity (features are items).
	Users SimConfig
	// Items configures item-item similarity (features are users).
	Items SimConfig
	// Workers is the number of goroutines of a full rebuild. Default
	// runtime.GOMAXPROCS(0).
	Workers int
	// DedupeCap is how many recent event IDs Model.Apply remembers to drop
	// redelivered events. Default 100,000 (a few MiB); older IDs are
	// forgotten first-in first-out, so dedupe over longer windows is the
	// consumer's job (JetStream's Nats-Msg-Id window).
	DedupeCap int
}

func (c Config) withDefaults() Config {
	c.Users = c.Users.withDefaults()
	c.Items = c.Items.withDefaults()
	if c.Workers == 0 {
		c.Workers = runtime.GOMAXPROCS(0)
	}
	if c.DedupeCap == 0 {
		c.DedupeCap = 100_000
	}
	return c
}

func (c Config) validate(lim Limits) error {
	if err := c.Users.validate("user", lim); err != nil {
		return err
	}
	if err := c.Items.validate("item", lim); err != nil {
		return err
	}
	if c.Workers < 1 {
		return fmt.Errorf("recsys: Workers %d: want >= 1", c.Workers)
	}
	if c.DedupeCap < 1 {
		return fmt.Errorf("recsys: DedupeCap %d: want >= 1", c.DedupeCap)
	}
	return nil
}

// Side names one of the two similarity tables.
type Side int

const (
	// SideUsers is user-user similarity: rows are users, features items.
	SideUsers Side = iota
	// SideItems is item-item similarity: rows are items, features users.
	SideItems
)

func (s Side) String() string {
	switch s {
	case SideUsers:
		return "users"
	case SideItems:
		return "items"
	}
	return fmt.Sprintf("Side(%d)", int(s))
}

func (c Config) side(s Side) SimConfig {
	if s == SideItems {
		return c.Items
	}
	return c.Users
}
