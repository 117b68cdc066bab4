package recsys

import (
	"bytes"
	"encoding/json"
	"math"
	"strings"
	"testing"
)

// handModel: three users; a and b share x and y; b also has z (a template)
// and w (a topic); c has only y.
func handModel(t *testing.T) *Model {
	t.Helper()
	evs := []Event{
		{User: "a", Item: "x", Type: EventView, Value: 1},
		{User: "a", Item: "y", Type: EventView, Value: 1},
		{User: "b", Item: "x", Type: EventView, Value: 1},
		{User: "b", Item: "y", Type: EventView, Value: 1},
		{User: "b", Item: "z", Type: EventPurchase, Value: 1, ItemKind: "template"},
		{User: "b", Item: "w", Type: EventView, Value: 1, ItemKind: "topic"},
		{User: "c", Item: "y", Type: EventView, Value: 1},
		{User: "c", Item: "v", Type: EventRejected, Value: 1},
	}
	return build(t, newTestStore(t, StoreConfig{}, evs), Config{})
}

func TestRecommendUserKNNByHand(t *testing.T) {
	t.Parallel()
	m := handModel(t)
	// sim(a,b) = 2/(sqrt2 sqrt(1+1+25+1)) = 2/sqrt(56); sim(a,c) = 1/(sqrt2 sqrt5).
	// score(z) = sim(a,b)*5, score(w) = sim(a,b)*1; v has a negative score.
	sab := 2 / math.Sqrt(56)
	got, err := m.Recommend("a", RecOptions{})
	if err != nil {
		t.Fatal(err)
	}
	want := []Scored{{"z", 5 * sab}, {"w", sab}}
	if !sameRecs(got, want) || got[0].Item != "z" {
		t.Fatalf("recommendations of a = %v, want %v", got, want)
	}
	got, _ = m.Recommend("a", RecOptions{Kinds: []string{"topic"}})
	if len(got) != 1 || got[0].Item != "w" {
		t.Fatalf("topic recommendations of a = %v, want [w]", got)
	}
	got, _ = m.Recommend("a", RecOptions{Filter: func(item, kind string) bool { return kind != "template" }, N: 1})
	if len(got) != 1 || got[0].Item != "w" {
		t.Fatalf("filtered recommendations of a = %v, want [w]", got)
	}
}

func TestRecommendItemKNNExcludesSeen(t *testing.T) {
	t.Parallel()
	m := handModel(t)
	got, err := m.Recommend("c", RecOptions{Method: ItemKNN})
	if err != nil {
		t.Fatal(err)
	}
	// c saw y and v. y's neighbours are x (shares users a and b), z and w
	// (share b); v has no positive neighbour.
	for _, r := range got {
		if r.Item == "y" || r.Item == "v" {
			t.Fatalf("item-kNN recommended seen item %s: %v", r.Item, got)
		}
	}
	if len(got) != 3 || got[0].Item != "x" {
		t.Fatalf("item-kNN recommendations of c = %v, want x first of 3", got)
	}
}

func TestRecommendColdStartFallsBackToPopular(t *testing.T) {
	t.Parallel()
	m := handModel(t)
	// Popularity counts users with a positive value: y 3, x 2, z 1, w 1; v 0.
	got, err := m.Recommend("stranger", RecOptions{N: 3})
	if err != nil {
		t.Fatal(err)
	}
	want := []Scored{{"y", 3}, {"x", 2}, {"z", 1}}
	if len(got) != 3 || got[0] != want[0] || got[1] != want[1] || got[2] != want[2] {
		t.Fatalf("cold-start list = %v, want %v", got, want)
	}
	got, _ = m.Recommend("stranger", RecOptions{NoFallback: true})
	if len(got) != 0 {
		t.Fatalf("cold-start with NoFallback = %v, want nothing", got)
	}
	// b's neighbours offer only v, with a negative score; the fallback skips
	// b's own items and v, which nobody rated positively.
	if got, _ = m.Recommend("b", RecOptions{}); len(got) != 0 {
		t.Fatalf("b got %v, want nothing", got)
	}
	if _, err := m.Recommend("a", RecOptions{N: -1}); err == nil {
		t.Fatal("N = -1 accepted")
	}
}

func TestWriteRecommendationsContract(t *testing.T) {
	t.Parallel()
	m := build(t, newTestStore(t, StoreConfig{}, synth(t, smallSynth(8))), Config{})
	var buf bytes.Buffer
	n, err := WriteRecommendations(&buf, m, RecOptions{N: 5})
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
	if n != m.Users() || len(lines) != n {
		t.Fatalf("%d lines, %d reported, want one per user (%d)", len(lines), n, m.Users())
	}
	for i, line := range lines {
		var rec struct {
			User  *string `json:"user"`
			Items []struct {
				Item  *string  `json:"item"`
				Score *float64 `json:"score"`
			} `json:"items"`
		}
		if err := json.Unmarshal([]byte(line), &rec); err != nil || rec.User == nil || rec.Items == nil {
			t.Fatalf("line %d %q: %v", i+1, line, err)
		}
		seen := map[string]bool{}
		for _, it := range m.Seen(*rec.User) {
			seen[it] = true
		}
		for j, it := range rec.Items {
			if it.Item == nil || it.Score == nil || seen[*it.Item] {
				t.Fatalf("line %d item %d: missing field or seen item: %s", i+1, j, line)
			}
			if j > 0 && *it.Score > *rec.Items[j-1].Score {
				t.Fatalf("line %d: scores not descending: %s", i+1, line)
			}
		}
		if len(rec.Items) > 5 {
			t.Fatalf("line %d: %d items, N is 5", i+1, len(rec.Items))
		}
	}
}
