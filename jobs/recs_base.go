package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tandem-ai/tandem/artifact"
	"github.com/tandem-ai/tandem/pipeline"
	"github.com/tandem-ai/tandem/recsys"
)

// The recommender's data has two parts: a snapshot, written by the last
// sharded rebuild, and the interaction log (recsys.InteractionLog), where
// the scheduler's feedback consumer appends every event accepted since. The
// base record says which snapshot is current and up to which log entry it
// reaches; the served lists of the last rebuild and every live model start
// from it, and a live model then applies the log entries after it in log
// order. Before the first rebuild there is no base record: the initial
// interaction file (the scheduler's --interactions, the rebuild's
// "interactions") plays the snapshot, reaching no log entry.

// KeyRecsBase holds the current RecsBase as JSON.
var KeyRecsBase = pipeline.Key("recs", "base")

// RecsBase is the snapshot the served lists and the live models start from.
type RecsBase struct {
	// Rebuild names the rebuild that wrote it.
	Rebuild string `json:"rebuild"`
	// Snapshot is the artifact key of the snapshot: every interaction up to
	// LogID, as CSV (recsys.CSVWriter).
	Snapshot string `json:"snapshot"`
	// LogID is the last interaction log entry the snapshot holds.
	LogID string `json:"log_id"`
	// Generation is the serving generation the rebuild published.
	Generation int64 `json:"generation"`
	// Neighbors, Top and Mode are the settings the rebuild used; live models
	// use them too, so their lists agree with the rebuild's.
	Neighbors int    `json:"neighbors,omitempty"`
	Top       int    `json:"top,omitempty"`
	Mode      string `json:"mode,omitempty"`
	// Time is when the base was made current.
	Time time.Time `json:"time"`
	// Prev is the base this one replaced (without its own Prev). Its
	// snapshot is kept until the next rebuild, for a live model that was
	// still loading it.
	Prev *RecsBase `json:"prev,omitempty"`
}

// LoadRecsBase reads the current base; false when no rebuild has made one.
func LoadRecsBase(ctx context.Context, rdb redis.UniversalClient) (RecsBase, bool, error) {
	var b RecsBase
	raw, err := rdb.Get(ctx, KeyRecsBase).Bytes()
	if errors.Is(err, redis.Nil) {
		return b, false, nil
	}
	if err != nil {
		return b, false, fmt.Errorf("recs base: %w", err)
	}
	if err := json.Unmarshal(raw, &b); err != nil {
		return b, false, fmt.Errorf("recs base %s: %w", KeyRecsBase, err)
	}
	return b, true, nil
}

// advanceRecsBase makes next the current base, with the current one as its
// Prev, unless the current one already reaches further into the log (a
// later rebuild finished first). It returns the base replaced (ok false
// when there was none) and whether next was stored.
func advanceRecsBase(ctx context.Context, rdb redis.UniversalClient, next RecsBase) (prev RecsBase, hadPrev, stored bool, err error) {
	err = rdb.Watch(ctx, func(tx *redis.Tx) error {
		raw, err := tx.Get(ctx, KeyRecsBase).Bytes()
		hadPrev, stored = false, false
		switch {
		case errors.Is(err, redis.Nil):
		case err != nil:
			return err
		default:
			if err := json.Unmarshal(raw, &prev); err != nil {
				return fmt.Errorf("%s: %w", KeyRecsBase, err)
			}
			hadPrev = true
			if prev.Rebuild == next.Rebuild { // a retried merge: already done
				stored, hadPrev = true, prev.Prev != nil
				if hadPrev {
					prev = *prev.Prev
				}
				return nil
			}
			if recsys.CompareLogIDs(prev.LogID, next.LogID) > 0 {
				return nil
			}
			p := prev
			p.Prev = nil
			next.Prev = &p
		}
		b, err := json.Marshal(next)
		if err != nil {
			return err
		}
		_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
			p.Set(ctx, KeyRecsBase, b, 0)
			return nil
		})
		stored = err == nil
		return err
	}, KeyRecsBase)
	if err != nil {
		return prev, hadPrev, false, fmt.Errorf("recs base: %w", err)
	}
	return prev, hadPrev, stored, nil
}

