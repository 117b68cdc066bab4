package loop

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tandem-ai/tandem/feedback"
	"github.com/tandem-ai/tandem/pipeline"
	"github.com/tandem-ai/tandem/recsys"
)

// The loop metrics aggregate generation feedback in Redis, so that every
// producer replica reads the same figures. One Lua script applies an event:
// it marks the event id as counted and adds to the counters in one step,
// so a redelivered or resent event never counts twice, and a crash can
// never leave it half counted.
//
// A re-rating (a revision, feedback.Event.Revision >= 1) is the same rating
// with another value: it adds value - previous to the rating sums and
// nothing to the counts, in the all-time hash and in the hour where the
// rating was counted first (feedback.Event.RatedAt), so every mean rating,
// all-time or hourly, is that of the latest ratings. The generation's
// summary keeps the rating of the highest revision counted, whatever the
// order the revisions arrive in.
//
// Keys (all under pipeline.Key("loop", ...)):
//
//	loop:seen:<event id>        counted marker, expires after SeenTTL
//	loop:metrics:total          hash of all-time counters
//	loop:metrics:hour:<N>       hash of the counters of hour N (Unix hours), expires after Retention
//	loop:metrics:names:<scope>  set of the names counted per scope, at most MaxNames
//	loop:feedback:<gen id>      hash of what people did with one generation
//
// A counter field is "<scope>\x1f<name>\x1f<counter>": scope "all" (name
// "all"), "template", "topic" or "model"; counter "events", an action,
// "rating_sum" or "edit_distance_sum".

// Scopes the metrics are broken down by.
const (
	ScopeAll      = "all"
	ScopeTemplate = "template"
	ScopeTopic    = "topic"
	ScopeModel    = "model"
)

// OtherName collects the names of a scope past MetricsOptions.MaxNames.
const OtherName = "_other"

// Defaults of MetricsOptions.
const (
	DefaultMetricsRetention = 30 * 24 * time.Hour
	// DefaultSeenTTL is the horizon the interaction log dedupes over too:
	// it outlives the FEEDBACK stream's 7 days and a generation record's
	// (DefaultRecordTTL), so any event the stream can redeliver or a client
	// can resend is still known as counted, here as in the recommender.
	DefaultSeenTTL  = recsys.FeedbackDedupeHorizon
	DefaultMaxNames = 100
	// MaxMetricsHours bounds the hours one Read returns.
	MaxMetricsHours = 24 * 31
)

// MetricsOptions configures Metrics; zero values take the defaults.
type MetricsOptions struct {
	// Retention is how long hourly buckets are kept. Default 30 days.
	Retention time.Duration
	// SeenTTL is how long a counted event id is remembered. Default 8 days.
	SeenTTL time.Duration
	// MaxNames bounds the templates, topics and models counted by name
	// (each scope separately); later ones are counted as OtherName, so
	// the Prometheus label sets stay bounded. Default 100.
	MaxNames int
	// FeedbackTTL is how long a generation's feedback summary is kept.
	// Default DefaultRecordTTL, as long as the generation record.
	FeedbackTTL time.Duration
}

// Metrics records and reads the loop metrics.
type Metrics struct {
	rdb  redis.UniversalClient
	opts MetricsOptions
}

// NewMetrics returns Metrics over rdb.
func NewMetrics(rdb redis.UniversalClient, o MetricsOptions) *Metrics {
	if o.Retention <= 0 {
		o.Retention = DefaultMetricsRetention
	}
	if o.SeenTTL <= 0 {
		o.SeenTTL = DefaultSeenTTL
	}
	if o.MaxNames <= 0 {
		o.MaxNames = DefaultMaxNames
	}
	if o.FeedbackTTL <= 0 {
		o.FeedbackTTL = DefaultRecordTTL
	}
	return &Metrics{rdb: rdb, opts: o}
}

const fieldSep = "\x1f"

