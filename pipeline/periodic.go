package pipeline

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/hibiken/asynq"
	"github.com/robfig/cron/v3"

	"github.com/tandem-ai/tandem/limits"
)

// Periodic jobs are enqueued by every scheduler replica, and each enqueue of
// one tick uses the same TaskID, "<entry name>:<tick unix seconds>". asynq
// refuses a second task with an ID that still exists in the queue
// (ErrTaskIDConflict), so the first replica wins and the others do nothing.
// Retention keeps the finished task, and so its ID, for PeriodicRetention,
// which covers replicas whose clocks or timers drift apart. asynq's own
// Scheduler has no such guard: two replicas would enqueue every tick twice.

// Limits on schedules.
const (
	MaxScheduleBytes   = limits.ScheduleBytes
	MaxScheduleEntries = limits.ScheduleEntries
	MaxEntryNameLen    = limits.ScheduleEntryNameLen
	// PeriodicRetention is how long a finished periodic task (and its ID) is
	// kept so that late replicas still see the conflict.
	PeriodicRetention = time.Hour
	// MaxCatchUp is how far behind a tick may be and still be enqueued. A
	// scheduler that was suspended for longer skips the missed ticks instead
	// of enqueuing a burst of them.
	MaxCatchUp = limits.ScheduleCatchUp
)

// PeriodicEntry is one periodic job.
type PeriodicEntry struct {
	// Name identifies the entry in TaskIDs and logs: letters, digits, ". _ -".
	Name string `json:"name"`
	// Spec is a cron spec with five fields ("0 3 * * *"), a descriptor
	// ("@daily") or "@every <duration>". Times are UTC unless the spec starts
	// with CRON_TZ=<zone>. "@every" ticks at multiples of the duration since
	// the Unix epoch, so every replica picks the same instants.
	Spec string `json:"spec"`
	// Kind is the job kind to enqueue.
	Kind string `json:"kind"`
	// Payload is the job's JSON args object. Default {}.
	Payload json.RawMessage `json:"payload,omitempty"`
	// Queue overrides the kind's queue.
	Queue string `json:"queue,omitempty"`
}

// schedule is a cron schedule; Next returns the first tick strictly after t.
type schedule interface {
	Next(t time.Time) time.Time
}

// alignedEvery ticks at multiples of d since the Unix epoch. cron's own
// "@every" counts from the moment it is asked, which differs per replica.
type alignedEvery struct{ d time.Duration }

func (a alignedEvery) Next(t time.Time) time.Time {
	secs := int64(a.d / time.Second)
	u := t.Unix()
	next := (u/secs + 1) * secs
	if u < 0 && u%secs != 0 { // division truncates toward zero
		next -= secs
	}
	return time.Unix(next, 0).UTC()
}

// utcSchedule evaluates a cron spec in UTC: robfig/cron reads a spec without
// CRON_TZ in the zone of the time it is given, and replicas in different
// zones must agree.
type utcSchedule struct{ s cron.Schedule }

func (u utcSchedule) Next(t time.Time) time.Time { return u.s.Next(t.UTC()) }

func parseSpec(spec string) (s schedule, err error) {
	spec = strings.TrimSpace(spec)
	if spec == "" {
		return nil, errors.New("empty")
	}
	if (strings.HasPrefix(spec, "TZ=") || strings.HasPrefix(spec, "CRON_TZ=")) && !strings.Contains(spec, " ") {
		// robfig/cron slices past a missing space and panics.
		return nil, fmt.Errorf("%q: a time zone must be followed by a space and the schedule", spec)
	}
	defer func() {
		if v := recover(); v != nil { // defence in depth: input must never panic
			s, err = nil, fmt.Errorf("%q: %v", spec, v)
		}
	}()
	cs, err := cron.ParseStandard(spec)
	if err != nil {
		return nil, fmt.Errorf("%q: %w", spec, err)
	}
	if cd, ok := cs.(cron.ConstantDelaySchedule); ok {
		return alignedEvery{cd.Delay}, nil
	}
	return utcSchedule{cs}, nil
}

