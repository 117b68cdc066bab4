package loop

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/redis/go-redis/v9"

	"github.com/tandem-ai/tandem/pipeline"
)

// Limits on sessions. The store enforces them on every write, so a session
// read back is always within them.
const (
	// DefaultSessionTurns is how many turns a session keeps by default;
	// older turns are dropped first.
	DefaultSessionTurns = 16
	// DefaultSessionBytes bounds the prompt and reply bytes of the kept
	// turns together by default; older turns are dropped first.
	DefaultSessionBytes = 16 << 10
	// MaxSessionTurns and MaxSessionBytes bound what SessionOptions may ask
	// for, and what a job may carry as history.
	MaxSessionTurns = 256
	MaxSessionBytes = 256 << 10
	// DefaultSessionTTL is how long a session lives after its last write.
	DefaultSessionTTL = 24 * time.Hour
	// sessionWriteRetries bounds optimistic-transaction retries of Append
	// when concurrent writers touch the same session.
	sessionWriteRetries = 8
)

// Errors of the session store.
var (
	ErrSessionNotFound = errors.New("session not found")
	ErrSessionExists   = errors.New("session already exists")
)

// Turn is one exchange of a session: what the person wrote and what came
// back, with the id of the generation (its loop record) that produced it.
type Turn struct {
	Prompt       string `json:"prompt"`
	Reply        string `json:"reply"`
	GenerationID string `json:"generation_id,omitempty"`
}

func (t Turn) bytes() int { return len(t.Prompt) + len(t.Reply) }

// Session is a conversation: who holds it, their standing instructions (see
// ParseInstructions) and the turns so far, oldest first.
type Session struct {
	ID           string    `json:"id"`
	User         string    `json:"user,omitempty"`
	Instructions string    `json:"instructions,omitempty"`
	Turns        []Turn    `json:"turns"`
	CreatedAt    time.Time `json:"created_at"`
	UpdatedAt    time.Time `json:"updated_at"`
}

// SessionOptions configures a SessionStore; zero values take the defaults.
type SessionOptions struct {
	TTL      time.Duration // default DefaultSessionTTL
	MaxTurns int           // default DefaultSessionTurns, at most MaxSessionTurns
	MaxBytes int           // default DefaultSessionBytes, at most MaxSessionBytes
}

// SessionStore keeps sessions in Redis, one JSON string per session under
// SessionKey(id), expiring DefaultSessionTTL after its last write.
type SessionStore struct {
	rdb  redis.UniversalClient
	opts SessionOptions
}

// NewSessionStore returns a SessionStore over rdb.
func NewSessionStore(rdb redis.UniversalClient, o SessionOptions) *SessionStore {
	if o.TTL <= 0 {
		o.TTL = DefaultSessionTTL
	}
	if o.MaxTurns <= 0 {
		o.MaxTurns = DefaultSessionTurns
	}
	if o.MaxBytes <= 0 {
		o.MaxBytes = DefaultSessionBytes
	}
	o.MaxTurns = min(o.MaxTurns, MaxSessionTurns)
	o.MaxBytes = min(o.MaxBytes, MaxSessionBytes)
	return &SessionStore{rdb: rdb, opts: o}
}

// SessionKey is the Redis key of one session.
func SessionKey(id string) string { return pipeline.Key("session", id) }

// NewSessionID returns a fresh session id ("sess-" and 24 hex digits).
func NewSessionID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return "sess-" + hex.EncodeToString(b[:])
}

// Create stores a new session. An empty ID gets NewSessionID; CreatedAt and
// UpdatedAt are set; instructions must parse. It refuses an id in use.
func (s *SessionStore) Create(ctx context.Context, sess Session) (Session, error) {
	if sess.ID == "" {
		sess.ID = NewSessionID()
	}
	if err := ValidateSession(sess); err != nil {
		return sess, err
	}
	now := time.Now().UTC()
	sess.CreatedAt, sess.UpdatedAt = now, now
	sess.Turns = s.bound(sess.Turns)
	b, err := json.Marshal(sess)
	if err != nil {
		return sess, err
	}
	ok, err := s.rdb.SetNX(ctx, SessionKey(sess.ID), b, s.opts.TTL).Result()
	if err != nil {
		return sess, err
	}
	if !ok {
		// go-redis sends SETNX again after a read timeout, and a Redis
		// that was only slow runs both: the repeat finds this call's own
		// session (the same bytes, creation time included), not a clash.
		if cur, gerr := s.rdb.Get(ctx, SessionKey(sess.ID)).Result(); gerr == nil && cur == string(b) {
			return sess, nil
		}
		return sess, fmt.Errorf("%w: %s", ErrSessionExists, sess.ID)
	}
	return sess, nil
}

// Get returns the session id, or ErrSessionNotFound.
func (s *SessionStore) Get(ctx context.Context, id string) (Session, error) {
	if err := pipeline.ValidateID(id); err != nil {
		return Session{}, fmt.Errorf("session: %w", err)
	}
	b, err := s.rdb.Get(ctx, SessionKey(id)).Bytes()
	if errors.Is(err, redis.Nil) {
		return Session{}, fmt.Errorf("%w: %s (unknown, or idle longer than its TTL)", ErrSessionNotFound, id)
	}
	if err != nil {
		return Session{}, err
	}
	return decodeSession(id, b)
}