func seenKey(eventID string) string { return pipeline.Key("loop", "seen", eventID) }
func totalKey() string              { return pipeline.Key("loop", "metrics", "total") }
func hourKey(hour int64) string {
	return pipeline.Key("loop", "metrics", "hour", strconv.FormatInt(hour, 10))
}
func namesKey(scope string) string       { return pipeline.Key("loop", "metrics", "names", scope) }
func feedbackKey(genID string) string    { return pipeline.Key("loop", "feedback", genID) }
func unixHour(t time.Time) int64         { return int64(math.Floor(float64(t.Unix()) / 3600)) }
func hourStart(h int64) time.Time        { return time.Unix(h*3600, 0).UTC() }
func field(scope, name, c string) string { return scope + fieldSep + name + fieldSep + c }

// recordScript applies one event. KEYS: seen, total, hour, feedback, then
// one names set per scoped name. ARGV: seen TTL, hour TTL, feedback TTL,
// max names, action, value to add (rating, a revision's value - previous,
// edit distance; "1" otherwise), event unix time, revision (0 but in a
// re-rating), the value the generation's summary shows, number of scoped
// names, then scope and name of each.
var recordScript = redis.NewScript(`
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then return 0 end
local action, val, rev, n = ARGV[5], ARGV[6], tonumber(ARGV[8]), tonumber(ARGV[10])
local sep = '\31'
local groups = {'all' .. sep .. 'all'}
for i = 1, n do
  local scope, name, set = ARGV[10 + 2*i - 1], ARGV[10 + 2*i], KEYS[4 + i]
  if redis.call('SISMEMBER', set, name) == 0 then
    if redis.call('SCARD', set) < tonumber(ARGV[4]) then
      redis.call('SADD', set, name)
    else
      name = '_other'
    end
  end
  groups[#groups + 1] = scope .. sep .. name
end
for _, key in ipairs({KEYS[2], KEYS[3]}) do
  for _, g in ipairs(groups) do
    if rev == 0 then
      redis.call('HINCRBY', key, g .. sep .. 'events', 1)
      redis.call('HINCRBY', key, g .. sep .. action, 1)
    end
    if action == 'rate' then redis.call('HINCRBYFLOAT', key, g .. sep .. 'rating_sum', val) end
    if action == 'edit' then redis.call('HINCRBYFLOAT', key, g .. sep .. 'edit_distance_sum', val) end
  end
end
redis.call('EXPIRE', KEYS[3], ARGV[2])
if action ~= 'rate' then
  redis.call('HSET', KEYS[4], action, ARGV[9], 'at' .. sep .. action, ARGV[7])
elseif rev >= tonumber(redis.call('HGET', KEYS[4], 'rev' .. sep .. 'rate') or '-1') then
  redis.call('HSET', KEYS[4], action, ARGV[9], 'at' .. sep .. action, ARGV[7], 'rev' .. sep .. action, rev)
end
redis.call('EXPIRE', KEYS[4], ARGV[3])
return 1
`)

