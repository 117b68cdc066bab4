package recsys

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/tandem-ai/tandem/limits"
)

// Event is one interaction: user did Type to Item, with an optional Value and
// time. Files and feedback events decode into it. ID is optional in files;
// feedback events carry one so that Model.Apply can drop redeliveries.
type Event struct {
	// ID identifies the event for de-duplication; empty means "no ID".
	ID string `json:"id,omitempty"`
	// User and Item are opaque, non-empty strings of at most Limits.MaxIDBytes.
	User string `json:"user"`
	Item string `json:"item"`
	// Type names the event kind ("view", "rating", ...); its weight comes from
	// StoreConfig.EventWeights.
	Type string `json:"event"`
	// Value multiplies the type's weight: a rating, dwell seconds, a count.
	// Decoders set 1 when the field is absent.
	Value float64 `json:"value"`
	// Previous, when not zero, is the value this event replaces: a person
	// who rates an item 2 and then 5 sends the rating 2, then a revision
	// with Value 5 and Previous 2. An event adds weight * (Value -
	// Previous), so the two add up to weight * 5, as if only the latest
	// rating had been sent; H stays the plain sum of its events (see
	// Store). Under time decay a revision is refused: it would retract the
	// old value at the revision's time rather than at the old event's.
	Previous float64 `json:"previous,omitempty"`
	// Time is when it happened; zero means "at the decay anchor" (no decay).
	Time time.Time `json:"ts,omitzero"`
	// ItemKind optionally tags the item ("template", "topic"); the last
	// non-empty kind seen for an item wins. Recommendations filter on it.
	ItemKind string `json:"kind,omitempty"`
}

// Standard event types. Their default weights are in DefaultEventWeights.
const (
	EventView     = "view"
	EventClick    = "click"
	EventPurchase = "purchase"
	EventRating   = "rating"   // value is the rating
	EventDwell    = "dwell"    // value is seconds
	EventAccepted = "accepted" // generated content accepted as is
	EventEdited   = "edited"   // generated content accepted after editing
	EventRejected = "rejected" // generated content rejected
	// EventRegenerated: the person asked for another generation instead;
	// a mild rejection of what was offered.
	EventRegenerated = "regenerated"
)

// DefaultEventWeights returns the weights used when StoreConfig.EventWeights
// is nil. A contribution is weight * value (* decay); a rejection counts
// against the item (a regeneration half as much), and a minute of dwell
// counts like a view.
func DefaultEventWeights() map[string]float64 {
	return map[string]float64{
		EventView:     1,
		EventClick:    2,
		EventPurchase: 5,
		EventRating:   1,
		EventDwell:    1.0 / 60,
		EventAccepted: 4,
		EventEdited:   3,
		EventRejected: -2,
		// A regeneration says "not this one" without saying "never": half a
		// rejection.
		EventRegenerated: -1,
	}
}

// eventJSON is Event's wire shape with the optional fields as pointers or
// raw values, so that absence can be told from zero.
type eventJSON struct {
	ID       string          `json:"id"`
	User     string          `json:"user"`
	Item     string          `json:"item"`
	Type     string          `json:"event"`
	Value    *float64        `json:"value"`
	Previous float64         `json:"previous"`
	Time     json.RawMessage `json:"ts"`
	ItemKind string          `json:"kind"`
}

// UnmarshalJSON decodes an event, defaulting Value to 1 and accepting ts as
// RFC 3339 text or Unix seconds. Unknown fields are ignored so that producers
// may add context (a prompt, a model version) to feedback events.
func (e *Event) UnmarshalJSON(b []byte) error {
	var w eventJSON
	if err := json.Unmarshal(b, &w); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return fieldErr(te.Field, "want %s, got JSON %s", te.Type, te.Value)
		}
		return &InputError{Err: fmt.Errorf("not a JSON object: %w", err)}
	}
	ev := Event{ID: w.ID, User: w.User, Item: w.Item, Type: w.Type, Value: 1, Previous: w.Previous, ItemKind: w.ItemKind}
	if w.Value != nil {
		ev.Value = *w.Value
	}
	if len(w.Time) > 0 && !bytes.Equal(w.Time, []byte("null")) {
		t, err := ParseJSONTime(w.Time)
		if err != nil {
			return err
		}
		ev.Time = t
	}
	*e = ev
	return nil
}

// ParseJSONTime reads an event's ts: RFC 3339 text or Unix seconds.
func ParseJSONTime(raw json.RawMessage) (time.Time, error) {
	if raw[0] == '"' {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return time.Time{}, fieldErr("ts", "bad string: %v", err)
		}
		return parseTime(s)
	}
	return parseTime(string(raw))
}