// Append adds t as the newest turn of session id, drops the oldest turns
// beyond the store's turn and byte bounds, and renews the TTL. Concurrent
// appends to one session are serialised by an optimistic transaction, so
// none is lost.
func (s *SessionStore) Append(ctx context.Context, id string, t Turn) (Session, error) {
	return s.update(ctx, id, t, func(turns []Turn) []Turn { return append(turns, t) })
}

// Replace puts t in the place of the turn of generation genID (a
// regenerated reply takes the place of the one it replaces), or appends
// it when the session no longer holds that turn. Bounds, TTL and
// concurrency are as for Append.
func (s *SessionStore) Replace(ctx context.Context, id, genID string, t Turn) (Session, error) {
	if genID == "" {
		return Session{}, errors.New("session turn: the generation id to replace is empty")
	}
	return s.update(ctx, id, t, func(turns []Turn) []Turn {
		for i := range turns {
			if turns[i].GenerationID == genID {
				turns[i] = t
				return turns
			}
		}
		return append(turns, t)
	})
}

// update writes edit(turns) back as session id's turns, bounded, in an
// optimistic transaction retried on concurrent writes; t is the turn edit
// adds, checked first.
func (s *SessionStore) update(ctx context.Context, id string, t Turn, edit func([]Turn) []Turn) (Session, error) {
	if err := pipeline.ValidateID(id); err != nil {
		return Session{}, fmt.Errorf("session: %w", err)
	}
	if !utf8.ValidString(t.Prompt) || !utf8.ValidString(t.Reply) {
		return Session{}, errors.New("session turn: prompt and reply must be UTF-8")
	}
	key := SessionKey(id)
	var out Session
	for range sessionWriteRetries {
		err := s.rdb.Watch(ctx, func(tx *redis.Tx) error {
			b, err := tx.Get(ctx, key).Bytes()
			if errors.Is(err, redis.Nil) {
				return fmt.Errorf("%w: %s (unknown, or idle longer than its TTL)", ErrSessionNotFound, id)
			}
			if err != nil {
				return err
			}
			sess, err := decodeSession(id, b)
			if err != nil {
				return err
			}
			sess.Turns = s.bound(edit(sess.Turns))
			sess.UpdatedAt = time.Now().UTC()
			nb, err := json.Marshal(sess)
			if err != nil {
				return err
			}
			_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
				p.Set(ctx, key, nb, s.opts.TTL)
				return nil
			})
			out = sess
			return err
		}, key)
		if !errors.Is(err, redis.TxFailedErr) {
			return out, err
		}
	}
	return Session{}, fmt.Errorf("session %s: %d concurrent writes in a row; try again", id, sessionWriteRetries)
}

// bound keeps the newest turns that fit MaxTurns and MaxBytes. A single turn
// larger than MaxBytes is kept with its prompt and reply cut to half each.
func (s *SessionStore) bound(turns []Turn) []Turn {
	if len(turns) > s.opts.MaxTurns {
		turns = turns[len(turns)-s.opts.MaxTurns:]
	}
	total := 0
	for _, t := range turns {
		total += t.bytes()
	}
	for len(turns) > 1 && total > s.opts.MaxBytes {
		total -= turns[0].bytes()
		turns = turns[1:]
	}
	if len(turns) == 1 && total > s.opts.MaxBytes {
		t := turns[0]
		t.Prompt, t.Reply = cut(t.Prompt, s.opts.MaxBytes/2), cut(t.Reply, s.opts.MaxBytes/2)
		turns = []Turn{t}
	}
	return append([]Turn(nil), turns...)
}

func decodeSession(id string, b []byte) (Session, error) {
	var sess Session
	if err := json.Unmarshal(b, &sess); err != nil {
		return sess, fmt.Errorf("session %s: %w", id, err)
	}
	if sess.Turns == nil {
		sess.Turns = []Turn{}
	}
	return sess, nil
}

// ValidateSession checks what Create stores: the id, the user and the
// instructions (which must parse). Errors name the field.
func ValidateSession(sess Session) error {
	if err := pipeline.ValidateID(sess.ID); err != nil {
		return fmt.Errorf("id: %w", err)
	}
	if len(sess.User) > MaxRecordIDBytes || !utf8.ValidString(sess.User) || strings.ContainsAny(sess.User, "\x00\n") {
		return fmt.Errorf("user: at most %d bytes of UTF-8 without NUL or newline", MaxRecordIDBytes)
	}
	_, err := ParseInstructions(sess.Instructions)
	return err
}

// ValidateHistory checks turns a job carries as a session's history against
// the largest bounds a store may keep.
func ValidateHistory(turns []Turn) error {
	if len(turns) > MaxSessionTurns {
		return fmt.Errorf("history: %d turns, at most %d", len(turns), MaxSessionTurns)
	}
	total := 0
	for i, t := range turns {
		if !utf8.ValidString(t.Prompt) || !utf8.ValidString(t.Reply) {
			return fmt.Errorf("history[%d]: not UTF-8", i)
		}
		total += t.bytes()
	}
	if total > MaxSessionBytes {
		return fmt.Errorf("history: %d bytes, at most %d", total, MaxSessionBytes)
	}
	return nil
}
