package auth

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"sync/atomic"
	"syscall"

	"github.com/tandem-ai/tandem/limits"
)

// Limits on token files and presented tokens.
const (
	// MaxTokenFileBytes bounds the token file.
	MaxTokenFileBytes = limits.TokenFileBytes
	// MaxTokens bounds the number of tokens in a file (each request compares
	// against all of them).
	MaxTokens = limits.Tokens
	// MinTokenLen is the shortest token accepted in a file in clear: shorter
	// secrets are guessable.
	MinTokenLen = limits.MinTokenLen
	// MaxTokenLen bounds a token, in a file or in a request.
	MaxTokenLen = limits.TokenLen
	// MaxNameLen bounds a token's name.
	MaxNameLen = limits.TokenNameLen
)

// Rights is a set of permissions.
type Rights uint8

// The rights a token can carry.
const (
	// RightRead allows GET routes: job and batch status, queues, kinds, and
	// the monitoring UI read-only.
	RightRead Rights = 1 << iota
	// RightSubmit allows creating and cancelling jobs and batches.
	RightSubmit
	// RightAdmin allows everything, including the monitoring UI's actions
	// (delete, retry, pause queues).
	RightAdmin
	// RightImpersonate lets a token act for any user: name another user
	// in generations, sessions and feedback, and read their generations,
	// sessions and recommendations (a backend serving many end users).
	// Without it a token acts as the user its name names (ActAs).
	RightImpersonate

	// AllRights is what an admin token, and an open Authenticator, grants.
	AllRights = RightRead | RightSubmit | RightAdmin | RightImpersonate
)

var rightNames = []struct {
	r    Rights
	name string
}{{RightSubmit, "submit"}, {RightRead, "read"}, {RightImpersonate, "impersonate"}, {RightAdmin, "admin"}}

// ParseRights parses "submit,read". admin implies every other right.
func ParseRights(s string) (Rights, error) {
	var r Rights
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		found := false
		for _, rn := range rightNames {
			if part == rn.name {
				r |= rn.r
				found = true
			}
		}
		if !found {
			return 0, fmt.Errorf("unknown right %q; want submit, read, impersonate or admin", part)
		}
	}
	if r&RightAdmin != 0 {
		r = AllRights
	}
	return r, nil
}

// Has reports whether r includes every right of want.
func (r Rights) Has(want Rights) bool { return r&want == want }

// String lists the rights, comma-separated.
func (r Rights) String() string {
	var names []string
	for _, rn := range rightNames {
		if r&rn.r != 0 {
			names = append(names, rn.name)
		}
	}
	if len(names) == 0 {
		return "none"
	}
	return strings.Join(names, ",")
}

// Principal is who a request authenticated as. Name is also the user
// the token acts as, unless it has RightImpersonate.
type Principal struct {
	Name   string
	Rights Rights
}

// ErrOtherUser is ActAs refusing a user other than the token's own.
var ErrOtherUser = errors.New("another user")

// ActAs returns the user a request by p acts as when it names user (""
// when it names none). A token with RightImpersonate acts as whoever it
// names, "" included; any other acts as its own name: user "" becomes
// p.Name, and another user is ErrOtherUser naming field.
func (p Principal) ActAs(field, user string) (string, error) {
	switch {
	case p.Rights.Has(RightImpersonate):
		return user, nil
	case p.Name == "":
		return "", fmt.Errorf("%w: field %q: the request carries no token", ErrOtherUser, field)
	case user == "" || user == p.Name:
		return p.Name, nil
	}
	return "", fmt.Errorf("%w: field %q: token %s acts only as user %q, not %.64q (acting for other users needs the impersonate right)", ErrOtherUser, field, p.Name, p.Name, user)
}

// Owns reports whether p may see and act on what belongs to user: its own
// user's, or anyone's with RightImpersonate.
func (p Principal) Owns(user string) bool {
	return p.Rights.Has(RightImpersonate) || p.Name != "" && user == p.Name
}

type tokenEntry struct {
	digest    [sha256.Size]byte
	principal Principal
}

// TokenSet is a parsed token file. It is immutable and safe for concurrent use.
type TokenSet struct {
	entries []tokenEntry
}

// Len is the number of tokens.
func (s *TokenSet) Len() int { return len(s.entries) }

// Lookup returns the principal whose token is token. Every entry is
// compared, in constant time per entry, whether or not one matched before.
func (s *TokenSet) Lookup(token string) (Principal, bool) {
	if s == nil || token == "" || len(token) > MaxTokenLen {
		return Principal{}, false
	}
	d := sha256.Sum256([]byte(token))
	match := -1
	for i := range s.entries {
		if subtle.ConstantTimeCompare(d[:], s.entries[i].digest[:]) == 1 {
			match = i
		}
	}
	if match < 0 {
		return Principal{}, false
	}
	return s.entries[match].principal, true
}

