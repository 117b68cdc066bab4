package recsys

import (
	"bytes"
	"math/rand/v2"
	"testing"
	"time"
)

// TestCSVWriterRoundTrip writes events with awkward IDs, values and times
// and reads them back to the same events, and the same store.
func TestCSVWriterRoundTrip(t *testing.T) {
	t.Parallel()
	evs := randomEvents(rand.New(rand.NewPCG(4, 4)), 300, 40, 30, time.Unix(1_699_000_000, 123456789))
	evs = append(evs,
		Event{ID: `q"1`, User: `a,"b"`, Item: "i,1", Type: EventRating, Value: 0.1 + 0.2, ItemKind: `k"`},
		Event{User: "plain", Item: "ü", Type: EventDwell, Value: -1e-300, Time: time.Date(2023, 12, 2, 3, 4, 5, 6, time.FixedZone("x", 3600))},
	)
	var buf bytes.Buffer
	w := NewCSVWriter(&buf)
	for _, ev := range evs {
		if err := w.Write(ev); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	var back []Event
	if err := ReadEvents(bytes.NewReader(buf.Bytes()), FormatCSV, Limits{}, func(_ int, ev Event) error {
		back = append(back, ev)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(back) != len(evs) {
		t.Fatalf("read %d events back, wrote %d", len(back), len(evs))
	}
	for i, ev := range evs {
		got := back[i]
		if got.ID != ev.ID || got.User != ev.User || got.Item != ev.Item || got.Type != ev.Type ||
			got.Value != ev.Value || !got.Time.Equal(ev.Time) || got.ItemKind != ev.ItemKind {
			t.Fatalf("event %d: wrote %+v, read %+v", i, ev, got)
		}
	}
	sc := StoreConfig{HalfLife: 7 * 24 * time.Hour, DecayAnchor: time.Unix(1_701_000_000, 0)}
	a, b := newTestStore(t, sc, evs), newTestStore(t, sc, back)
	if a.Fingerprint() != b.Fingerprint() {
		t.Fatal("the store read back differs from the one written")
	}
	// No event at all still makes a file with a header.
	var empty bytes.Buffer
	if err := NewCSVWriter(&empty).Flush(); err != nil || empty.String() != "user,item,event,value,ts,kind,id\n" {
		t.Fatalf("empty file %q, %v", empty.String(), err)
	}
}
