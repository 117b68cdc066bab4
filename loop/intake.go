package loop

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tandem-ai/tandem/limits"
	"github.com/tandem-ai/tandem/pipeline"
	"github.com/tandem-ai/tandem/recsys"
)

// The intake: one validation of feedback events, wherever they enter.
//
// Feedback reaches the FEEDBACK stream from the API (POST /v1/feedback,
// POST /v1/generations/{id}/feedback), from `producer feedback` and from
// any client of the bus; three consumers read it (the recommender, the
// fine-tune collector beside it, the loop metrics). Each of them, and the
// API before publishing, runs Intake.Check on the very bytes it got and
// Intake.Claim on the event's id, so they accept and refuse the same
// events for the same reasons:
//
//   - the event is at most pipeline.MaxEventBytes, one JSON object, its
//     type known, its subject tandem.feedback.<its type>, its ids within
//     the recommender's limits;
//   - its value lies in its type's range (eventValueRange);
//   - feedback on a generation names a generation that exists (its record
//     in Redis) and the generation's user; its action and type agree, its
//     id is the one the generation and action give, and its texts, model,
//     template and topic are taken from the record, never from the event;
//   - an event id names one content: the first content claimed under an
//     id stays its content (FeedbackDedupeHorizon), a resend of it is a
//     no-op, other content under it is ErrReusedID.

// Refusals of the intake beside ErrBadFeedback (a bad field) and
// ErrNotFound (no such generation).
var (
	// ErrWrongUser: feedback on a generation names a user other than the
	// generation's, without the right to act for others.
	ErrWrongUser = errors.New("not the generation's user")
	// ErrReusedID: the event id was claimed before for other content.
	ErrReusedID = errors.New("reused event id")
)

// wrongUser is ErrWrongUser for feedback on g by user. It does not name
// g's user: a caller who knows a generation's id learns no more than that
// it is not theirs.
func wrongUser(g Generation, user string) error {
	return fmt.Errorf("%w: field \"user\": generation %s is not %.64q's; only its own user may give feedback on it", ErrWrongUser, g.ID, user)
}

// Refused reports whether err is the intake refusing an event for good (a
// bad field, an unknown generation, another user, a reused id), as
// opposed to trouble a retry may fix: consumers dead-letter these at once.
func Refused(err error) bool {
	return errors.Is(err, ErrBadFeedback) || errors.Is(err, ErrNotFound) ||
		errors.Is(err, ErrWrongUser) || errors.Is(err, ErrReusedID)
}

// Value ranges of feedback events (eventValueRange).
const (
	MaxEventCount        = limits.FeedbackCount
	MaxEventDwellSeconds = limits.FeedbackDwellSeconds
)

// CheckedEvent is a feedback event that passed the intake.
type CheckedEvent struct {
	// Event is what the recommender applies; for feedback on a generation
	// it is built from the record (Item is empty for a generation made
	// from neither a template nor a topic: nothing for the recommender).
	Event recsys.Event
	// Generation is true for feedback on a generation; Feedback is then
	// the event rebuilt from the generation's record.
	Generation bool
	Feedback   FeedbackEvent
	// Digest identifies the content for Claim: every field but the time,
	// and for feedback on a generation, but what the record supplies.
	Digest string
}

// eventValueRange is the range of an event's value, by type: a rating
// lies on the documented scale, a dwell is seconds up to an hour, every
// other type is a count of 1..MaxEventCount. Feedback on a generation
// carries 1 but for a rating.
func eventValueRange(typ string, generation bool) (lo, hi float64) {
	switch {
	case typ == recsys.EventRating:
		return MinRating, MaxRating
	case generation:
		return 1, 1
	case typ == recsys.EventDwell:
		return math.SmallestNonzeroFloat64, MaxEventDwellSeconds
	}
	return 1, MaxEventCount
}