// parseTime reads Unix seconds (fractions allowed) or RFC 3339 text.
func parseTime(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if f, err := strconv.ParseFloat(s, 64); err == nil {
		// Bounded so that the conversion to nanoseconds cannot overflow.
		if math.IsNaN(f) || f < -9e9 || f > 9e9 {
			return time.Time{}, fieldErr("ts", "unix seconds %q out of range", s)
		}
		sec, frac := math.Modf(f)
		return time.Unix(int64(sec), int64(frac*1e9)).UTC(), nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fieldErr("ts", "want Unix seconds or RFC 3339, got %q", s)
	}
	return t, nil
}

// maxHalfLivesAhead bounds how far after the decay anchor an event may lie:
// its factor 2^x must stay well inside float32 range.
const maxHalfLivesAhead = limits.RecsEventHalfLivesAhead

// scorer turns an event into its contribution to H_u[item].
type scorer struct {
	weights  map[string]float64
	halfLife time.Duration
	anchor   time.Time
	lim      Limits
}

// CheckEvent checks ev as a Store with the default weights and limits
// does before it adds it: a known type, a user and an item, ids within
// their limits, finite values.
func CheckEvent(ev Event) error {
	s := scorer{weights: DefaultEventWeights(), lim: DefaultLimits()}
	return s.validate(&ev)
}

// validate checks the event's fields against the limits.
func (s *scorer) validate(ev *Event) error {
	if err := checkID("user", ev.User, s.lim, true); err != nil {
		return err
	}
	if err := checkID("item", ev.Item, s.lim, true); err != nil {
		return err
	}
	if err := checkID("id", ev.ID, s.lim, false); err != nil {
		return err
	}
	if err := checkID("kind", ev.ItemKind, s.lim, false); err != nil {
		return err
	}
	if ev.Type == "" {
		return fieldErr("event", "required")
	}
	if _, ok := s.weights[ev.Type]; !ok {
		return fieldErr("event", "unknown event type %.64q", ev.Type)
	}
	if math.IsNaN(ev.Value) || math.IsInf(ev.Value, 0) || math.Abs(ev.Value) > s.lim.MaxAbsValue {
		return fieldErr("value", "%g is not a finite number within ±%g", ev.Value, s.lim.MaxAbsValue)
	}
	if math.IsNaN(ev.Previous) || math.IsInf(ev.Previous, 0) || math.Abs(ev.Previous) > s.lim.MaxAbsValue {
		return fieldErr("previous", "%g is not a finite number within ±%g", ev.Previous, s.lim.MaxAbsValue)
	}
	if ev.Previous != 0 && s.halfLife > 0 {
		// The replaced value was added decayed from its own time, which
		// the revision does not carry: retracting it at the revision's
		// time would leave a remainder.
		return fieldErr("previous", "a revision cannot be applied under time decay (HalfLife %v)", s.halfLife)
	}
	return nil
}

// contribution is weight(type) * (value - previous) * 2^((ts -
// anchor)/halfLife): a revision adds the difference it makes. Decay
// relative to a fixed anchor rather than "now" changes every stored value by
// the same factor, which cosine similarity and score ranking ignore, so the
// state never has to be re-decayed as the clock moves.
func (s *scorer) contribution(ev *Event) (float64, error) {
	c := s.weights[ev.Type] * (ev.Value - ev.Previous)
	if s.halfLife <= 0 || ev.Time.IsZero() {
		return c, nil
	}
	x := float64(ev.Time.Sub(s.anchor)) / float64(s.halfLife)
	if x > maxHalfLivesAhead {
		return 0, fieldErr("ts", "%s is more than %d half-lives after the decay anchor %s",
			ev.Time.Format(time.RFC3339), maxHalfLivesAhead, s.anchor.Format(time.RFC3339))
	}
	return c * math.Exp2(x), nil
}

func checkID(field, v string, lim Limits, required bool) error {
	if v == "" {
		if required {
			return fieldErr(field, "required")
		}
		return nil
	}
	if len(v) > lim.MaxIDBytes {
		return fieldErr(field, "%d bytes, over the limit of %d", len(v), lim.MaxIDBytes)
	}
	if !utf8.ValidString(v) {
		return fieldErr(field, "not valid UTF-8")
	}
	for i := 0; i < len(v); i++ {
		if v[i] < 0x20 || v[i] == 0x7f {
			return fieldErr(field, "control character at byte %d", i)
		}
	}
	return nil
}