// LoadRecsData loads a base's interactions into a new store: the
// snapshot from arts, or, with no snapshot, the initial file (a plain
// path; empty means no data). Errors matching recsys.ErrBadInput are bad
// data, not passing trouble.
func LoadRecsData(ctx context.Context, arts artifact.Store, snapshot, initial string) (*recsys.Store, error) {
	st, err := recsys.NewStore(recsys.StoreConfig{})
	if err != nil {
		return nil, err
	}
	switch {
	case snapshot != "":
		if arts == nil {
			return nil, errors.New("recs snapshot: no artifact store")
		}
		format, err := recsys.FormatFromPath(snapshot)
		if err != nil {
			return nil, err
		}
		rc, err := arts.Get(ctx, snapshot)
		if err != nil {
			return nil, fmt.Errorf("recs snapshot: %w", err)
		}
		defer rc.Close()
		if err := st.Load(rc, format); err != nil {
			return nil, fmt.Errorf("recs snapshot %s: %w", arts.Location(snapshot), err)
		}
	case initial != "":
		if err := st.LoadFile(initial); err != nil {
			return nil, fmt.Errorf("interactions: %w", err)
		}
	}
	return st, nil
}

// snapshotStats counts what a snapshot holds.
type snapshotStats struct {
	Events  int // written
	Logged  int // of which from the log
	Skipped int // log entries the store refused (a limit), left out as live models leave them out
	Users   int
	Items   int
}

// writeSnapshot writes the interactions of base (its snapshot, or the
// initial file) followed by the log entries after base.LogID up to upto,
// as CSV under key. Every event goes through a store with the live
// models' rules, which is returned: a log entry the store refuses (a
// limit reached) is left out, as every live model following the log leaves
// it out.
//
// openInitial opens the initial file; the fan-out passes its data root's
// Open, so a path from job args stays confined.
func writeSnapshot(ctx context.Context, arts artifact.Store, key string, base RecsBase, initial string, openInitial func(string) (io.ReadCloser, error), log *recsys.InteractionLog, upto string) (*recsys.Store, snapshotStats, error) {
	var stats snapshotStats
	st, err := recsys.NewStore(recsys.StoreConfig{})
	if err != nil {
		return nil, stats, err
	}
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		cw := recsys.NewCSVWriter(pw)
		err := copyBaseEvents(ctx, arts, base.Snapshot, initial, openInitial, func(ev recsys.Event) error {
			if err := st.Add(ev); err != nil {
				return err
			}
			stats.Events++
			return cw.Write(ev)
		})
		after := base.LogID
		for err == nil {
			var page []recsys.LogEntry
			if page, err = log.Range(ctx, after, upto, 1000); err != nil || len(page) == 0 {
				break
			}
			for _, e := range page {
				if aerr := st.Add(e.Event); aerr != nil {
					if !errors.Is(aerr, recsys.ErrBadInput) {
						err = aerr
						break
					}
					stats.Skipped++
					continue
				}
				stats.Events++
				stats.Logged++
				if err = cw.Write(e.Event); err != nil {
					break
				}
			}
			after = page[len(page)-1].ID
		}
		if err == nil {
			err = cw.Flush()
		}
		pw.CloseWithError(err)
		done <- err
	}()
	perr := arts.Put(ctx, key, pr)
	pr.CloseWithError(errors.New("snapshot: store stopped reading"))
	werr := <-done
	if werr != nil {
		return nil, stats, fmt.Errorf("recs snapshot: %w", werr)
	}
	if perr != nil {
		return nil, stats, fmt.Errorf("recs snapshot: %w", perr)
	}
	stats.Users, stats.Items = st.Users(), st.Items()
	return st, stats, nil
}

// copyBaseEvents calls fn with every event of a snapshot, or of the
// initial file (opened by openInitial) when there is none.
func copyBaseEvents(ctx context.Context, arts artifact.Store, snapshot, initial string, openInitial func(string) (io.ReadCloser, error), fn func(recsys.Event) error) error {
	var r io.Reader
	name := initial
	format, err := recsys.FormatFromPath(name)
	switch {
	case snapshot != "":
		if format, err = recsys.FormatFromPath(snapshot); err != nil {
			return err
		}
		rc, err := arts.Get(ctx, snapshot)
		if err != nil {
			return err
		}
		defer rc.Close()
		r, name = rc, arts.Location(snapshot)
	case initial != "":
		if err != nil {
			return err
		}
		f, err := openInitial(initial)
		if err != nil {
			return err
		}
		defer f.Close()
		r = f
	default:
		return nil
	}
	err = recsys.ReadEvents(r, format, recsys.Limits{}, func(_ int, ev recsys.Event) error { return fn(ev) })
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}
