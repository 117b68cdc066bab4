package recsys

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestParseCSVAndJSONL(t *testing.T) {
	t.Parallel()
	csv := "\xef\xbb\xbfuser, ITEM ,event,value,ts,kind,id\r\n" +
		"u1,i1,view,,1700000000,template,\r\n" +
		"\r\n" +
		`"u,2","i""2",rating,4.5,2023-11-14T22:13:20Z,,x7` + "\n" +
		"u3,i1,click,2,,,"
	jsonl := `{"user":"u1","item":"i1","event":"view","ts":1700000000,"kind":"template"}` + "\n\n" +
		`{"user":"u,2","item":"i\"2","event":"rating","value":4.5,"ts":"2023-11-14T22:13:20Z","id":"x7","extra":{"prompt":"hi"}}` + "\n" +
		`{"user":"u3","item":"i1","event":"click","value":2}`
	want := []Event{
		{User: "u1", Item: "i1", Type: "view", Value: 1, Time: time.Unix(1_700_000_000, 0).UTC(), ItemKind: "template"},
		{ID: "x7", User: "u,2", Item: `i"2`, Type: "rating", Value: 4.5, Time: time.Unix(1_700_000_000, 0).UTC()},
		{User: "u3", Item: "i1", Type: "click", Value: 2},
	}
	wantLines := []int{2, 4, 5}
	for _, tc := range []struct {
		format Format
		text   string
		lines  []int
	}{{FormatCSV, csv, wantLines}, {FormatJSONL, jsonl, []int{1, 3, 4}}} {
		var got []Event
		var lines []int
		err := ReadEvents(strings.NewReader(tc.text), tc.format, Limits{}, func(line int, ev Event) error {
			got, lines = append(got, ev), append(lines, line)
			return nil
		})
		if err != nil {
			t.Fatalf("%v: %v", tc.format, err)
		}
		if len(got) != len(want) {
			t.Fatalf("%v: %d events, want %d: %+v", tc.format, len(got), len(want), got)
		}
		for i, w := range want {
			g := got[i]
			if !g.Time.Equal(w.Time) {
				t.Errorf("%v event %d time %v, want %v", tc.format, i, g.Time, w.Time)
			}
			g.Time, w.Time = time.Time{}, time.Time{}
			if g != w || lines[i] != tc.lines[i] {
				t.Errorf("%v event %d (line %d) = %+v, want %+v (line %d)", tc.format, i, lines[i], g, w, tc.lines[i])
			}
		}
	}
}

// TestParseErrorsNameLineAndField feeds one bad line at a time, through the
// store (which also validates event types and values), and checks the
// message names the line and the field.
func TestParseErrorsNameLineAndField(t *testing.T) {
	t.Parallel()
	const head = "user,item,event,value,ts\n"
	long := strings.Repeat("x", 300)
	for _, tc := range []struct {
		name, text string
		format     Format
		line       int
		field      string
	}{
		{"csv bad value", head + "u1,i1,view,1,\nu1,i2,view,lots,\n", FormatCSV, 3, "value"},
		{"csv unknown event", head + "u1,i1,teleport,1,\n", FormatCSV, 2, "event"},
		{"csv empty user", head + ",i1,view,1,\n", FormatCSV, 2, "user"},
		{"csv long item", head + "u1," + long + ",view,1,\n", FormatCSV, 2, "item"},
		{"csv bad ts", head + "u1,i1,view,1,yesterday\n", FormatCSV, 2, "ts"},
		{"csv field count", head + "u1,i1,view\n", FormatCSV, 2, ""},
		{"csv unknown column", "user,item,event,color\n", FormatCSV, 1, "color"},
		{"csv missing column", "user,value\nu1,1\n", FormatCSV, 1, "item"},
		{"csv duplicate column", "user,item,event,user\n", FormatCSV, 1, "user"},
		{"csv unterminated quote", head + "\"u1,i1,view,1,\n", FormatCSV, 2, ""},
		{"csv nan value", head + "u1,i1,view,NaN,\n", FormatCSV, 2, "value"},
		{"csv huge value", head + "u1,i1,view,1e300,\n", FormatCSV, 2, "value"},
		{"line too long", head + "u1,i1,view,1," + strings.Repeat("9", 70_000) + "\n", FormatCSV, 2, ""},
		{"jsonl syntax", `{"user":"u1","item":"i1","event":"view"}` + "\n{\"user\":\n", FormatJSONL, 2, ""},
		{"jsonl value type", `{"user":"u1","item":"i1","event":"view","value":"high"}`, FormatJSONL, 1, "value"},
		{"jsonl user type", `{"user":5,"item":"i1","event":"view"}`, FormatJSONL, 1, "user"},
		{"jsonl bad ts", `{"user":"u1","item":"i1","event":"view","ts":"noon"}`, FormatJSONL, 1, "ts"},
		{"jsonl missing item", `{"user":"u1","event":"view"}`, FormatJSONL, 1, "item"},
		{"jsonl not object", `[1,2]`, FormatJSONL, 1, ""},
		{"jsonl long id", `{"id":"` + long + `","user":"u1","item":"i1","event":"view"}`, FormatJSONL, 1, "id"},
	} {
		st, err := NewStore(StoreConfig{})
		if err != nil {
			t.Fatal(err)
		}
		err = st.Load(strings.NewReader(tc.text), tc.format)
		var ie *InputError
		if !errors.As(err, &ie) || !errors.Is(err, ErrBadInput) {
			t.Errorf("%s: error %v, want an InputError", tc.name, err)
			continue
		}
		if ie.Line != tc.line || ie.Field != tc.field {
			t.Errorf("%s: line %d field %q (%v), want line %d field %q", tc.name, ie.Line, ie.Field, err, tc.line, tc.field)
		}
		if !strings.Contains(err.Error(), "line ") {
			t.Errorf("%s: message %q does not name the line", tc.name, err)
		}
	}
}

