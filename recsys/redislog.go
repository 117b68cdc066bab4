package recsys

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Keys of the interaction log.
const (
	// KeyLog is a Redis stream holding every feedback event accepted since
	// the last snapshot, in the order it was accepted: the one order that
	// live models and rebuilds agree on.
	KeyLog = KeyPrefix + "log"
	// KeyLoggedPrefix + event ID holds the log entry ID of that event, for
	// DedupeTTL, so that a redelivered or resent event is logged once.
	KeyLoggedPrefix = KeyPrefix + "logged:"
)

// FeedbackDedupeHorizon is how long a feedback event id is remembered once
// it was counted: by the interaction log (the default of
// InteractionLogOptions.DedupeTTL) and by the loop metrics
// (loop.DefaultSeenTTL), so that the recommender and the metrics count a
// resend alike. It must outlast the longest time one event can come again:
// feedback names a generation record, kept 7 days (loop.DefaultRecordTTL),
// and the FEEDBACK stream keeps and can redeliver a message for 7 days.
// loop's tests check that both stay within it.
const FeedbackDedupeHorizon = 8 * 24 * time.Hour

// DefaultLogMaxLen caps the interaction log's length. Rebuilds trim the log
// to what the kept snapshots lack, about two days of events; without them
// (the nightly rebuild off) nothing else would, and the log would grow
// until Redis, which also holds the job queues, runs out of memory. At the
// measured 120 bytes an entry the cap is about 1.2 GB. Past it the oldest
// entries go (XADD MAXLEN ~, so a little more is kept): a live model
// restarted after that, and a later rebuild, no longer see them.
const DefaultLogMaxLen = 10_000_000

// LogStart is the log position before every entry.
const LogStart = "0-0"

// InteractionLogOptions configures an InteractionLog. Zero fields take the
// defaults.
type InteractionLogOptions struct {
	// DedupeTTL is how long an event ID is remembered after it was logged.
	// It must cover redeliveries and client resends for as long as the
	// generation an event names takes feedback; default
	// FeedbackDedupeHorizon (8 days). Each remembered ID is one small key.
	DedupeTTL time.Duration
	// MaxIDBytes bounds event IDs. Default 256.
	MaxIDBytes int
	// MaxLen caps the log's length when appending (approximately: Redis
	// trims whole stream nodes). Default DefaultLogMaxLen.
	MaxLen int64
}

// InteractionLog is the durable, ordered, de-duplicated record of feedback
// events between rebuilds, kept in a Redis stream. A consumer appends each
// event once (Append); live models follow the stream in order (Read), and
// the nightly rebuild takes everything up to an entry into its snapshot and
// later trims what every snapshot holds (TrimBefore). Positions are stream
// entry IDs ("<ms>-<seq>"), compared with CompareLogIDs.
type InteractionLog struct {
	rdb  redis.UniversalClient
	opts InteractionLogOptions
}

// NewInteractionLog wraps a go-redis client.
func NewInteractionLog(rdb redis.UniversalClient, opts InteractionLogOptions) *InteractionLog {
	if opts.DedupeTTL <= 0 {
		opts.DedupeTTL = FeedbackDedupeHorizon
	}
	if opts.MaxIDBytes <= 0 {
		opts.MaxIDBytes = 256
	}
	if opts.MaxLen <= 0 {
		opts.MaxLen = DefaultLogMaxLen
	}
	return &InteractionLog{rdb: rdb, opts: opts}
}

// LogEntry is one logged event and its position.
type LogEntry struct {
	ID    string
	Event Event
}

// logAppend logs ARGV[1] under a new stream entry unless the event ID's
// marker (KEYS[2]) exists, all in one step, so that two deliveries of one
// event racing on two consumers still log it once; the stream keeps about
// ARGV[3] entries. It returns {entry ID, 1} when it logged, {earlier entry
// ID, 0} otherwise.
var logAppend = redis.NewScript(`
local prev = redis.call('GET', KEYS[2])
if prev then return {prev, 0} end
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], '*', 'ev', ARGV[1])
redis.call('SET', KEYS[2], id, 'EX', ARGV[2])
return {id, 1}
`)

