package feedback

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/tandem-ai/tandem/limits"
	"github.com/tandem-ai/tandem/pipeline"
	"github.com/tandem-ai/tandem/recsys"
)

// Feedback actions a person can take on a generation.
const (
	ActionAccept     = "accept"     // used as is
	ActionReject     = "reject"     // not wanted
	ActionRate       = "rate"       // a rating, MinRating..MaxRating
	ActionEdit       = "edit"       // used after editing; carries the edited text
	ActionRegenerate = "regenerate" // asked for another one instead
)

// Actions lists the feedback actions in a stable order.
func Actions() []string {
	return []string{ActionAccept, ActionReject, ActionRate, ActionEdit, ActionRegenerate}
}

// actionEvents maps each action onto the recommender's event type; the
// type's weight (recsys.DefaultEventWeights) says how much it counts.
var actionEvents = map[string]string{
	ActionAccept:     recsys.EventAccepted,
	ActionReject:     recsys.EventRejected,
	ActionRate:       recsys.EventRating,
	ActionEdit:       recsys.EventEdited,
	ActionRegenerate: recsys.EventRegenerated,
}

// ActionEvent is the recommender event type of action, "" for an unknown
// action.
func ActionEvent(action string) string { return actionEvents[action] }

// Limits on feedback.
const (
	MinRating = limits.MinFeedbackRating
	MaxRating = limits.FeedbackRating
	// MaxTextBytes bounds the prompt, completion and edited text an event
	// carries: the fine-tune collector's limit, so every accepted or edited
	// generation that fits is a usable sample.
	MaxTextBytes = limits.FeedbackTextBytes
	// MaxCount and MaxDwellSeconds bound the values of the types that
	// count and of a dwell (valueRange).
	MaxCount        = limits.FeedbackCount
	MaxDwellSeconds = limits.FeedbackDwellSeconds
)

// ErrInvalid marks an event refused by a rule (Check) or a decoder; the
// message names the field.
var ErrInvalid = errors.New("bad feedback")

// IsRating reports whether v is a rating: an integer in [MinRating,
// MaxRating].
func IsRating(v float64) bool {
	return v == math.Trunc(v) && v >= MinRating && v <= MaxRating
}

// Event is the JSON body of one feedback event on the FEEDBACK stream. Its
// first fields are the recommender's interaction (Interaction); the
// generation fields after them make it feedback on a generation
// (OnGeneration), which the fine-tune collector and the loop metrics read.
// docs/EVENTS.md describes every field.
type Event struct {
	ID       string    `json:"id"`
	User     string    `json:"user"`
	Item     string    `json:"item,omitempty"`
	Type     string    `json:"event"`
	Value    float64   `json:"value"`
	Time     time.Time `json:"ts"`
	ItemKind string    `json:"kind,omitempty"`
	// Previous is the rating a revision replaces (recsys.Event.Previous:
	// consumers count Value - Previous); 0 in every other event.
	Previous float64 `json:"previous,omitempty"`

	GenerationID string `json:"generation_id"`
	Action       string `json:"action"`
	Template     string `json:"template,omitempty"`
	Topic        string `json:"topic,omitempty"`
	Model        string `json:"model,omitempty"`
	Source       string `json:"source,omitempty"`
	Prompt       string `json:"prompt"`
	Completion   string `json:"completion"`
	EditedText   string `json:"edited_text,omitempty"`
	// Revision is k >= 1 in the k-th re-rating of a generation (event id
	// RevisionID), 0 otherwise; RatedAt, in a revision, is when the
	// generation was first rated: the loop metrics count the change in
	// that hour, where the rating itself was counted.
	Revision int       `json:"revision,omitempty"`
	RatedAt  time.Time `json:"rated_at,omitzero"`

	// raw is the JSON a plain recommender event was decoded from: it
	// travels on as the client sent it, context fields and all (Encode).
	raw string
}

// EventID is the id of the event for action on generation genID:
// deterministic, so a resend of the same feedback is dropped (by
// JetStream within its duplicate window, by the recommender and the loop
// metrics after it). A rating that changes is the exception: its later
// values are revisions, each with an id of its own (RevisionID).
func EventID(genID, action string) string {
	return "fb-" + action + "-" + genID
}

