package recsys

import (
	"bytes"
	"encoding/json"
	"errors"
	"slices"
	"testing"
	"time"
)

// revisionStreams returns, on top of base, the events of a person who
// rates twice and revises each rating (one of them twice, with one
// revision delivered again), and the events that say only the latest
// ratings: the two must give the same model.
func revisionStreams(t *testing.T, base []Event) (revised, latest []Event) {
	t.Helper()
	user := base[0].User
	seen := map[string]bool{}
	for _, ev := range base {
		if ev.User == user {
			seen[ev.Item] = true
		}
	}
	// A known item the user never touched: a new cell of a known row and
	// column. And a new item: a new column too.
	known := ""
	for _, ev := range base {
		if !seen[ev.Item] {
			known = ev.Item
			break
		}
	}
	if known == "" {
		t.Fatal("the user touched every item")
	}
	rating := func(id, item string, value, previous float64) Event {
		return Event{ID: id, User: user, Item: item, Type: EventRating, Value: value, Previous: previous, ItemKind: "template"}
	}
	revised = []Event{
		rating("fb-rate-a", "new-item", 2, 0),
		rating("fb-rate-b", known, 4, 0),
		rating("fb-rate-a.r1", "new-item", 5, 2),
		rating("fb-rate-a.r2", "new-item", 3, 5),
		rating("fb-rate-a.r1", "new-item", 5, 2), // redelivered: dropped by its ID
		rating("fb-rate-b.r1", known, 1, 4),
	}
	latest = []Event{rating("a", "new-item", 3, 0), rating("b", known, 1, 0)}
	return revised, latest
}

// TestRevisionsAddUpToTheLatestValue checks that a rating followed by its
// revisions (value and the value it replaces) leaves H, the weights, both
// neighbour tables and the recommendations as if only the latest rating
// had been sent: applied live, under every weighting (IDF and BM25 count
// cells, which a revision does not add), and written to a CSV snapshot
// and read back, as the nightly rebuild does.
func TestRevisionsAddUpToTheLatestValue(t *testing.T) {
	t.Parallel()
	base := synth(t, smallSynth(11))
	revised, latest := revisionStreams(t, base)
	want := append(slices.Clone(base), latest...)
	for name, cfg := range simConfigs() {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			m := build(t, newTestStore(t, StoreConfig{}, base), cfg)
			applied := map[string]bool{}
			for _, ev := range revised {
				up, err := m.Apply(ev)
				if err != nil {
					t.Fatalf("%+v: %v", ev, err)
				}
				if up.Duplicate != applied[ev.ID] {
					t.Fatalf("%s: Duplicate = %v", ev.ID, up.Duplicate)
				}
				applied[ev.ID] = true
			}
			compareWithRebuild(t, "live revisions", m, StoreConfig{}, cfg, want)
		})
	}

	// The snapshot path: the log's events through CSVWriter and back.
	var buf bytes.Buffer
	w := NewCSVWriter(&buf)
	for _, ev := range append(slices.Clone(base), revised[:4]...) {
		if err := w.Write(ev); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Write(revised[5]); err != nil {
		t.Fatal(err)
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	snap, err := NewStore(StoreConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if err := snap.Load(bytes.NewReader(buf.Bytes()), FormatCSV); err != nil {
		t.Fatal(err)
	}
	if snap.Fingerprint() != newTestStore(t, StoreConfig{}, want).Fingerprint() {
		t.Fatal("the snapshot of a log with revisions differs from one with only the latest ratings")
	}
	if v, _ := snap.Value(base[0].User, "new-item"); v != 3 {
		t.Fatalf("H[user][new-item] = %g after 2, 5, 3, want 3", v)
	}
}

// TestRevisionWireAndLimits checks the previous field on the wire, its
// limits, and that a revision is refused under time decay, which would
// retract the old value at the wrong time.
func TestRevisionWireAndLimits(t *testing.T) {
	t.Parallel()
	var ev Event
	if err := json.Unmarshal([]byte(`{"id":"x.r1","user":"u","item":"i","event":"rating","value":5,"previous":2}`), &ev); err != nil {
		t.Fatal(err)
	}
	if ev.Value != 5 || ev.Previous != 2 {
		t.Fatalf("decoded %+v", ev)
	}
	b, err := json.Marshal(ev)
	if err != nil || !bytes.Contains(b, []byte(`"previous":2`)) {
		t.Fatalf("encoded %s, %v", b, err)
	}
	if b, _ := json.Marshal(Event{User: "u", Item: "i", Type: EventView, Value: 1}); bytes.Contains(b, []byte("previous")) {
		t.Fatalf("an event that replaces nothing carries previous: %s", b)
	}
	st := newTestStore(t, StoreConfig{}, nil)
	for _, bad := range []float64{2e9, -2e9} {
		err := st.Add(Event{User: "u", Item: "i", Type: EventRating, Value: 1, Previous: bad})
		var ie *InputError
		if !errors.As(err, &ie) || ie.Field != "previous" {
			t.Fatalf("previous %g: %v, want an error naming previous", bad, err)
		}
	}
	decayed := newTestStore(t, StoreConfig{HalfLife: 24 * time.Hour, DecayAnchor: time.Unix(1_700_000_000, 0)}, nil)
	err = decayed.Add(Event{User: "u", Item: "i", Type: EventRating, Value: 5, Previous: 2})
	var ie *InputError
	if !errors.As(err, &ie) || ie.Field != "previous" {
		t.Fatalf("a revision under decay: %v, want an error naming previous", err)
	}
	if err := decayed.Add(Event{User: "u", Item: "i", Type: EventRating, Value: 5}); err != nil {
		t.Fatalf("a plain event under decay: %v", err)
	}
	if decayed.Cells() != 1 {
		t.Fatalf("%d cells after one refused and one added event", decayed.Cells())
	}
}