// CheckValues is the part of the intake that needs no Redis: size, JSON,
// subject, type, ids and the value's range, and for feedback on a
// generation the fields that make it one. subject is the subject the
// event arrived on, "" when the caller derives it from the type (the
// API). Errors are ErrBadFeedback naming the field.
func CheckValues(subject string, data []byte) (CheckedEvent, error) {
	var ce CheckedEvent
	if len(data) > pipeline.MaxEventBytes {
		return ce, fmt.Errorf("%w: the event is %d bytes, limit %d", ErrBadFeedback, len(data), pipeline.MaxEventBytes)
	}
	var ev recsys.Event
	if err := json.Unmarshal(data, &ev); err != nil {
		return ce, fmt.Errorf("%w: %w", ErrBadFeedback, err)
	}
	var probe struct {
		GenerationID string `json:"generation_id"`
		Action       string `json:"action"`
	}
	if err := json.Unmarshal(data, &probe); err != nil {
		return ce, fmt.Errorf("%w: %w", ErrBadFeedback, err)
	}
	ce.Generation = probe.GenerationID != "" || probe.Action != ""
	if ce.Generation {
		fe, _, err := DecodeFeedbackEvent(data)
		if err != nil {
			return ce, err
		}
		ce.Feedback = fe
	}
	if err := checkRecsysRules(ev, ce.Generation); err != nil {
		return ce, err
	}
	if want := pipeline.FeedbackSubject(ev.Type); subject != "" && subject != want {
		return ce, fmt.Errorf("%w: field \"event\": %q arrived on subject %q; an event of that type goes on %q", ErrBadFeedback, ev.Type, subject, want)
	}
	if lo, hi := eventValueRange(ev.Type, ce.Generation); ev.Value < lo || ev.Value > hi {
		return ce, fmt.Errorf("%w: field \"value\": %g is out of range for event %q: want %s", ErrBadFeedback, ev.Value, ev.Type, rangeText(lo, hi))
	}
	if ev.Previous != 0 {
		if ev.Type != recsys.EventRating {
			return ce, fmt.Errorf("%w: field \"previous\": only a rating replaces a value, not %q", ErrBadFeedback, ev.Type)
		}
		if ev.Previous < MinRating || ev.Previous > MaxRating {
			return ce, fmt.Errorf("%w: field \"previous\": %g is not a rating in [%d, %d]", ErrBadFeedback, ev.Previous, MinRating, MaxRating)
		}
	}
	ce.Event = ev
	if ce.Generation {
		if err := checkGenerationFields(&ce); err != nil {
			return ce, err
		}
	}
	ce.Digest = digest(ce)
	return ce, nil
}

// checkRecsysRules applies the recommender's own rules (known type, ids
// within their limits, a finite value) by adding ev to a throwaway store.
// Feedback on a generation may lack an item: the record decides.
func checkRecsysRules(ev recsys.Event, generation bool) error {
	if generation && ev.Item == "" {
		ev.Item = "-"
	}
	st, err := recsys.NewStore(recsys.StoreConfig{})
	if err != nil {
		return err
	}
	if err := st.Add(ev); err != nil {
		return fmt.Errorf("%w: %w", ErrBadFeedback, err)
	}
	if pipeline.FeedbackSubject(ev.Type) == "" {
		return fmt.Errorf("%w: field \"event\": %q cannot be a subject token", ErrBadFeedback, ev.Type)
	}
	return nil
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

// checkGenerationFields checks what makes feedback on a generation
// consistent in itself: the action and the type agree, a rating is an
// integer, the id is the one the generation and action give (filled in
// when absent).
func checkGenerationFields(ce *CheckedEvent) error {
	fe, ev := &ce.Feedback, &ce.Event
	bad := func(field, format string, args ...any) error {
		return fmt.Errorf("%w: field %q: %s", ErrBadFeedback, field, fmt.Sprintf(format, args...))
	}
	if want := actionEvents[fe.Action]; ev.Type != want {
		return bad("event", "%q does not go with action %q, which is %q", ev.Type, fe.Action, want)
	}
	if fe.Action == ActionRate && !validRating(ev.Value) {
		return bad("value", "a rating must be an integer in [%d, %d], got %g", MinRating, MaxRating, ev.Value)
	}
	want := FeedbackEventID(fe.GenerationID, fe.Action)
	if fe.Revision > 0 {
		want = RatingRevisionID(fe.GenerationID, fe.Revision)
	}
	switch ev.ID {
	case "":
		ev.ID, fe.ID = want, want
	case want:
	default:
		return bad("id", "feedback %q on generation %s has the id %q, not %.64q", fe.Action, fe.GenerationID, want, ev.ID)
	}
	fe.Value, fe.Previous = ev.Value, ev.Previous
	return nil
}

// digest identifies an event's content for Claim. The time is left out (a
// client's retry may restamp it), and so are a generation's texts, model,
// template and topic, which come from its record.
func digest(ce CheckedEvent) string {
	ev := ce.Event
	b, _ := json.Marshal([]any{ev.User, ev.Item, ev.ItemKind, ev.Type, ev.Value, ev.Previous,
		ce.Feedback.GenerationID, ce.Feedback.Action, ce.Feedback.EditedText, ce.Feedback.Revision})
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:16]) // 128 bits: no two contents meet by chance
}

// Intake checks feedback events against the generation records and
// claims their ids, in the Redis that holds the records.
type Intake struct {
	rdb   redis.UniversalClient
	store *Store
	ttl   time.Duration
}

// NewIntake returns the intake over rdb, the Redis of the generation
// records.
func NewIntake(rdb redis.UniversalClient) *Intake {
	return &Intake{rdb: rdb, store: NewStore(rdb, StoreOptions{}), ttl: recsys.FeedbackDedupeHorizon}
}

