package loop

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/tandem-ai/tandem/finetune"
	"github.com/tandem-ai/tandem/limits"
	"github.com/tandem-ai/tandem/pipeline"
	"github.com/tandem-ai/tandem/recsys"
)

// Feedback actions a person can take on a generation.
const (
	ActionAccept     = finetune.FeedbackAccept // used as is
	ActionReject     = "reject"                // not wanted
	ActionRate       = "rate"                  // a rating, MinRating..MaxRating
	ActionEdit       = finetune.FeedbackEdit   // used after editing; carries the edited text
	ActionRegenerate = "regenerate"            // asked for another one instead
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

// Limits on feedback.
const (
	MinRating = limits.MinFeedbackRating
	MaxRating = limits.FeedbackRating
	// MaxFeedbackTextBytes bounds the prompt, completion and edited text an
	// event carries: the fine-tune collector's limit, so every accepted or
	// edited generation that fits is a usable sample.
	MaxFeedbackTextBytes = finetune.MaxFeedbackTextBytes
)

// ErrBadFeedback marks feedback refused before publishing (a bad action,
// value or text, or a generation without a user); the message names the
// field.
var ErrBadFeedback = errors.New("bad feedback")

// ErrNoUser is the ErrBadFeedback of a generation made for no user: there is
// nobody to credit the feedback to. Callers that can go on without the
// feedback (a regeneration) tell it from the other refusals by it.
var ErrNoUser = fmt.Errorf("%w: the generation has no user to credit the feedback to", ErrBadFeedback)

// Feedback is what a person did with a generation.
type Feedback struct {
	Action string `json:"action"`
	// Value is the rating for ActionRate (an integer in MinRating..
	// MaxRating); it must be absent (0) for the other actions.
	Value float64 `json:"value,omitempty"`
	// EditedText is the person's version, for ActionEdit only.
	EditedText string `json:"edited_text,omitempty"`
	// User, when given, is who gives the feedback: it must be the
	// generation's user (ErrWrongUser), unless ForAnyUser. The event is
	// credited to the generation's user either way.
	User string `json:"user,omitempty"`
	// ForAnyUser lets User differ from the generation's: the caller has
	// the right to act for others (an admin token). Never read from JSON.
	ForAnyUser bool `json:"-"`
}

// Validate checks the action and the fields it needs.
func (f Feedback) Validate() error {
	bad := func(field, format string, args ...any) error {
		return fmt.Errorf("%w: field %q: %s", ErrBadFeedback, field, fmt.Sprintf(format, args...))
	}
	if _, ok := actionEvents[f.Action]; !ok {
		return bad("action", "%.64q is not one of %s", f.Action, strings.Join(Actions(), ", "))
	}
	if f.Action == ActionRate {
		if !validRating(f.Value) {
			return bad("value", "a rating must be an integer in [%d, %d], got %g", MinRating, MaxRating, f.Value)
		}
	} else if f.Value != 0 {
		return bad("value", "only %q takes a value", ActionRate)
	}
	if len(f.User) > MaxRecordIDBytes || !utf8.ValidString(f.User) || strings.ContainsAny(f.User, "\x00\n") {
		return bad("user", "at most %d bytes of UTF-8 without NUL or newline", MaxRecordIDBytes)
	}
	if f.Action != ActionEdit {
		if f.EditedText != "" {
			return bad("edited_text", "only %q takes an edited text", ActionEdit)
		}
		return nil
	}
	switch {
	case strings.TrimSpace(f.EditedText) == "":
		return bad("edited_text", "required for %q", ActionEdit)
	case len(f.EditedText) > MaxFeedbackTextBytes:
		return bad("edited_text", "%d bytes, limit %d", len(f.EditedText), MaxFeedbackTextBytes)
	case !utf8.ValidString(f.EditedText) || strings.ContainsRune(f.EditedText, 0):
		return bad("edited_text", "not UTF-8 text without NUL")
	}
	return nil
}

// validRating reports whether v is a rating: an integer in [MinRating,
// MaxRating].
func validRating(v float64) bool {
	return v == math.Trunc(v) && v >= MinRating && v <= MaxRating
}

// FeedbackEvent is the JSON body of one feedback event on the FEEDBACK
// stream. Its first fields are a recsys.Event (the recommender reads
// those), the generation fields after them are what the fine-tune
// collector (finetune.FeedbackEvent) and the loop metrics read.
// docs/EVENTS.md describes every field.
type FeedbackEvent struct {
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
	// RatingRevisionID), 0 otherwise; RatedAt, in a revision, is when the
	// generation was first rated: the loop metrics count the change in
	// that hour, where the rating itself was counted.
	Revision int       `json:"revision,omitempty"`
	RatedAt  time.Time `json:"rated_at,omitzero"`
}

// FeedbackEventID is the id of the event for action on generation genID:
// deterministic, so a resend of the same feedback is dropped (by
// JetStream within its duplicate window, by the recommender and the loop
// metrics after it). A rating that changes is the exception: its later
// values are revisions, each with an id of its own (RatingRevisionID).
func FeedbackEventID(genID, action string) string {
	return "fb-" + action + "-" + genID
}

// RatingRevisionID is the id of the k-th revision (k >= 1) of the rating
// of generation genID: fb-rate-<genID>.r<k>. The dot is outside the
// alphabet of generation ids (pipeline.ValidateID), so a revision's id is
// never another generation's first rating ("fb-rate-x-r1" would be
// generation "x-r1"'s).
func RatingRevisionID(genID string, k int) string {
	if k == 0 {
		return FeedbackEventID(genID, ActionRate)
	}
	return FeedbackEventID(genID, ActionRate) + ".r" + strconv.Itoa(k)
}

// NewFeedbackEvent builds the event for fb on generation g at time at.
// The recommender item is the generation's template (kind "template"),
// or else its topic (kind "topic"); a generation with neither gives an
// event without an item, which the recommender skips while the fine-tune
// collector and the metrics still use it. Prompt and completion are cut
// to MaxFeedbackTextBytes (the prompt keeps its end, nearest the
// completion), and further, prompt first, if the encoded event would
// exceed pipeline.MaxEventBytes.
func NewFeedbackEvent(g Generation, fb Feedback, at time.Time) (FeedbackEvent, error) {
	if err := fb.Validate(); err != nil {
		return FeedbackEvent{}, err
	}
	if err := g.Validate(); err != nil {
		return FeedbackEvent{}, fmt.Errorf("%w: %w", ErrBadFeedback, err)
	}
	if g.User == "" {
		return FeedbackEvent{}, fmt.Errorf("%w (generation %s)", ErrNoUser, g.ID)
	}
	ev := FeedbackEvent{
		ID:           FeedbackEventID(g.ID, fb.Action),
		User:         g.User,
		Type:         actionEvents[fb.Action],
		Value:        1,
		Time:         at.UTC().Truncate(time.Millisecond),
		GenerationID: g.ID,
		Action:       fb.Action,
		Template:     g.Template,
		Topic:        g.Topic,
		Model:        g.Model,
		Source:       g.Source,
		Prompt:       cutFront(g.Prompt, MaxFeedbackTextBytes),
		Completion:   cut(g.Text, MaxFeedbackTextBytes),
		EditedText:   fb.EditedText,
	}
	if fb.Action == ActionRate {
		ev.Value = fb.Value
	}
	switch {
	case g.Template != "":
		ev.Item, ev.ItemKind = g.Template, "template"
	case g.Topic != "":
		ev.Item, ev.ItemKind = g.Topic, "topic"
	}
	return ev.fit()
}

// revision returns ev, a first rating, as its k-th revision: value
// replaces previous at time at; ratedAt is when the first rating was
// given.
func (ev FeedbackEvent) revision(k int, value, previous float64, at, ratedAt time.Time) (FeedbackEvent, error) {
	ev.ID, ev.Value, ev.Time = RatingRevisionID(ev.GenerationID, k), value, at.UTC().Truncate(time.Millisecond)
	ev.Previous, ev.Revision, ev.RatedAt = 0, 0, time.Time{}
	if k > 0 {
		ev.Previous, ev.Revision, ev.RatedAt = previous, k, ratedAt.UTC().Truncate(time.Millisecond)
	}
	return ev.fit()
}

// fit cuts the prompt, then the completion, until the encoded event fits
// pipeline.MaxEventBytes.
func (ev FeedbackEvent) fit() (FeedbackEvent, error) {
	for {
		b, err := ev.Encode()
		if err != nil {
			return ev, err
		}
		if len(b) <= pipeline.MaxEventBytes {
			return ev, nil
		}
		switch {
		case ev.Prompt != "":
			ev.Prompt = cutFront(ev.Prompt, len(ev.Prompt)/2)
		case ev.Completion != "":
			ev.Completion = cut(ev.Completion, len(ev.Completion)/2)
		default:
			return ev, fmt.Errorf("%w: the event is %d bytes even without prompt and completion, limit %d", ErrBadFeedback, len(b), pipeline.MaxEventBytes)
		}
	}
}

// Encode is the event's JSON (HTML characters not escaped, so text keeps
// its size).
func (ev FeedbackEvent) Encode() ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(ev); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// DecodeFeedbackEvent reads an event body; ok is false when it is not
// feedback on a generation (a plain recommender event without
// generation_id and action).
func DecodeFeedbackEvent(data []byte) (ev FeedbackEvent, ok bool, err error) {
	if err := json.Unmarshal(data, &ev); err != nil {
		return ev, false, fmt.Errorf("%w: %w", ErrBadFeedback, err)
	}
	if ev.GenerationID == "" && ev.Action == "" {
		return ev, false, nil
	}
	if err := pipeline.ValidateID(ev.GenerationID); err != nil {
		return ev, false, fmt.Errorf("%w: field \"generation_id\": %w", ErrBadFeedback, err)
	}
	if !slices.Contains(Actions(), ev.Action) {
		return ev, false, fmt.Errorf("%w: field \"action\": %.64q is not one of %s", ErrBadFeedback, ev.Action, strings.Join(Actions(), ", "))
	}
	if err := ev.checkRevision(); err != nil {
		return ev, false, err
	}
	return ev, true, nil
}

// checkRevision checks the fields that make an event a re-rating: all of
// revision, previous and rated_at, or none.
func (ev FeedbackEvent) checkRevision() error {
	bad := func(field, format string, args ...any) error {
		return fmt.Errorf("%w: field %q: %s", ErrBadFeedback, field, fmt.Sprintf(format, args...))
	}
	switch {
	case ev.Revision < 0:
		return bad("revision", "%d is negative", ev.Revision)
	case ev.Revision == 0 && ev.Previous != 0:
		return bad("previous", "only a revision (revision >= 1) replaces a value")
	case ev.Revision == 0 && !ev.RatedAt.IsZero():
		return bad("rated_at", "only a revision (revision >= 1) has one")
	case ev.Revision == 0:
		return nil
	case ev.Action != ActionRate:
		return bad("revision", "only a rating is revised, not %q", ev.Action)
	case !validRating(ev.Previous):
		return bad("previous", "%g is not a rating in [%d, %d]", ev.Previous, MinRating, MaxRating)
	case ev.RatedAt.IsZero():
		return bad("rated_at", "required in a revision")
	}
	return nil
}

// Publisher publishes one encoded feedback event. Over a bus,
// jobs.PublishFeedback fits: it checks the event with the recommender's
// rules and sets Nats-Msg-Id to the event id.
type Publisher func(ctx context.Context, body []byte) error

// SendFeedback looks up generation id, builds the event for fb and
// publishes it. A rating that changes the generation's rating publishes a
// revision, and one that does not publishes nothing (Unchanged; see
// rating.go). Errors: ErrNotFound (unknown or expired generation),
// ErrWrongUser (fb.User is not the generation's user), ErrBadFeedback
// (the request), or the publisher's.
func (s *Store) SendFeedback(ctx context.Context, id string, fb Feedback, publish Publisher) (FeedbackSent, error) {
	if err := fb.Validate(); err != nil {
		return FeedbackSent{}, err
	}
	if err := pipeline.ValidateID(id); err != nil {
		return FeedbackSent{}, fmt.Errorf("%w: generation id: %w", ErrBadFeedback, err)
	}
	g, err := s.Get(ctx, id)
	if err != nil {
		return FeedbackSent{}, err
	}
	if fb.User != "" && fb.User != g.User && !fb.ForAnyUser {
		return FeedbackSent{}, wrongUser(g, fb.User)
	}
	ev, err := NewFeedbackEvent(g, fb, time.Now())
	if err != nil {
		return FeedbackSent{Event: ev}, err
	}
	if fb.Action == ActionRate {
		return s.sendRating(ctx, ev, publish)
	}
	body, err := ev.Encode()
	if err != nil {
		return FeedbackSent{Event: ev}, err
	}
	return FeedbackSent{Event: ev}, publish(ctx, body)
}

// cutFront returns the last at most n bytes of s, from a rune boundary.
func cutFront(s string, n int) string {
	if len(s) <= n {
		return s
	}
	i := len(s) - n
	for i < len(s) && !utf8.RuneStart(s[i]) {
		i++
	}
	return s[i:]
}