// Append logs ev unless an event with its ID was logged within DedupeTTL.
// ev must carry an ID; it is not validated otherwise (callers check events
// with the store's rules first). It returns the entry's ID, and whether
// this call added it.
func (l *InteractionLog) Append(ctx context.Context, ev Event) (id string, added bool, err error) {
	if ev.ID == "" || len(ev.ID) > l.opts.MaxIDBytes {
		return "", false, fmt.Errorf("%w: event ID of %d bytes (want 1..%d)", ErrBadInput, len(ev.ID), l.opts.MaxIDBytes)
	}
	b, err := json.Marshal(ev)
	if err != nil {
		return "", false, fmt.Errorf("recsys: log event %q: %w", ev.ID, err)
	}
	ttl := strconv.FormatInt(int64(l.opts.DedupeTTL/time.Second), 10)
	res, err := logAppend.Run(ctx, l.rdb, []string{KeyLog, KeyLoggedPrefix + ev.ID}, b, ttl, l.opts.MaxLen).Slice()
	if err != nil {
		return "", false, fmt.Errorf("recsys: log event %q: %w", ev.ID, err)
	}
	if len(res) != 2 {
		return "", false, fmt.Errorf("recsys: log event %q: unexpected reply %v", ev.ID, res)
	}
	id, _ = res[0].(string)
	n, _ := res[1].(int64)
	return id, n == 1, nil
}

// Read returns up to count entries after position after, in order. With
// block > 0 it waits up to that long for the first one; it returns no
// entries and no error when none came.
func (l *InteractionLog) Read(ctx context.Context, after string, count int, block time.Duration) ([]LogEntry, error) {
	if block <= 0 {
		return l.Range(ctx, after, "+", count)
	}
	streams, err := l.rdb.XRead(ctx, &redis.XReadArgs{Streams: []string{KeyLog, after}, Count: int64(count), Block: block}).Result()
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("recsys: read log after %s: %w", after, err)
	}
	var out []LogEntry
	for _, s := range streams {
		if out, err = appendEntries(out, s.Messages); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// Range returns up to count entries after position after and at or before
// upto ("+" for the end), in order.
func (l *InteractionLog) Range(ctx context.Context, after, upto string, count int) ([]LogEntry, error) {
	msgs, err := l.rdb.XRangeN(ctx, KeyLog, "("+after, upto, int64(count)).Result()
	if err != nil {
		return nil, fmt.Errorf("recsys: read log (%s, %s]: %w", after, upto, err)
	}
	return appendEntries(nil, msgs)
}

func appendEntries(out []LogEntry, msgs []redis.XMessage) ([]LogEntry, error) {
	for _, m := range msgs {
		raw, _ := m.Values["ev"].(string)
		var ev Event
		if err := json.Unmarshal([]byte(raw), &ev); err != nil {
			return out, fmt.Errorf("recsys: log entry %s: %w", m.ID, err)
		}
		out = append(out, LogEntry{ID: m.ID, Event: ev})
	}
	return out, nil
}

// Last returns the position of the newest entry, LogStart when the log is
// empty.
func (l *InteractionLog) Last(ctx context.Context) (string, error) {
	msgs, err := l.rdb.XRevRangeN(ctx, KeyLog, "+", "-", 1).Result()
	if err != nil {
		return "", fmt.Errorf("recsys: log end: %w", err)
	}
	if len(msgs) == 0 {
		return LogStart, nil
	}
	return msgs[0].ID, nil
}

// Len returns the number of entries held.
func (l *InteractionLog) Len(ctx context.Context) (int64, error) {
	n, err := l.rdb.XLen(ctx, KeyLog).Result()
	if err != nil {
		return 0, fmt.Errorf("recsys: log length: %w", err)
	}
	return n, nil
}

// TrimBefore drops the entries before position id (id itself stays). It
// returns how many went.
func (l *InteractionLog) TrimBefore(ctx context.Context, id string) (int64, error) {
	if _, err := ParseLogID(id); err != nil {
		return 0, err
	}
	n, err := l.rdb.XTrimMinID(ctx, KeyLog, id).Result()
	if err != nil {
		return 0, fmt.Errorf("recsys: trim log before %s: %w", id, err)
	}
	return n, nil
}

// LogID is a parsed log position.
type LogID struct{ MS, Seq uint64 }

// ParseLogID reads "<ms>-<seq>".
func ParseLogID(s string) (LogID, error) {
	ms, seq, ok := strings.Cut(s, "-")
	a, err1 := strconv.ParseUint(ms, 10, 64)
	b, err2 := strconv.ParseUint(seq, 10, 64)
	if !ok || err1 != nil || err2 != nil {
		return LogID{}, fmt.Errorf("%w: log position %q: want <ms>-<seq>", ErrBadInput, s)
	}
	return LogID{a, b}, nil
}

// CompareLogIDs orders two log positions like strings.Compare; a position
// that does not parse sorts before every valid one.
func CompareLogIDs(a, b string) int {
	x, errA := ParseLogID(a)
	y, errB := ParseLogID(b)
	switch {
	case errA != nil || errB != nil:
		return boolCmp(errA == nil, errB == nil)
	case x.MS != y.MS:
		return boolCmp(x.MS > y.MS, x.MS < y.MS)
	}
	return boolCmp(x.Seq > y.Seq, x.Seq < y.Seq)
}

func boolCmp(greater, less bool) int {
	switch {
	case greater && !less:
		return 1
	case less && !greater:
		return -1
	}
	return 0
}
