package loop

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tandem-ai/tandem/feedback"
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
// API before publishing, runs the intake on the very bytes it got, so they
// accept and refuse the same events for the same reasons:
//
//   - feedback.Decode reads the event once and checks it by its rules
//     (size, subject, type, ids, the value's range, the fields that make
//     feedback on a generation consistent);
//   - feedback on a generation names a generation that exists (its record
//     in Redis) and the generation's user, and its texts, model, template
//     and topic are taken from the record, never from the event;
//   - an event id names one content: the first content claimed under an
//     id stays its content (FeedbackDedupeHorizon), a resend of it is a
//     no-op, other content under it is ErrReusedID.

// Refusals of the intake beside feedback.ErrInvalid (a bad field) and
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
	return errors.Is(err, feedback.ErrInvalid) || errors.Is(err, ErrNotFound) ||
		errors.Is(err, ErrWrongUser) || errors.Is(err, ErrReusedID)
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

// Check is the intake's validation of one event from a client:
// feedback.Decode, then, for feedback on a generation, its record
// (checkRecord). An event without an id gets a random one, to be claimed
// (Claim) before it is published. Errors other than the refusals
// (Refused) are Redis's and worth a retry.
func (in *Intake) Check(ctx context.Context, subject string, data []byte, anyUser bool) (feedback.Event, error) {
	ev, err := feedback.Decode(subject, data)
	if err != nil {
		return ev, err
	}
	if ev.ID == "" {
		ev.ID = rand.Text()
	}
	return in.checkRecord(ctx, ev, anyUser)
}

// checkRecord checks feedback on a generation against the generation's
// record: it must exist (ErrNotFound), have a user (ErrNoUser), and be
// the event's user's (ErrWrongUser) unless anyUser (a caller with the
// right to act for others: the event is then credited to the generation's
// user). The event is rebuilt from the record with NewFeedbackEvent, so
// its texts, model, template and topic are the record's; an item or kind
// the event names must be the record's. Other events pass as they are.
func (in *Intake) checkRecord(ctx context.Context, ev feedback.Event, anyUser bool) (feedback.Event, error) {
	if !ev.OnGeneration() {
		return ev, nil
	}
	g, err := in.store.Get(ctx, ev.GenerationID)
	if err != nil {
		return ev, err
	}
	if g.User == "" {
		return ev, fmt.Errorf("%w (generation %s)", ErrNoUser, g.ID)
	}
	if ev.User != g.User && !anyUser {
		return ev, wrongUser(g, ev.User)
	}
	fb := Feedback{Action: ev.Action, EditedText: ev.EditedText}
	if ev.Action == feedback.ActionRate {
		fb.Value = ev.Value
	}
	rebuilt, err := NewFeedbackEvent(g, fb, ev.Time)
	if err != nil {
		return ev, err
	}
	if ev.Revision > 0 {
		if rebuilt, err = revision(rebuilt, ev.Revision, ev.Value, ev.Previous, ev.Time, ev.RatedAt); err != nil {
			return ev, err
		}
	}
	rebuilt.ID, rebuilt.Time = ev.ID, ev.Time
	if ev.Item != "" && (ev.Item != rebuilt.Item || ev.ItemKind != rebuilt.ItemKind) {
		return ev, fmt.Errorf("%w: field \"item\": generation %s's item is %q (kind %q), not %.64q (kind %.64q)",
			feedback.ErrInvalid, g.ID, rebuilt.Item, rebuilt.ItemKind, ev.Item, ev.ItemKind)
	}
	return rebuilt, nil
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

// Claim ties the event's id to its content (feedback.Event.Digest), for
// FeedbackDedupeHorizon: nil when the id is new or already holds this
// content (a resend, a redelivery), ErrReusedID when it holds other
// content. An empty id is not claimed.
func (in *Intake) Claim(ctx context.Context, ev feedback.Event) error {
	id := ev.ID
	if id == "" {
		return nil
	}
	if len(id) > limits.RecsIDBytes || strings.ContainsAny(id, "\x00\n") {
		return fmt.Errorf("%w: field \"id\": at most %d bytes without NUL or newline", feedback.ErrInvalid, limits.RecsIDBytes)
	}
	res, err := claimScript.Run(ctx, in.rdb, []string{ClaimKey(id)}, ev.Digest(), int64(in.ttl/time.Second)).Int()
	if err != nil {
		return fmt.Errorf("feedback event %s: %w", id, err)
	}
	if res < 0 {
		return fmt.Errorf("%w: event id %q was used before for other content; give new content a new id", ErrReusedID, id)
	}
	return nil
}

// AcceptDelivery is the intake for a message of the FEEDBACK stream, what
// every consumer runs first: feedback.Decode on the message's subject,
// checkRecord, then Claim. An event without an id takes the message's
// Nats-Msg-Id, or else its stream sequence (which a redelivery keeps), as
// its id.
func (in *Intake) AcceptDelivery(ctx context.Context, d pipeline.Delivery) (feedback.Event, error) {
	ev, err := feedback.Decode(d.Subject, d.Data)
	if err == nil {
		ev, err = in.checkRecord(ctx, ev, false)
	}
	if err != nil {
		return ev, err
	}
	if ev.ID == "" {
		ev.ID = d.MsgID
	}
	if ev.ID == "" {
		ev.ID = "seq:" + strconv.FormatUint(d.StreamSeq, 10)
	}
	return ev, in.Claim(ctx, ev)
}

// Checked wraps publish so that every event passes the intake (its rules,
// its record, Claim) before it is published.
func (in *Intake) Checked(publish Publisher) Publisher {
	return func(ctx context.Context, ev feedback.Event) error {
		if err := ev.Check(""); err != nil {
			return err
		}
		if _, err := in.checkRecord(ctx, ev, false); err != nil {
			return err
		}
		if err := in.Claim(ctx, ev); err != nil {
			return err
		}
		return publish(ctx, ev)
	}
}