// RevisionID is the id of the k-th revision (k >= 1) of the rating of
// generation genID: fb-rate-<genID>.r<k>. The dot is outside the alphabet
// of generation ids (pipeline.ValidateID), so a revision's id is never
// another generation's first rating ("fb-rate-x-r1" would be generation
// "x-r1"'s).
func RevisionID(genID string, k int) string {
	if k == 0 {
		return EventID(genID, ActionRate)
	}
	return EventID(genID, ActionRate) + ".r" + strconv.Itoa(k)
}

// OnGeneration reports whether ev is feedback on a generation: it has a
// generation id or an action. A plain recommender event has neither.
func (ev Event) OnGeneration() bool { return ev.GenerationID != "" || ev.Action != "" }

// Interaction is the event as the recommender applies it: the one place
// the wire event becomes recsys's.
func (ev Event) Interaction() recsys.Event {
	return recsys.Event{ID: ev.ID, User: ev.User, Item: ev.Item, Type: ev.Type, Value: ev.Value, Previous: ev.Previous,
		Time: ev.Time, ItemKind: ev.ItemKind}
}

// Encode is the event's JSON (HTML characters not escaped, so text keeps
// its size). A plain recommender event decoded from a client's JSON is
// that JSON, with its id written in if it had none; one built here is its
// Interaction, the shape docs/EVENTS.md gives it.
func (ev Event) Encode() ([]byte, error) {
	var v any = ev
	switch {
	case ev.OnGeneration():
	case ev.raw != "":
		return withID(ev.raw, ev.ID)
	default:
		v = ev.Interaction()
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// UnmarshalJSON decodes an event as the recommender reads one: value 1
// when absent, ts as RFC 3339 text or Unix seconds. Unknown fields are
// ignored, so that clients may add context to their events.
func (ev *Event) UnmarshalJSON(b []byte) error {
	type fields Event // Event without this method
	*ev = Event{}
	w := struct {
		*fields
		Value *float64        `json:"value"`
		Time  json.RawMessage `json:"ts"`
	}{fields: (*fields)(ev)}
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	ev.Value = 1
	if w.Value != nil {
		ev.Value = *w.Value
	}
	if len(w.Time) > 0 && !bytes.Equal(w.Time, []byte("null")) {
		t, err := recsys.ParseJSONTime(w.Time)
		if err != nil {
			return err
		}
		ev.Time = t
	}
	if !ev.OnGeneration() { // a plain recommender event: nothing else of it counts
		*ev = Event{ID: ev.ID, User: ev.User, Item: ev.Item, Type: ev.Type, Value: ev.Value, Time: ev.Time, ItemKind: ev.ItemKind, Previous: ev.Previous,
			raw: string(bytes.TrimSpace(b))}
	}
	return nil
}

// withID returns the JSON object raw with its "id" set to id; fields are
// kept.
func withID(raw, id string) ([]byte, error) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal([]byte(raw), &fields); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	var had string // "" when absent
	if _ = json.Unmarshal(fields["id"], &had); had == id {
		return []byte(raw), nil
	}
	fields["id"], _ = json.Marshal(id)
	return json.Marshal(fields)
}

// Decode reads one event and checks it (Check): subject is the subject it
// arrived on, "" when the caller derives it from the type (the API).
// Errors are ErrInvalid naming the field.
func Decode(subject string, data []byte) (Event, error) {
	var ev Event
	if len(data) > pipeline.MaxEventBytes {
		return ev, fmt.Errorf("%w: the event is %d bytes, limit %d", ErrInvalid, len(data), pipeline.MaxEventBytes)
	}
	if err := json.Unmarshal(data, &ev); err != nil {
		var te *json.UnmarshalTypeError
		var ie *recsys.InputError
		switch {
		case errors.As(err, &te) && te.Field != "":
			return ev, fmt.Errorf("%w: field %q: want %s, got JSON %s", ErrInvalid, te.Field, te.Type, te.Value)
		case errors.As(err, &ie):
			return ev, fmt.Errorf("%w: %w", ErrInvalid, err)
		}
		return ev, fmt.Errorf("%w: not a JSON object: %w", ErrInvalid, err)
	}
	return ev, ev.Check(subject)
}

// Digest identifies the event's content for a claim on its id
// (loop.Intake.Claim). The time is left out (a client's retry may restamp
// it), and so are a generation's texts, model, template and topic, which
// come from its record.
func (ev Event) Digest() string {
	b, _ := json.Marshal([]any{ev.User, ev.Item, ev.ItemKind, ev.Type, ev.Value, ev.Previous,
		ev.GenerationID, ev.Action, ev.EditedText, ev.Revision})
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:16]) // 128 bits: no two contents meet by chance
}
