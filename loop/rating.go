package loop

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tandem-ai/tandem/feedback"
	"github.com/tandem-ai/tandem/limits"
	"github.com/tandem-ai/tandem/pipeline"
)

// Ratings that change.
//
// A person may rate a generation again, and the latest rating counts.
// Every consumer of the FEEDBACK stream adds events up (the recommender's
// matrix, the loop metrics' sums), so a re-rating is published as a
// revision: an event with an id of its own, feedback.RevisionID(gen, k),
// carrying the new value and the value it replaces (previous). Consumers
// add value - previous, and a first rating with its revisions adds up to
// the latest rating alone; a resent revision is dropped by its id like
// any resend. Rating again with the same value publishes nothing.
//
// The revision number k and the previous value come from one Redis hash
// beside the generation record (RatingKey), changed by one Lua script,
// so two re-ratings at once get distinct numbers and a chain of previous
// values without a gap: 2 → 5 → 3, never 2 → 5 and 2 → 3.
//
// A publish can fail after the script moved the rating on. The hash
// therefore keeps every revision not yet known to be published, and each
// rating request publishes those first, in order, then marks them sent:
// the request that failed answers an error, and the next one (a retry
// with the same value, or another rating) sends what is missing, so no
// revision is ever skipped. Publishing one twice is harmless: same id.
//
// Hash fields: value (the current rating), rev (its revision number, 0
// for the first rating), sent (every revision up to it is published; -1:
// none yet), first (when the first rating was given, Unix ms), and
// r:<k> = "<value> <previous> <Unix ms>" for each revision k > sent.

// MaxRatingRevisions bounds the re-ratings of one generation; past it a
// re-rating is refused, naming the value. Each revision is an event every
// consumer keeps (the interaction log until the next rebuild, dedupe
// markers for 8 days).
const MaxRatingRevisions = limits.RatingRevisions

// RatingKey is the Redis hash of a generation's rating and its revisions.
func RatingKey(id string) string { return pipeline.Key("gen", id, "rating") }

// reserveRating moves the rating of KEYS[1] to ARGV[1] (formatted as
// strconv.FormatFloat(v, 'f', -1, 64)) at ARGV[2] (Unix ms), keeping the
// hash ARGV[3] ms, unless it already has that value; ARGV[4] is
// MaxRatingRevisions. A generation rated before the hash existed (by an
// older version) starts from what the loop metrics counted of it
// (KEYS[2], its feedback summary), so its re-rating is a revision too.
// It returns {status, rev, first, k, "value previous ms", ...} with the
// revisions still to publish, in order (a first rating is revision 0):
// status 1 a new revision, 0 the same value, -1 past MaxRatingRevisions
// (nothing changed, but what is pending is still to publish).
var reserveRating = redis.NewScript(`
local h = KEYS[1]
if redis.call('EXISTS', h) == 0 then
  local counted = redis.call('HGET', KEYS[2], 'rate')
  if counted then
    local at = tonumber(redis.call('HGET', KEYS[2], 'at\31rate') or '0') * 1000
    redis.call('HSET', h, 'value', counted, 'rev', 0, 'sent', 0, 'first', at)
  else
    redis.call('HSET', h, 'value', ARGV[1], 'rev', 0, 'sent', -1, 'first', ARGV[2], 'r:0', ARGV[1] .. ' 0 ' .. ARGV[2])
  end
end
local cur = redis.call('HMGET', h, 'value', 'rev', 'sent', 'first')
local rev, sent, status = tonumber(cur[2]), tonumber(cur[3]), 0
if cur[1] ~= ARGV[1] then
  if rev >= tonumber(ARGV[4]) then
    status = -1
  else
    rev = rev + 1
    redis.call('HSET', h, 'value', ARGV[1], 'rev', rev, 'r:' .. rev, ARGV[1] .. ' ' .. cur[1] .. ' ' .. ARGV[2])
    status = 1
  end
end
redis.call('PEXPIRE', h, ARGV[3])
local out = {status, rev, cur[4]}
for k = sent + 1, rev do
  out[#out + 1] = k
  out[#out + 1] = redis.call('HGET', h, 'r:' .. k)
end
return out
`)

// markRatingSent records that every revision up to ARGV[1] is published
// and forgets their details.
var markRatingSent = redis.NewScript(`
local sent = tonumber(redis.call('HGET', KEYS[1], 'sent'))
local k = tonumber(ARGV[1])
if not sent or k <= sent then return 0 end
for j = sent + 1, k do redis.call('HDEL', KEYS[1], 'r:' .. j) end
redis.call('HSET', KEYS[1], 'sent', k)
return 1
`)

