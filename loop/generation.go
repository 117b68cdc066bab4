package loop

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/redis/go-redis/v9"

	"github.com/tandem-ai/tandem/limits"
	"github.com/tandem-ai/tandem/pipeline"
)

// Limits on one generation record.
const (
	// MaxRecordTextBytes bounds Prompt and Text each; longer text is cut at
	// a rune boundary when stored (the record is for feedback and display).
	MaxRecordTextBytes = limits.RecordTextBytes
	// MaxRecordIDBytes bounds ID, User, Session, Template, Topic and Model.
	MaxRecordIDBytes = limits.RecordIDBytes
	// DefaultRecordTTL is how long a record is kept after its last write.
	DefaultRecordTTL = 7 * 24 * time.Hour
	// DefaultRecentMax is how many ids the recent index keeps.
	DefaultRecentMax = 1000
)

// Generation is what the loop remembers of one generation.
type Generation struct {
	ID       string `json:"id"`
	User     string `json:"user,omitempty"`
	Session  string `json:"session,omitempty"`
	Model    string `json:"model,omitempty"`    // registry name[@version] or a path
	Template string `json:"template,omitempty"` // recommender item of kind "template"
	Topic    string `json:"topic,omitempty"`    // recommender item of kind "topic"
	Prompt   string `json:"prompt"`
	Text     string `json:"text"`
	// Tokens is the number of generated tokens; FinishReason "stop",
	// "length" or "cancelled".
	Tokens       int    `json:"tokens,omitempty"`
	FinishReason string `json:"finish_reason,omitempty"`
	// Source says which path made it: "interactive" or "personalize".
	Source    string    `json:"source,omitempty"`
	CreatedAt time.Time `json:"created_at"`
}

// ErrNotFound is returned by Get for an unknown or expired id.
var ErrNotFound = errors.New("generation not found")

// Validate checks the identifying fields of g.
func (g Generation) Validate() error {
	if err := pipeline.ValidateID(g.ID); err != nil {
		return fmt.Errorf("generation: field \"id\": %w", err)
	}
	for name, v := range map[string]string{"user": g.User, "session": g.Session, "model": g.Model, "template": g.Template, "topic": g.Topic} {
		if len(v) > MaxRecordIDBytes || !utf8.ValidString(v) || strings.ContainsAny(v, "\x00\n") {
			return fmt.Errorf("generation: field %q: at most %d bytes of UTF-8 without NUL or newline", name, MaxRecordIDBytes)
		}
	}
	return nil
}

// StoreOptions configures a Store; zero values take the defaults.
type StoreOptions struct {
	TTL       time.Duration
	RecentMax int
}

// Store keeps generation records in Redis: one JSON string per id
// (tandem:gen:<id>, with a TTL) and a sorted set of recent ids scored by
// creation time (tandem:gen:recent, trimmed to RecentMax).
type Store struct {
	rdb  redis.UniversalClient
	opts StoreOptions
}

// NewStore returns a Store over rdb.
func NewStore(rdb redis.UniversalClient, o StoreOptions) *Store {
	if o.TTL <= 0 {
		o.TTL = DefaultRecordTTL
	}
	if o.RecentMax <= 0 {
		o.RecentMax = DefaultRecentMax
	}
	return &Store{rdb: rdb, opts: o}
}

// RecordKey is the Redis key of one generation record.
func RecordKey(id string) string { return pipeline.Key("gen", id) }

// RecentKey is the sorted set of recent generation ids.
func RecentKey() string { return pipeline.Key("gen", "recent") }

// Save writes g (overwriting a record with the same id) and indexes it as
// recent. Prompt and Text longer than MaxRecordTextBytes are cut.
func (s *Store) Save(ctx context.Context, g Generation) error {
	if err := g.Validate(); err != nil {
		return err
	}
	if g.CreatedAt.IsZero() {
		g.CreatedAt = time.Now().UTC()
	}
	g.Prompt = cut(g.Prompt, MaxRecordTextBytes)
	g.Text = cut(g.Text, MaxRecordTextBytes)
	b, err := json.Marshal(g)
	if err != nil {
		return err
	}
	_, err = s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Set(ctx, RecordKey(g.ID), b, s.opts.TTL)
		p.ZAdd(ctx, RecentKey(), redis.Z{Score: float64(g.CreatedAt.UnixMilli()), Member: g.ID})
		p.ZRemRangeByRank(ctx, RecentKey(), 0, int64(-s.opts.RecentMax-1))
		return nil
	})
	return err
}

// Get returns the record of id, or ErrNotFound.
func (s *Store) Get(ctx context.Context, id string) (Generation, error) {
	var g Generation
	if err := pipeline.ValidateID(id); err != nil {
		return g, fmt.Errorf("generation id: %w", err)
	}
	b, err := s.rdb.Get(ctx, RecordKey(id)).Bytes()
	if errors.Is(err, redis.Nil) {
		return g, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	if err != nil {
		return g, err
	}
	if err := json.Unmarshal(b, &g); err != nil {
		return g, fmt.Errorf("generation %s: %w", id, err)
	}
	return g, nil
}

// Recent returns up to n records, newest first; ids whose record expired
// are skipped (and dropped from the index).
func (s *Store) Recent(ctx context.Context, n int) ([]Generation, error) {
	if n <= 0 {
		return nil, nil
	}
	ids, err := s.rdb.ZRevRange(ctx, RecentKey(), 0, int64(n-1)).Result()
	if err != nil || len(ids) == 0 {
		return nil, err
	}
	keys := make([]string, len(ids))
	for i, id := range ids {
		keys[i] = RecordKey(id)
	}
	vals, err := s.rdb.MGet(ctx, keys...).Result()
	if err != nil {
		return nil, err
	}
	out := make([]Generation, 0, len(ids))
	var gone []any
	for i, v := range vals {
		str, ok := v.(string)
		if !ok {
			gone = append(gone, ids[i])
			continue
		}
		var g Generation
		if json.Unmarshal([]byte(str), &g) != nil {
			gone = append(gone, ids[i])
			continue
		}
		out = append(out, g)
	}
	if len(gone) > 0 {
		s.rdb.ZRem(ctx, RecentKey(), gone...)
	}
	return out, nil
}

// cut returns s shortened to at most n bytes at a rune boundary.
func cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