// Record counts ev, which happened at at, once: counted is false when its
// id was counted before. The value of an edit is EditDistance(completion,
// edited text). A revision of a rating adds the difference it makes to
// the rating sums of all time and of the hour of ev.RatedAt (the hour of
// at when RatedAt is not within the dedupe horizon before at), and
// nothing to the counts.
func (m *Metrics) Record(ctx context.Context, ev feedback.Event, at time.Time) (counted bool, err error) {
	switch {
	case ev.ID == "":
		return false, fmt.Errorf("%w: field \"id\": required", feedback.ErrInvalid)
	case !ev.OnGeneration():
		return false, fmt.Errorf("%w: field \"generation_id\": required", feedback.ErrInvalid)
	}
	if err := ev.Check(""); err != nil {
		return false, err
	}
	val, shown := "1", ""
	switch ev.Action {
	case feedback.ActionRate:
		val = strconv.FormatFloat(ev.Value-ev.Previous, 'f', -1, 64)
		shown = strconv.FormatFloat(ev.Value, 'f', -1, 64)
	case feedback.ActionEdit:
		val = strconv.FormatFloat(EditDistance(ev.Completion, ev.EditedText), 'f', 6, 64)
	}
	if shown == "" {
		shown = val
	}
	hour := unixHour(at)
	if ev.Revision > 0 && !ev.RatedAt.Before(at.Add(-m.opts.SeenTTL)) && !ev.RatedAt.After(at.Add(maxClockSkew)) {
		hour = unixHour(ev.RatedAt)
	}
	keys := []string{seenKey(ev.ID), totalKey(), hourKey(hour), feedbackKey(ev.GenerationID)}
	args := []any{
		int64(m.opts.SeenTTL / time.Second), int64(m.opts.Retention/time.Second) + 3600,
		int64(m.opts.FeedbackTTL / time.Second), m.opts.MaxNames,
		ev.Action, val, at.Unix(), ev.Revision, shown, 0,
	}
	n := 0
	for _, sn := range [][2]string{{ScopeTemplate, ev.Template}, {ScopeTopic, ev.Topic}, {ScopeModel, ev.Model}} {
		if name := metricName(sn[1]); name != "" {
			keys = append(keys, namesKey(sn[0]))
			args = append(args, sn[0], name)
			n++
		}
	}
	args[9] = n
	res, err := recordScript.Run(ctx, m.rdb, keys, args...).Int()
	if err != nil {
		return false, fmt.Errorf("loop metrics: %w", err)
	}
	return res == 1, nil
}

// metricName makes a template, topic or model name safe as a counter field
// and a label: control characters (the field separator among them) are
// dropped and the length bounded.
func metricName(s string) string {
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return -1
		}
		return r
	}, s)
	return cut(s, MaxRecordIDBytes)
}

// Counts are the raw counters of one scope and name.
type Counts struct {
	Events          int64   `json:"events"`
	Accept          int64   `json:"accept"`
	Reject          int64   `json:"reject"`
	Rate            int64   `json:"rate"`
	Edit            int64   `json:"edit"`
	Regenerate      int64   `json:"regenerate"`
	RatingSum       float64 `json:"rating_sum"`
	EditDistanceSum float64 `json:"edit_distance_sum"`
}

func (c *Counts) set(counter, v string) {
	floats := map[string]*float64{"rating_sum": &c.RatingSum, "edit_distance_sum": &c.EditDistanceSum}
	if p, ok := floats[counter]; ok {
		*p, _ = strconv.ParseFloat(v, 64)
		return
	}
	ints := map[string]*int64{"events": &c.Events, feedback.ActionAccept: &c.Accept, feedback.ActionReject: &c.Reject,
		feedback.ActionRate: &c.Rate, feedback.ActionEdit: &c.Edit, feedback.ActionRegenerate: &c.Regenerate}
	if p, ok := ints[counter]; ok {
		*p, _ = strconv.ParseInt(v, 10, 64)
	}
}

// Decisions are the feedback events that take a side on a generation:
// accepts, edits, rejects and regenerations (ratings do not).
func (c Counts) Decisions() int64 { return c.Accept + c.Edit + c.Reject + c.Regenerate }

// AcceptanceRate is (accepts + edits) / decisions; ok is false with no
// decision.
func (c Counts) AcceptanceRate() (float64, bool) {
	d := c.Decisions()
	if d == 0 {
		return 0, false
	}
	return float64(c.Accept+c.Edit) / float64(d), true
}

// MeanRating is the mean of the ratings; ok is false with none.
func (c Counts) MeanRating() (float64, bool) {
	if c.Rate == 0 {
		return 0, false
	}
	return c.RatingSum / float64(c.Rate), true
}

// MeanEditDistance is the mean EditDistance of the edits; ok is false
// with none.
func (c Counts) MeanEditDistance() (float64, bool) {
	if c.Edit == 0 {
		return 0, false
	}
	return c.EditDistanceSum / float64(c.Edit), true
}

