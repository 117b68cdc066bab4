package loop

import (
	"context"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/tandem-ai/tandem/feedback"
	"github.com/tandem-ai/tandem/pipeline"
)

// ErrNoUser is the feedback.ErrInvalid of a generation made for no user:
// there is nobody to credit the feedback to. Callers that can go on
// without the feedback (a regeneration) tell it from the other refusals
// by it.
var ErrNoUser = fmt.Errorf("%w: the generation has no user to credit the feedback to", feedback.ErrInvalid)

// Feedback is what a person did with a generation: one of
// feedback.Actions.
type Feedback struct {
	Action string `json:"action"`
	// Value is the rating for feedback.ActionRate (an integer in
	// feedback.MinRating..MaxRating); it must be absent (0) for the other
	// actions.
	Value float64 `json:"value,omitempty"`
	// EditedText is the person's version, for feedback.ActionEdit only.
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
		return fmt.Errorf("%w: field %q: %s", feedback.ErrInvalid, field, fmt.Sprintf(format, args...))
	}
	if feedback.ActionEvent(f.Action) == "" {
		return bad("action", "%.64q is not one of %s", f.Action, strings.Join(feedback.Actions(), ", "))
	}
	if f.Action == feedback.ActionRate {
		if !feedback.IsRating(f.Value) {
			return bad("value", "a rating must be an integer in [%d, %d], got %g", feedback.MinRating, feedback.MaxRating, f.Value)
		}
	} else if f.Value != 0 {
		return bad("value", "only %q takes a value", feedback.ActionRate)
	}
	if len(f.User) > MaxRecordIDBytes || !utf8.ValidString(f.User) || strings.ContainsAny(f.User, "\x00\n") {
		return bad("user", "at most %d bytes of UTF-8 without NUL or newline", MaxRecordIDBytes)
	}
	if f.Action != feedback.ActionEdit {
		if f.EditedText != "" {
			return bad("edited_text", "only %q takes an edited text", feedback.ActionEdit)
		}
		return nil
	}
	switch {
	case strings.TrimSpace(f.EditedText) == "":
		return bad("edited_text", "required for %q", feedback.ActionEdit)
	case len(f.EditedText) > feedback.MaxTextBytes:
		return bad("edited_text", "%d bytes, limit %d", len(f.EditedText), feedback.MaxTextBytes)
	case !utf8.ValidString(f.EditedText) || strings.ContainsRune(f.EditedText, 0):
		return bad("edited_text", "not UTF-8 text without NUL")
	}
	return nil
}

// NewFeedbackEvent builds the event for fb on generation g at time at.
// The recommender item is the generation's template (kind "template"),
// or else its topic (kind "topic"); a generation with neither gives an
// event without an item, which the recommender skips while the fine-tune
// collector and the metrics still use it. Prompt and completion are cut
// to feedback.MaxTextBytes (the prompt keeps its end, nearest the
// completion), and further, prompt first, if the encoded event would
// exceed pipeline.MaxEventBytes.
func NewFeedbackEvent(g Generation, fb Feedback, at time.Time) (feedback.Event, error) {
	if err := fb.Validate(); err != nil {
		return feedback.Event{}, err
	}
	if err := g.Validate(); err != nil {
		return feedback.Event{}, fmt.Errorf("%w: %w", feedback.ErrInvalid, err)
	}
	if g.User == "" {
		return feedback.Event{}, fmt.Errorf("%w (generation %s)", ErrNoUser, g.ID)
	}
	ev := feedback.Event{
		ID:           feedback.EventID(g.ID, fb.Action),
		User:         g.User,
		Type:         feedback.ActionEvent(fb.Action),
		Value:        1,
		Time:         at.UTC().Truncate(time.Millisecond),
		GenerationID: g.ID,
		Action:       fb.Action,
		Template:     g.Template,
		Topic:        g.Topic,
		Model:        g.Model,
		Source:       g.Source,
		Prompt:       cutFront(g.Prompt, feedback.MaxTextBytes),
		Completion:   cut(g.Text, feedback.MaxTextBytes),
		EditedText:   fb.EditedText,
	}
	if fb.Action == feedback.ActionRate {
		ev.Value = fb.Value
	}
	switch {
	case g.Template != "":
		ev.Item, ev.ItemKind = g.Template, "template"
	case g.Topic != "":
		ev.Item, ev.ItemKind = g.Topic, "topic"
	}
	return fit(ev)
}

// revision returns ev, a first rating, as its k-th revision: value
// replaces previous at time at; ratedAt is when the first rating was
// given.
func revision(ev feedback.Event, k int, value, previous float64, at, ratedAt time.Time) (feedback.Event, error) {
	ev.ID, ev.Value, ev.Time = feedback.RevisionID(ev.GenerationID, k), value, at.UTC().Truncate(time.Millisecond)
	ev.Previous, ev.Revision, ev.RatedAt = 0, 0, time.Time{}
	if k > 0 {
		ev.Previous, ev.Revision, ev.RatedAt = previous, k, ratedAt.UTC().Truncate(time.Millisecond)
	}
	return fit(ev)
}

// fit cuts the prompt, then the completion, until the encoded event fits
// pipeline.MaxEventBytes.
func fit(ev feedback.Event) (feedback.Event, error) {
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
			return ev, fmt.Errorf("%w: the event is %d bytes even without prompt and completion, limit %d", feedback.ErrInvalid, len(b), pipeline.MaxEventBytes)
		}
	}
}

// Publisher publishes one feedback event: over a bus, feedback.Publish.
type Publisher func(ctx context.Context, ev feedback.Event) error

// SendFeedback looks up generation id, builds the event for fb and
// publishes it. A rating that changes the generation's rating publishes a
// revision, and one that does not publishes nothing (Unchanged; see
// rating.go). Errors: ErrNotFound (unknown or expired generation),
// ErrWrongUser (fb.User is not the generation's user),
// feedback.ErrInvalid (the request), or the publisher's.
func (s *Store) SendFeedback(ctx context.Context, id string, fb Feedback, publish Publisher) (FeedbackSent, error) {
	if err := fb.Validate(); err != nil {
		return FeedbackSent{}, err
	}
	if err := pipeline.ValidateID(id); err != nil {
		return FeedbackSent{}, fmt.Errorf("%w: generation id: %w", feedback.ErrInvalid, err)
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
	if fb.Action == feedback.ActionRate {
		return s.sendRating(ctx, ev, publish)
	}
	return FeedbackSent{Event: ev}, publish(ctx, ev)
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
