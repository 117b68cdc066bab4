package feedback

import (
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/tandem-ai/tandem/pipeline"
	"github.com/tandem-ai/tandem/recsys"
)

// Check runs the rules every event passes wherever it enters (the API
// before publishing, Publish, each consumer on delivery), in this order,
// and returns the first refusal, ErrInvalid naming the field. subject is
// the subject the event arrived on, "" when the caller derives it from
// the type. Feedback on a generation without an id gets the one its
// generation and action give. Whether that generation exists and is the
// event's user's is checked where its record is at hand (loop.Intake).
func (ev *Event) Check(subject string) error {
	for _, rule := range []func(*Event, string) error{ruleGeneration, ruleRecommender, ruleSubject, ruleRange, ruleAction} {
		if err := rule(ev, subject); err != nil {
			return err
		}
	}
	return nil
}

func invalid(field, format string, args ...any) error {
	return fmt.Errorf("%w: field %q: %s", ErrInvalid, field, fmt.Sprintf(format, args...))
}

// ruleGeneration: feedback on a generation names a valid generation id
// and a known action, and a re-rating carries revision, previous and
// rated_at, all three; anything else none of them.
func ruleGeneration(ev *Event, _ string) error {
	if !ev.OnGeneration() {
		return nil
	}
	if err := pipeline.ValidateID(ev.GenerationID); err != nil {
		return fmt.Errorf("%w: field \"generation_id\": %w", ErrInvalid, err)
	}
	if !slices.Contains(Actions(), ev.Action) {
		return invalid("action", "%.64q is not one of %s", ev.Action, strings.Join(Actions(), ", "))
	}
	switch {
	case ev.Revision < 0:
		return invalid("revision", "%d is negative", ev.Revision)
	case ev.Revision == 0 && ev.Previous != 0:
		return invalid("previous", "only a revision (revision >= 1) replaces a value")
	case ev.Revision == 0 && !ev.RatedAt.IsZero():
		return invalid("rated_at", "only a revision (revision >= 1) has one")
	case ev.Revision == 0:
		return nil
	case ev.Action != ActionRate:
		return invalid("revision", "only a rating is revised, not %q", ev.Action)
	case !IsRating(ev.Previous):
		return invalid("previous", "%g is not a rating in [%d, %d]", ev.Previous, MinRating, MaxRating)
	case ev.RatedAt.IsZero():
		return invalid("rated_at", "required in a revision")
	}
	return nil
}

// ruleRecommender: the recommender takes the event (recsys.CheckEvent: a
// known type, a user and an item, ids within their limits, finite
// values), and its type can be a subject token. Feedback on a generation
// may lack an item: the generation's record decides.
func ruleRecommender(ev *Event, _ string) error {
	in := ev.Interaction()
	if ev.OnGeneration() && in.Item == "" {
		in.Item = "-"
	}
	if err := recsys.CheckEvent(in); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if pipeline.FeedbackSubject(ev.Type) == "" {
		return invalid("event", "%q cannot be a subject token", ev.Type)
	}
	return nil
}

// ruleSubject: the event arrived on tandem.feedback.<its type>.
func ruleSubject(ev *Event, subject string) error {
	if want := pipeline.FeedbackSubject(ev.Type); subject != "" && subject != want {
		return invalid("event", "%q arrived on subject %q; an event of that type goes on %q", ev.Type, subject, want)
	}
	return nil
}

// ruleRange: the value lies in its type's range (valueRange); only a
// rating replaces a previous value, itself a rating.
func ruleRange(ev *Event, _ string) error {
	if lo, hi := valueRange(ev.Type, ev.OnGeneration()); ev.Value < lo || ev.Value > hi {
		return invalid("value", "%g is out of range for event %q: want %s", ev.Value, ev.Type, rangeText(lo, hi))
	}
	switch {
	case ev.Previous == 0:
	case ev.Type != recsys.EventRating:
		return invalid("previous", "only a rating replaces a value, not %q", ev.Type)
	case ev.Previous < MinRating || ev.Previous > MaxRating:
		return invalid("previous", "%g is not a rating in [%d, %d]", ev.Previous, MinRating, MaxRating)
	}
	return nil
}

// valueRange is the range of an event's value, by type: a rating lies on
// the documented scale, a dwell is seconds up to an hour, every other
// type is a count of 1..MaxCount. Feedback on a generation carries 1 but
// for a rating.
func valueRange(typ string, generation bool) (lo, hi float64) {
	switch {
	case typ == recsys.EventRating:
		return MinRating, MaxRating
	case generation:
		return 1, 1
	case typ == recsys.EventDwell:
		return math.SmallestNonzeroFloat64, MaxDwellSeconds
	}
	return 1, MaxCount
}

func rangeText(lo, hi float64) string {
	switch {
	case lo == hi:
		return fmt.Sprintf("%g", lo)
	case lo == math.SmallestNonzeroFloat64:
		return fmt.Sprintf("(0, %g]", hi)
	}
	return fmt.Sprintf("[%g, %g]", lo, hi)
}

// ruleAction: feedback on a generation is consistent in itself: its type
// is its action's, a rating is an integer, and its id is the one the
// generation and action give (filled in when absent).
func ruleAction(ev *Event, _ string) error {
	if !ev.OnGeneration() {
		return nil
	}
	if want := ActionEvent(ev.Action); ev.Type != want {
		return invalid("event", "%q does not go with action %q, which is %q", ev.Type, ev.Action, want)
	}
	if ev.Action == ActionRate && !IsRating(ev.Value) {
		return invalid("value", "a rating must be an integer in [%d, %d], got %g", MinRating, MaxRating, ev.Value)
	}
	want := EventID(ev.GenerationID, ev.Action)
	if ev.Revision > 0 {
		want = RevisionID(ev.GenerationID, ev.Revision)
	}
	switch ev.ID {
	case "":
		ev.ID = want
	case want:
	default:
		return invalid("id", "feedback %q on generation %s has the id %q, not %.64q", ev.Action, ev.GenerationID, want, ev.ID)
	}
	return nil
}