// Digest returns the hex SHA-256 digest of token, the form to put in a
// token file instead of the token.
func Digest(token string) string {
	d := sha256.Sum256([]byte(token))
	return hex.EncodeToString(d[:])
}

// ParseTokens reads a token file from r; source names it in errors, which
// give the line and never echo a token.
func ParseTokens(r io.Reader, source string) (*TokenSet, error) {
	data, err := io.ReadAll(io.LimitReader(r, MaxTokenFileBytes+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", source, err)
	}
	if len(data) > MaxTokenFileBytes {
		return nil, fmt.Errorf("%s: over the limit of %d bytes", source, MaxTokenFileBytes)
	}
	set := &TokenSet{}
	seen := map[[sha256.Size]byte]int{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 64<<10), MaxTokenFileBytes)
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		e, err := parseTokenLine(text)
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %w", source, line, err)
		}
		if first, dup := seen[e.digest]; dup {
			return nil, fmt.Errorf("%s:%d: the same token as line %d", source, line, first)
		}
		seen[e.digest] = line
		if len(set.entries) >= MaxTokens {
			return nil, fmt.Errorf("%s:%d: more than %d tokens", source, line, MaxTokens)
		}
		set.entries = append(set.entries, e)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", source, err)
	}
	return set, nil
}

func parseTokenLine(text string) (tokenEntry, error) {
	var e tokenEntry
	f := strings.Fields(text)
	if len(f) != 3 {
		return e, fmt.Errorf("%d fields; want <token or sha256 hex> <name> <rights>", len(f))
	}
	secret, name, rights := f[0], f[1], f[2]
	if len(secret) == 2*sha256.Size && isHex(secret) {
		if _, err := hex.Decode(e.digest[:], []byte(strings.ToLower(secret))); err != nil {
			return e, fmt.Errorf("digest: %w", err)
		}
	} else {
		if len(secret) < MinTokenLen {
			return e, fmt.Errorf("token: %d bytes, shorter than %d (or give its 64-digit sha256 hex)", len(secret), MinTokenLen)
		}
		if len(secret) > MaxTokenLen {
			return e, fmt.Errorf("token: longer than %d bytes", MaxTokenLen)
		}
		e.digest = sha256.Sum256([]byte(secret))
	}
	if err := validateName(name); err != nil {
		return e, err
	}
	r, err := ParseRights(rights)
	if err != nil {
		return e, fmt.Errorf("rights: %w", err)
	}
	e.principal = Principal{Name: name, Rights: r}
	return e, nil
}

func isHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
			return false
		}
	}
	return true
}

func validateName(name string) error {
	if len(name) > MaxNameLen {
		return fmt.Errorf("name: longer than %d bytes", MaxNameLen)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("._-@", c) >= 0) {
			return fmt.Errorf("name %q: character %q; use letters, digits . _ - @", name, c)
		}
	}
	return nil
}

// LoadTokenFile parses the token file at path.
func LoadTokenFile(path string) (*TokenSet, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("token file: %w", err)
	}
	defer f.Close()
	return ParseTokens(f, path)
}

// Store holds the current TokenSet of a file and swaps it on Reload.
type Store struct {
	path string
	set  atomic.Pointer[TokenSet]
}

// NewStore loads path.
func NewStore(path string) (*Store, error) {
	s := &Store{path: path}
	if err := s.Reload(); err != nil {
		return nil, err
	}
	return s, nil
}

// Tokens returns the current set.
func (s *Store) Tokens() *TokenSet { return s.set.Load() }

// Reload reads the file again. On error the previous set stays in force.
func (s *Store) Reload() error {
	set, err := LoadTokenFile(s.path)
	if err != nil {
		return err
	}
	if set.Len() == 0 {
		return errors.New("token file " + s.path + " holds no tokens; every request would be refused")
	}
	s.set.Store(set)
	return nil
}

// WatchSIGHUP reloads the file on every SIGHUP until ctx ends.
func (s *Store) WatchSIGHUP(ctx context.Context, logger *slog.Logger) {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGHUP)
	go func() {
		defer signal.Stop(ch)
		for {
			select {
			case <-ctx.Done():
				return
			case <-ch:
				if err := s.Reload(); err != nil {
					logger.Error("api tokens: reload failed; keeping the previous tokens", "err", err)
					continue
				}
				logger.Info("api tokens: reloaded", "file", s.path, "tokens", s.Tokens().Len())
			}
		}
	}()
}