// checkEntry validates e on its own and returns its schedule and payload.
func checkEntry(e PeriodicEntry) (schedule, []byte, error) {
	if err := validateEntryName(e.Name); err != nil {
		return nil, nil, fmt.Errorf("name: %w", err)
	}
	s, err := parseSpec(e.Spec)
	if err != nil {
		return nil, nil, fmt.Errorf("spec: %w", err)
	}
	if err := ValidateKind(e.Kind); err != nil {
		return nil, nil, fmt.Errorf("kind: %w", err)
	}
	payload := bytes.TrimSpace(e.Payload)
	if len(payload) == 0 || bytes.Equal(payload, []byte("null")) {
		payload = []byte("{}")
	}
	if payload[0] != '{' || !json.Valid(payload) {
		return nil, nil, errors.New("payload: want a JSON object")
	}
	if len(payload) > MaxPayloadBytes {
		return nil, nil, fmt.Errorf("payload: %d bytes, over the limit of %d", len(payload), MaxPayloadBytes)
	}
	if e.Queue != "" {
		if err := ValidateQueueName(e.Queue); err != nil {
			return nil, nil, fmt.Errorf("queue: %w", err)
		}
	}
	return s, payload, nil
}

func validateEntryName(name string) error {
	if name == "" {
		return errors.New("empty")
	}
	if len(name) > MaxEntryNameLen {
		return fmt.Errorf("%d bytes, over the limit of %d", len(name), MaxEntryNameLen)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '.', c == '_', c == '-':
		default:
			return fmt.Errorf("%q has character %q at %d; use letters, digits . _ -", name, c, i)
		}
	}
	return nil
}

// LoadSchedule reads a JSON array of PeriodicEntry from path. Errors give
// the file, line and entry, and name the field.
func LoadSchedule(path string) ([]PeriodicEntry, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("load schedule: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxScheduleBytes+1))
	if err != nil {
		return nil, fmt.Errorf("load schedule %s: %w", path, err)
	}
	if len(data) > MaxScheduleBytes {
		return nil, fmt.Errorf("%s: over the limit of %d bytes", path, MaxScheduleBytes)
	}
	return ParseSchedule(path, data)
}

// ParseSchedule parses a schedule held in memory; name labels errors.
func ParseSchedule(name string, data []byte) ([]PeriodicEntry, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	at := func(off int64) string { return name + ":" + strconv.Itoa(lineOf(data, off)) }

	tok, err := dec.Token()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", at(dec.InputOffset()), describeJSONError(err))
	}
	if d, ok := tok.(json.Delim); !ok || d != '[' {
		return nil, fmt.Errorf("%s: want a JSON array of entries", at(0))
	}
	var entries []PeriodicEntry
	seen := make(map[string]int) // name -> line
	for dec.More() {
		start := skipSeparators(data, dec.InputOffset())
		n := len(entries) + 1
		if n > MaxScheduleEntries {
			return nil, fmt.Errorf("%s: more than %d entries", at(start), MaxScheduleEntries)
		}
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			off := dec.InputOffset()
			var se *json.SyntaxError
			if errors.As(err, &se) {
				off = se.Offset
			}
			return nil, fmt.Errorf("%s: entry %d: %w", at(off), n, describeJSONError(err))
		}
		var e PeriodicEntry
		ed := json.NewDecoder(bytes.NewReader(raw))
		ed.DisallowUnknownFields()
		if err := ed.Decode(&e); err != nil {
			off := start
			var te *json.UnmarshalTypeError
			if errors.As(err, &te) {
				off += te.Offset
			}
			return nil, fmt.Errorf("%s: entry %d: %w", at(off), n, describeJSONError(err))
		}
		if _, _, err := checkEntry(e); err != nil {
			return nil, fmt.Errorf("%s: entry %d (%q): %w", at(start), n, e.Name, err)
		}
		if line, dup := seen[e.Name]; dup {
			return nil, fmt.Errorf("%s: entry %d: name %q is also used on line %d", at(start), n, e.Name, line)
		}
		seen[e.Name] = lineOf(data, start)
		entries = append(entries, e)
	}
	if _, err := dec.Token(); err != nil { // the closing ']'
		return nil, fmt.Errorf("%s: %w", at(dec.InputOffset()), describeJSONError(err))
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%s: data after the array", at(dec.InputOffset()))
	}
	return entries, nil
}

// lineOf returns the 1-based line of byte offset off in data.
func lineOf(data []byte, off int64) int {
	if off > int64(len(data)) {
		off = int64(len(data))
	}
	return bytes.Count(data[:off], []byte("\n")) + 1
}

// skipSeparators moves off past whitespace and a comma, to where the next
// array element starts (the decoder's offset stops before them).
func skipSeparators(data []byte, off int64) int64 {
	for off < int64(len(data)) {
		switch data[off] {
		case ' ', '\t', '\r', '\n', ',':
			off++
		default:
			return off
		}
	}
	return off
}