func TestStoreLimits(t *testing.T) {
	t.Parallel()
	st, err := NewStore(StoreConfig{Limits: Limits{MaxUsers: 2, MaxItems: 3, MaxCells: 4, MaxKinds: 1}})
	if err != nil {
		t.Fatal(err)
	}
	add := func(u, i, kind string) error {
		return st.Add(Event{User: u, Item: i, Type: EventView, Value: 1, ItemKind: kind})
	}
	for _, ok := range [][3]string{{"a", "x", "k"}, {"a", "y", ""}, {"b", "x", "k"}, {"b", "y", ""}} {
		if err := add(ok[0], ok[1], ok[2]); err != nil {
			t.Fatal(err)
		}
	}
	for name, tc := range map[string]struct {
		u, i, kind, field string
	}{
		"users": {"c", "x", "", "user"},
		"cells": {"a", "z", "", "item"},
		"kinds": {"a", "x", "other", "kind"},
	} {
		var ie *InputError
		if err := add(tc.u, tc.i, tc.kind); !errors.As(err, &ie) || ie.Field != tc.field {
			t.Errorf("%s limit: error %v, want field %q", name, err, tc.field)
		}
	}
	if err := add("a", "x", ""); err != nil { // an existing pair is always fine
		t.Fatal(err)
	}
	if st.Users() != 2 || st.Items() != 2 || st.Cells() != 4 {
		t.Fatalf("store has %d users %d items %d cells after rejections", st.Users(), st.Items(), st.Cells())
	}
}

func TestFormatFromPath(t *testing.T) {
	t.Parallel()
	for path, want := range map[string]Format{"a.csv": FormatCSV, "b.JSONL": FormatJSONL, "c.ndjson": FormatJSONL} {
		if got, err := FormatFromPath(path); err != nil || got != want {
			t.Errorf("FormatFromPath(%q) = %v, %v; want %v", path, got, err, want)
		}
	}
	if _, err := FormatFromPath("d.parquet"); !errors.Is(err, ErrBadInput) {
		t.Errorf("FormatFromPath(.parquet) = %v, want ErrBadInput", err)
	}
}

func TestDecayAndWeights(t *testing.T) {
	t.Parallel()
	anchor := time.Unix(1_700_000_000, 0)
	st, err := NewStore(StoreConfig{HalfLife: time.Hour, DecayAnchor: anchor,
		EventWeights: map[string]float64{"like": 2, "dislike": -1}})
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range []Event{
		{User: "u", Item: "i", Type: "like", Value: 1, Time: anchor.Add(-2 * time.Hour)}, // 2 * 1/4
		{User: "u", Item: "i", Type: "dislike", Value: 3, Time: anchor},                  // -3
		{User: "u", Item: "i", Type: "like", Value: 1},                                   // no time: 2
		{User: "u", Item: "i", Type: "like", Value: 1, Time: anchor.Add(time.Hour)},      // 4
	} {
		if err := st.Add(ev); err != nil {
			t.Fatal(err)
		}
	}
	if got, _ := st.Value("u", "i"); got != 0.5-3+2+4 {
		t.Fatalf("H[u][i] = %g, want 3.5", got)
	}
	err = st.Add(Event{User: "u", Item: "i", Type: "like", Value: 1, Time: anchor.Add(100 * time.Hour)})
	var ie *InputError
	if !errors.As(err, &ie) || ie.Field != "ts" {
		t.Fatalf("event 100 half-lives ahead: %v, want a ts error", err)
	}
	if _, err := NewStore(StoreConfig{HalfLife: time.Hour}); err == nil {
		t.Fatal("HalfLife without DecayAnchor accepted")
	}
}