// FeedbackSent is what SendFeedback did.
type FeedbackSent struct {
	// Event is the event that now counts for this feedback: the one
	// published, or, when Unchanged, the rating's latest revision (of
	// which only the id, value and revision are given then).
	Event feedback.Event
	// Unchanged is true for a rating equal to the generation's current
	// one, all of whose events were published before: nothing was sent.
	Unchanged bool
}

// pendingRevision is one revision the hash holds as not yet published.
type pendingRevision struct {
	k               int
	value, previous float64
	at              time.Time
}

// sendRating publishes ev, the first rating of its generation, or the
// revision it makes (see the comment at the top of this file).
func (s *Store) sendRating(ctx context.Context, ev feedback.Event, publish Publisher) (FeedbackSent, error) {
	value := strconv.FormatFloat(ev.Value, 'f', -1, 64)
	res, err := reserveRating.Run(ctx, s.rdb, []string{RatingKey(ev.GenerationID), feedbackKey(ev.GenerationID)},
		value, ev.Time.UnixMilli(), s.opts.TTL.Milliseconds(), MaxRatingRevisions).Slice()
	if err != nil {
		return FeedbackSent{Event: ev}, fmt.Errorf("rating of %s: %w", ev.GenerationID, err)
	}
	status, rev, first, pending, err := parseReserved(res)
	if err != nil {
		return FeedbackSent{Event: ev}, fmt.Errorf("rating of %s: %w", ev.GenerationID, err)
	}
	out := FeedbackSent{Unchanged: status == 0 && len(pending) == 0}
	out.Event, err = revision(ev, rev, ev.Value, 0, ev.Time, first)
	if err != nil {
		return FeedbackSent{Event: ev}, err
	}
	if err := s.publishPending(ctx, ev, rev, first, pending, publish, &out); err != nil {
		return out, err
	}
	if status < 0 {
		// Refused, after publishing what an earlier request left pending:
		// the rating that stays is then the one every consumer has.
		return FeedbackSent{Event: ev}, fmt.Errorf("%w: field \"value\": generation %s was rated %d times, the limit; its rating stays as it is",
			feedback.ErrInvalid, ev.GenerationID, rev+1)
	}
	return out, nil
}

// publishPending publishes the revisions reserveRating left pending, in
// order, marks the ones published as sent, and sets out.Event to the
// latest one (rev) when it is among them.
func (s *Store) publishPending(ctx context.Context, ev feedback.Event, rev int, first time.Time, pending []pendingRevision, publish Publisher, out *FeedbackSent) error {
	sent := -1
	defer func() {
		if sent >= 0 {
			// Best effort: a mark that fails only means the next request
			// publishes these again, under the same ids.
			_ = markRatingSent.Run(context.WithoutCancel(ctx), s.rdb, []string{RatingKey(ev.GenerationID)}, sent).Err()
		}
	}()
	for _, p := range pending {
		rv, err := revision(ev, p.k, p.value, p.previous, p.at, first)
		if err != nil {
			return err
		}
		if err := publish(ctx, rv); err != nil {
			return err
		}
		sent = p.k
		if p.k == rev {
			out.Event = rv
		}
	}
	return nil
}

// parseReserved reads reserveRating's answer.
func parseReserved(res []any) (status, rev int, first time.Time, pending []pendingRevision, err error) {
	bad := fmt.Errorf("unexpected answer %v", res)
	if len(res) < 3 || len(res)%2 != 1 {
		return 0, 0, first, nil, bad
	}
	st, ok1 := res[0].(int64)
	r, ok2 := res[1].(int64)
	ms, err1 := strconv.ParseInt(fmt.Sprint(res[2]), 10, 64)
	if !ok1 || !ok2 || err1 != nil {
		return 0, 0, first, nil, bad
	}
	for i := 3; i < len(res); i += 2 {
		k, ok := res[i].(int64)
		tuple, _ := res[i+1].(string)
		f := strings.Fields(tuple)
		if !ok || len(f) != 3 {
			return 0, 0, first, nil, bad
		}
		v, err1 := strconv.ParseFloat(f[0], 64)
		p, err2 := strconv.ParseFloat(f[1], 64)
		at, err3 := strconv.ParseInt(f[2], 10, 64)
		if err1 != nil || err2 != nil || err3 != nil {
			return 0, 0, first, nil, bad
		}
		pending = append(pending, pendingRevision{k: int(k), value: v, previous: p, at: time.UnixMilli(at)})
	}
	return int(st), int(r), time.UnixMilli(ms), pending, nil
}