// Stats are Counts with their ratios; a ratio without data is null.
type Stats struct {
	Counts
	AcceptanceRate   *float64 `json:"acceptance_rate"`
	MeanRating       *float64 `json:"mean_rating"`
	MeanEditDistance *float64 `json:"mean_edit_distance"`
}

func statsOf(c Counts) Stats {
	opt := func(v float64, ok bool) *float64 {
		if !ok {
			return nil
		}
		return &v
	}
	return Stats{
		Counts:           c,
		AcceptanceRate:   opt(c.AcceptanceRate()),
		MeanRating:       opt(c.MeanRating()),
		MeanEditDistance: opt(c.MeanEditDistance()),
	}
}

// Breakdown is a set of counters: over everything, and per template,
// topic and model.
type Breakdown struct {
	All      Stats            `json:"all"`
	Template map[string]Stats `json:"template"`
	Topic    map[string]Stats `json:"topic"`
	Model    map[string]Stats `json:"model"`
}

// Bucket is the Breakdown of one hour.
type Bucket struct {
	Start time.Time `json:"start"`
	Breakdown
}

// MetricsView is what GET /v1/loop/metrics answers.
type MetricsView struct {
	// From and To bound the hours of Series: [From, To).
	From time.Time `json:"from"`
	To   time.Time `json:"to"`
	// Total is all-time, Series one bucket per hour, oldest first, empty
	// hours included.
	Total  Breakdown `json:"total"`
	Series []Bucket  `json:"series"`
}

// Read returns the all-time totals and the hours hours up to and
// including the one holding now, each hour broken down overall and per
// template, topic and model (GET /v1/loop/metrics answers it whole).
func (m *Metrics) Read(ctx context.Context, now time.Time, hours int) (MetricsView, error) {
	return m.read(ctx, now, hours, nil)
}

// ReadOverall is Read with only the overall counters of each hour
// (Bucket.All; the per-name maps are empty), as the dashboard's plots use
// them. It fetches those eight fields of each hourly hash (HMGET) rather
// than the whole hash, which holds eight per template, topic and model
// seen in the hour: over a month of hours, the difference between a few
// hundred kilobytes and tens of megabytes.
func (m *Metrics) ReadOverall(ctx context.Context, now time.Time, hours int) (MetricsView, error) {
	return m.read(ctx, now, hours, overallFields)
}

// overallFields are the counter fields of scope ScopeAll.
var overallFields = func() []string {
	out := []string{field(ScopeAll, ScopeAll, "events"), field(ScopeAll, ScopeAll, "rating_sum"), field(ScopeAll, ScopeAll, "edit_distance_sum")}
	for _, a := range feedback.Actions() {
		out = append(out, field(ScopeAll, ScopeAll, a))
	}
	return out
}()

// read reads the totals and the hourly series: each hour's fields, or
// its whole hash when fields is nil.
func (m *Metrics) read(ctx context.Context, now time.Time, hours int, fields []string) (MetricsView, error) {
	if hours < 1 || hours > MaxMetricsHours {
		return MetricsView{}, fmt.Errorf("hours: %d out of range [1, %d]", hours, MaxMetricsHours)
	}
	last := unixHour(now)
	first := last - int64(hours) + 1
	pipe := m.rdb.Pipeline()
	total := pipe.HGetAll(ctx, totalKey())
	hourly := make([]func() map[string]string, 0, hours)
	for h := first; h <= last; h++ {
		if fields == nil {
			hourly = append(hourly, pipe.HGetAll(ctx, hourKey(h)).Val)
			continue
		}
		cmd := pipe.HMGet(ctx, hourKey(h), fields...)
		hourly = append(hourly, func() map[string]string {
			got := make(map[string]string, len(fields))
			for i, v := range cmd.Val() {
				if s, ok := v.(string); ok {
					got[fields[i]] = s
				}
			}
			return got
		})
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return MetricsView{}, fmt.Errorf("loop metrics: %w", err)
	}
	v := MetricsView{From: hourStart(first), To: hourStart(last + 1), Total: breakdownOf(total.Val())}
	for i, values := range hourly {
		v.Series = append(v.Series, Bucket{Start: hourStart(first + int64(i)), Breakdown: breakdownOf(values())})
	}
	return v, nil
}

