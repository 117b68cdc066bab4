package recsys

import (
	"errors"
	"strings"
	"testing"
)

// FuzzReadEvents: interaction files come from users. Reading them and
// adding the events to a Store must not panic; every refusal is bad input
// (an *InputError naming the line and field).
func FuzzReadEvents(f *testing.F) {
	f.Add("user,item,event,value,ts\nu1,i1,click,1,1700000000\nu2,i2,rating,4,\n", true)
	f.Add(`{"user":"u","item":"i","event":"view"}`+"\n"+`{"user":"","item":"i","event":"view"}`, false)
	f.Add("user,item\nu,i\n", true)
	f.Add("user,item,event,value\nu,i,click,NaN\nu,i,click,1e308\n", true)
	f.Add(`{"user":"u","item":"i","event":"click","ts":"2026-13-40T99:00:00Z"}`, false)
	f.Fuzz(func(t *testing.T, data string, csv bool) {
		format := FormatJSONL
		if csv {
			format = FormatCSV
		}
		st, err := NewStore(StoreConfig{})
		if err != nil {
			t.Fatal(err)
		}
		lim := DefaultLimits()
		err = ReadEvents(strings.NewReader(data), format, lim, func(line int, ev Event) error {
			if line < 1 {
				t.Fatalf("event on line %d", line)
			}
			// The store is where events are checked: it either keeps the
			// event or refuses it as bad input, never anything else.
			if err := st.Add(ev); err != nil && !errors.Is(err, ErrBadInput) {
				t.Fatalf("line %d: store refused %+v with a non-input error: %v", line, ev, err)
			}
			return nil
		})
		if err != nil && !errors.Is(err, ErrBadInput) {
			var ie *InputError
			if !errors.As(err, &ie) {
				t.Fatalf("error is neither bad input nor an InputError: %v", err)
			}
		}
	})
}