// Check is the intake's validation of one event: CheckValues, then, for
// feedback on a generation, its record. The generation must exist
// (ErrNotFound), have a user (ErrNoUser), and be the event's user's
// (ErrWrongUser) unless anyUser (a caller with the right to act for
// others: the event is then credited to the generation's user). The
// event is rebuilt from the record with NewFeedbackEvent, so its texts,
// model, template and topic are the record's; an item or kind the event
// names must be the record's. Other errors (Redis) are worth a retry.
func (in *Intake) Check(ctx context.Context, subject string, data []byte, anyUser bool) (CheckedEvent, error) {
	ce, err := CheckValues(subject, data)
	if err != nil || !ce.Generation {
		return ce, err
	}
	fe := ce.Feedback
	g, err := in.store.Get(ctx, fe.GenerationID)
	if err != nil {
		return ce, err
	}
	if g.User == "" {
		return ce, fmt.Errorf("%w (generation %s)", ErrNoUser, g.ID)
	}
	if ce.Event.User != g.User && !anyUser {
		return ce, wrongUser(g, ce.Event.User)
	}
	fb := Feedback{Action: fe.Action, EditedText: fe.EditedText}
	if fe.Action == ActionRate {
		fb.Value = fe.Value
	}
	rebuilt, err := NewFeedbackEvent(g, fb, fe.Time)
	if err != nil {
		return ce, err
	}
	if fe.Revision > 0 {
		if rebuilt, err = rebuilt.revision(fe.Revision, fe.Value, fe.Previous, fe.Time, fe.RatedAt); err != nil {
			return ce, err
		}
	}
	rebuilt.ID, rebuilt.Time = ce.Event.ID, fe.Time
	if ev := ce.Event; ev.Item != "" && (ev.Item != rebuilt.Item || ev.ItemKind != rebuilt.ItemKind) {
		return ce, fmt.Errorf("%w: field \"item\": generation %s's item is %q (kind %q), not %.64q (kind %.64q)",
			ErrBadFeedback, g.ID, rebuilt.Item, rebuilt.ItemKind, ev.Item, ev.ItemKind)
	}
	ce.Feedback = rebuilt
	ce.Event = recsys.Event{ID: rebuilt.ID, User: rebuilt.User, Item: rebuilt.Item, Type: rebuilt.Type, Value: rebuilt.Value,
		Previous: rebuilt.Previous, Time: ce.Event.Time, ItemKind: rebuilt.ItemKind}
	ce.Digest = digest(ce)
	return ce, nil
}

// claimScript claims KEYS[1] for the digest ARGV[1] for ARGV[2] seconds:
// 1 when claimed now, 0 when it holds the same digest, -1 when it holds
// another.
var claimScript = redis.NewScript(`
local cur = redis.call('GET', KEYS[1])
if not cur then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
  return 1
end
if cur == ARGV[1] then return 0 end
return -1
`)

// ClaimKey is the Redis key holding the content digest of event id.
func ClaimKey(id string) string { return pipeline.Key("loop", "event", id) }

// Claim ties event id to the content digest, for FeedbackDedupeHorizon:
// nil when the id is new or already holds this content (a resend, a
// redelivery), ErrReusedID when it holds other content. An empty id is
// not claimed.
func (in *Intake) Claim(ctx context.Context, id, digest string) error {
	if id == "" {
		return nil
	}
	if len(id) > limits.RecsIDBytes || strings.ContainsAny(id, "\x00\n") {
		return fmt.Errorf("%w: field \"id\": at most %d bytes without NUL or newline", ErrBadFeedback, limits.RecsIDBytes)
	}
	res, err := claimScript.Run(ctx, in.rdb, []string{ClaimKey(id)}, digest, int64(in.ttl/time.Second)).Int()
	if err != nil {
		return fmt.Errorf("feedback event %s: %w", id, err)
	}
	if res < 0 {
		return fmt.Errorf("%w: event id %q was used before for other content; give new content a new id", ErrReusedID, id)
	}
	return nil
}

// Accept is Check then Claim: what every consumer does with a delivery,
// and the API with a request.
func (in *Intake) Accept(ctx context.Context, subject string, data []byte, anyUser bool) (CheckedEvent, error) {
	ce, err := in.Check(ctx, subject, data, anyUser)
	if err != nil {
		return ce, err
	}
	return ce, in.Claim(ctx, ce.Event.ID, ce.Digest)
}

// AcceptDelivery is Accept for a message of the FEEDBACK stream, what
// every consumer runs first: the subject is the message's, and an event
// without an id takes the message's Nats-Msg-Id, or else its stream
// sequence (which a redelivery keeps), as its id.
func (in *Intake) AcceptDelivery(ctx context.Context, d pipeline.Delivery) (CheckedEvent, error) {
	ce, err := in.Check(ctx, d.Subject, d.Data, false)
	if err != nil {
		return ce, err
	}
	if ce.Event.ID == "" {
		ce.Event.ID = d.MsgID
	}
	if ce.Event.ID == "" {
		ce.Event.ID = "seq:" + strconv.FormatUint(d.StreamSeq, 10)
	}
	return ce, in.Claim(ctx, ce.Event.ID, ce.Digest)
}

// Checked wraps publish so that every event passes the intake (Accept)
// before it is published.
func (in *Intake) Checked(publish Publisher) Publisher {
	return func(ctx context.Context, body []byte) error {
		if _, err := in.Accept(ctx, "", body, false); err != nil {
			return err
		}
		return publish(ctx, body)
	}
}