// Periodic enqueues scheduled jobs. Run it in every scheduler replica.
type Periodic struct {
	c       *Client
	entries []periodicEntry
	logger  *slog.Logger
	clock   func() time.Time
}

type periodicEntry struct {
	PeriodicEntry
	sched   schedule
	payload []byte
}

// NewPeriodic checks entries (and, for kinds in c's registry, their payloads
// as a worker would) and returns a scheduler. clock nil means time.Now.
func NewPeriodic(c *Client, entries []PeriodicEntry, logger *slog.Logger, clock func() time.Time) (*Periodic, error) {
	if c == nil {
		return nil, errors.New("pipeline.NewPeriodic: nil client")
	}
	if logger == nil {
		logger = slog.Default()
	}
	if clock == nil {
		clock = time.Now
	}
	p := &Periodic{c: c, logger: logger, clock: clock}
	seen := make(map[string]bool)
	for i, e := range entries {
		s, payload, err := checkEntry(e)
		if err != nil {
			return nil, fmt.Errorf("periodic entry %d (%q): %w", i+1, e.Name, err)
		}
		if seen[e.Name] {
			return nil, fmt.Errorf("periodic entry %d: name %q is used twice", i+1, e.Name)
		}
		seen[e.Name] = true
		if c.reg.entry(e.Kind) != nil {
			if err := c.reg.Check(e.Kind, payload); err != nil {
				return nil, fmt.Errorf("periodic entry %d (%q): payload: %w", i+1, e.Name, err)
			}
		}
		p.entries = append(p.entries, periodicEntry{PeriodicEntry: e, sched: s, payload: payload})
	}
	return p, nil
}

// PeriodicTaskID returns the deterministic ID of entry name's job for tick at.
func PeriodicTaskID(name string, at time.Time) string {
	return name + PeriodicTaskIDSeparator + strconv.FormatInt(at.Unix(), 10)
}

// Tick enqueues every entry whose schedule fires at the second of at. A tick
// already enqueued (by another replica, or by this one before a restart) is
// skipped silently. It returns how many jobs this call enqueued; enqueue
// failures of some entries do not stop the others and are joined in err.
func (p *Periodic) Tick(ctx context.Context, at time.Time) (enqueued int, err error) {
	at = time.Unix(at.Unix(), 0).UTC()
	var errs []error
	for _, e := range p.entries {
		if !e.sched.Next(at.Add(-time.Second)).Equal(at) {
			continue
		}
		id := PeriodicTaskID(e.Name, at)
		opts := []asynq.Option{asynq.TaskID(id), asynq.Retention(PeriodicRetention)}
		if e.Queue != "" {
			opts = append(opts, asynq.Queue(e.Queue))
		}
		_, err := p.c.EnqueueRaw(ctx, e.Kind, e.payload, opts...)
		switch {
		case errors.Is(err, asynq.ErrTaskIDConflict):
			p.logger.Debug("periodic job already enqueued", "entry", e.Name, "id", id)
		case err != nil:
			errs = append(errs, fmt.Errorf("periodic %s: %w", e.Name, err))
		default:
			enqueued++
			p.logger.Info("periodic job enqueued", "entry", e.Name, "kind", e.Kind, "id", id)
		}
	}
	return enqueued, errors.Join(errs...)
}

// next returns the earliest tick of any entry strictly after t, or the zero
// time if none will ever fire.
func (p *Periodic) next(t time.Time) time.Time {
	var best time.Time
	for _, e := range p.entries {
		n := e.sched.Next(t)
		if !n.IsZero() && (best.IsZero() || n.Before(best)) {
			best = n
		}
	}
	return best
}

// Run ticks until ctx is done, then returns nil. Enqueue errors are logged
// and do not stop it: the next tick tries again.
func (p *Periodic) Run(ctx context.Context) error {
	last := p.clock()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		next := p.next(last)
		if next.IsZero() {
			p.logger.Warn("no periodic entry will fire again")
			<-ctx.Done()
			return nil
		}
		if wait := next.Sub(p.clock()); wait > 0 {
			timer.Reset(wait)
			select {
			case <-ctx.Done():
				return nil
			case <-timer.C:
			}
		}
		if ctx.Err() != nil {
			return nil
		}
		if now := p.clock(); now.Sub(next) > MaxCatchUp {
			p.logger.Warn("skipping missed periodic ticks", "from", next, "to", now)
			last = now
			continue
		}
		if _, err := p.Tick(ctx, next); err != nil {
			p.logger.Error("periodic tick", "at", next, "error", err)
		}
		last = next
	}
}