// Totals returns the all-time counters.
func (m *Metrics) Totals(ctx context.Context) (Breakdown, error) {
	all, err := m.rdb.HGetAll(ctx, totalKey()).Result()
	if err != nil {
		return Breakdown{}, fmt.Errorf("loop metrics: %w", err)
	}
	return breakdownOf(all), nil
}

func breakdownOf(fields map[string]string) Breakdown {
	var all Counts
	per := map[string]map[string]*Counts{ScopeTemplate: {}, ScopeTopic: {}, ScopeModel: {}}
	for f, v := range fields {
		parts := strings.SplitN(f, fieldSep, 3)
		if len(parts) != 3 {
			continue
		}
		if parts[0] == ScopeAll {
			all.set(parts[2], v)
			continue
		}
		names, ok := per[parts[0]]
		if !ok {
			continue
		}
		c := names[parts[1]]
		if c == nil {
			c = &Counts{}
			names[parts[1]] = c
		}
		c.set(parts[2], v)
	}
	stats := func(m map[string]*Counts) map[string]Stats {
		out := make(map[string]Stats, len(m))
		for k, c := range m {
			out[k] = statsOf(*c)
		}
		return out
	}
	return Breakdown{All: statsOf(all), Template: stats(per[ScopeTemplate]), Topic: stats(per[ScopeTopic]), Model: stats(per[ScopeModel])}
}

// GenerationFeedback is what people did with one generation, as counted
// by the metrics: each action at most once.
type GenerationFeedback struct {
	Accepted    bool `json:"accepted,omitempty"`
	Rejected    bool `json:"rejected,omitempty"`
	Edited      bool `json:"edited,omitempty"`
	Regenerated bool `json:"regenerated,omitempty"`
	// Rating is 0 when unrated.
	Rating int `json:"rating,omitempty"`
	// EditDistance is set when Edited.
	EditDistance float64 `json:"edit_distance,omitempty"`
	// Last is when the latest feedback happened.
	Last time.Time `json:"last,omitzero"`
}

// Any reports whether there is any feedback.
func (g GenerationFeedback) Any() bool { return !g.Last.IsZero() }

// FeedbackOf returns the feedback on each of ids (a zero value for none).
func (m *Metrics) FeedbackOf(ctx context.Context, ids []string) ([]GenerationFeedback, error) {
	pipe := m.rdb.Pipeline()
	cmds := make([]*redis.MapStringStringCmd, len(ids))
	for i, id := range ids {
		cmds[i] = pipe.HGetAll(ctx, feedbackKey(id))
	}
	if len(ids) > 0 {
		if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
			return nil, fmt.Errorf("loop feedback: %w", err)
		}
	}
	out := make([]GenerationFeedback, len(ids))
	for i, c := range cmds {
		g := &out[i]
		for f, v := range c.Val() {
			if strings.HasPrefix(f, "at"+fieldSep) {
				if sec, err := strconv.ParseInt(v, 10, 64); err == nil {
					if t := time.Unix(sec, 0).UTC(); t.After(g.Last) {
						g.Last = t
					}
				}
				continue
			}
			flags := map[string]*bool{feedback.ActionAccept: &g.Accepted, feedback.ActionReject: &g.Rejected, feedback.ActionRegenerate: &g.Regenerated, feedback.ActionEdit: &g.Edited}
			if p, ok := flags[f]; ok {
				*p = true
			}
			switch f {
			case feedback.ActionRate:
				r, _ := strconv.ParseFloat(v, 64)
				g.Rating = int(r)
			case feedback.ActionEdit:
				g.EditDistance, _ = strconv.ParseFloat(v, 64)
			}
		}
	}
	return out, nil
}
