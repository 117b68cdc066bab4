package recsys

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"
)

func TestInteractionLogAppendOnceInOrder(t *testing.T) {
	rdb := redisClient(t)
	ctx := context.Background()
	l := NewInteractionLog(rdb, InteractionLogOptions{})
	if last, err := l.Last(ctx); err != nil || last != LogStart {
		t.Fatalf("Last of an empty log = %q, %v; want %q", last, err, LogStart)
	}
	evs := []Event{
		{ID: "a", User: "u1", Item: "i1", Type: EventView, Value: 1, Time: time.Unix(1_700_000_000, 5).UTC(), ItemKind: "template"},
		{ID: "b", User: "u2", Item: "i1", Type: EventRating, Value: 4.5},
		{ID: "c", User: "u1", Item: "i2", Type: EventRejected, Value: 0},
		{ID: "b.r1", User: "u2", Item: "i1", Type: EventRating, Value: 2, Previous: 4.5}, // a revision of b
	}
	var ids []string
	for _, ev := range evs {
		id, added, err := l.Append(ctx, ev)
		if err != nil || !added {
			t.Fatalf("Append(%s) = %q, %v, %v", ev.ID, id, added, err)
		}
		ids = append(ids, id)
	}
	// A redelivery, even racing with itself, is logged once and gets the
	// first entry's position back.
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id, added, err := l.Append(ctx, Event{ID: "b", User: "u2", Item: "i1", Type: EventRating, Value: 4.5})
			if err != nil || added || id != ids[1] {
				t.Errorf("Append of a logged event = %q, %v, %v; want %q, false", id, added, err, ids[1])
			}
		}()
	}
	wg.Wait()
	if n, err := l.Len(ctx); err != nil || n != 4 {
		t.Fatalf("Len = %d, %v; want 4", n, err)
	}
	got, err := l.Read(ctx, LogStart, 10, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 4 {
		t.Fatalf("Read returned %d entries, want 4", len(got))
	}
	for i, e := range got {
		if e.ID != ids[i] || !e.Event.Time.Equal(evs[i].Time) || e.Event.Value != evs[i].Value || e.Event.Previous != evs[i].Previous ||
			e.Event.ID != evs[i].ID || e.Event.User != evs[i].User || e.Event.ItemKind != evs[i].ItemKind {
			t.Fatalf("entry %d = %+v, want %s %+v", i, e, ids[i], evs[i])
		}
	}
	// Range is exclusive at the start and inclusive at the end.
	mid, err := l.Range(ctx, ids[0], ids[1], 10)
	if err != nil || len(mid) != 1 || mid[0].ID != ids[1] {
		t.Fatalf("Range(%s, %s] = %v, %v", ids[0], ids[1], mid, err)
	}
	if last, err := l.Last(ctx); err != nil || last != ids[3] {
		t.Fatalf("Last = %q, %v; want %q", last, err, ids[3])
	}
	// A blocking read returns at once when entries exist, and empty-handed
	// after the wait when none come.
	if tail, err := l.Read(ctx, ids[3], 10, 50*time.Millisecond); err != nil || len(tail) != 0 {
		t.Fatalf("Read past the end = %v, %v", tail, err)
	}
	if n, err := l.TrimBefore(ctx, ids[2]); err != nil || n != 2 {
		t.Fatalf("TrimBefore = %d, %v; want 2", n, err)
	}
	if rest, err := l.Read(ctx, LogStart, 10, 0); err != nil || len(rest) != 2 || rest[0].ID != ids[2] {
		t.Fatalf("after the trim: %v, %v", rest, err)
	}
	// Trimmed events stay remembered: a late redelivery is not logged again.
	if _, added, err := l.Append(ctx, evs[0]); err != nil || added {
		t.Fatalf("Append of a trimmed event: added=%v err=%v", added, err)
	}
	if _, _, err := l.Append(ctx, Event{User: "u1", Item: "i1", Type: EventView}); !errors.Is(err, ErrBadInput) {
		t.Fatalf("Append without an ID: %v, want ErrBadInput", err)
	}
}

func TestCompareLogIDs(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		a, b string
		want int
	}{
		{"0-0", "0-0", 0},
		{"1-0", "0-5", 1},
		{"10-0", "9-99", 1},
		{"5-2", "5-10", -1},
		{"bad", "0-0", -1},
		{"0-0", "x-1", 1},
	} {
		if got := CompareLogIDs(tc.a, tc.b); got != tc.want {
			t.Errorf("CompareLogIDs(%q, %q) = %d, want %d", tc.a, tc.b, got, tc.want)
		}
	}
	if _, err := ParseLogID("12"); !errors.Is(err, ErrBadInput) {
		t.Errorf("ParseLogID(12): %v", err)
	}
	if got := CompareLogIDs("18446744073709551615-0", "1-0"); got != 1 {
		t.Errorf("CompareLogIDs of the largest position = %d, want 1", got)
	}
}

// TestInteractionLogStaysWithinItsCap appends ten times the cap: the log
// keeps about the cap's worth of the newest entries (Redis trims whole
// stream nodes, so a little more), not every entry.
func TestInteractionLogStaysWithinItsCap(t *testing.T) {
	rdb := redisClient(t)
	ctx := context.Background()
	const maxLen = 50
	l := NewInteractionLog(rdb, InteractionLogOptions{MaxLen: maxLen})
	var last string
	for i := range 10 * maxLen {
		id, added, err := l.Append(ctx, Event{ID: fmt.Sprintf("e%d", i), User: "u1", Item: "i1", Type: EventView, Value: 1})
		if err != nil || !added {
			t.Fatalf("Append %d: %v %v", i, added, err)
		}
		last = id
	}
	n, err := l.Len(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// A stream node holds at most stream-node-max-entries (100 by default).
	nodeMax := int64(100)
	if v, err := rdb.ConfigGet(ctx, "stream-node-max-entries").Result(); err == nil {
		if s, ok := v["stream-node-max-entries"]; ok {
			if x, err := strconv.ParseInt(s, 10, 64); err == nil && x > 0 {
				nodeMax = x
			}
		}
	}
	if n < maxLen || n > maxLen+nodeMax {
		t.Fatalf("log of %d entries after %d appends with a cap of %d", n, 10*maxLen, maxLen)
	}
	if got, err := l.Last(ctx); err != nil || got != last {
		t.Fatalf("Last = %q, %v; want the newest entry %q", got, err, last)
	}
}
