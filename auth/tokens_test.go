package auth

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

const (
	submitTok = "submit-token-0123456789"
	readTok   = "read-token-0123456789ab"
	adminTok  = "admin-token-0123456789a"
)

// testTokenFile writes a file with a submit token in clear, a read token by
// digest and an admin token, and returns its path.
func testTokenFile(t *testing.T) string {
	t.Helper()
	body := "# tandem API tokens\n" +
		submitTok + " ci-bot submit\n" +
		"\n" +
		Digest(readTok) + "\tdashboard  read\n" +
		adminTok + " ops@example.com admin\n"
	p := filepath.Join(t.TempDir(), "tokens")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestParseTokensAndLookup(t *testing.T) {
	set, err := LoadTokenFile(testTokenFile(t))
	if err != nil {
		t.Fatal(err)
	}
	if set.Len() != 3 {
		t.Fatalf("Len = %d, want 3", set.Len())
	}
	for _, c := range []struct {
		tok, name string
		rights    Rights
	}{
		{submitTok, "ci-bot", RightSubmit},
		{readTok, "dashboard", RightRead},
		{adminTok, "ops@example.com", AllRights},
	} {
		p, ok := set.Lookup(c.tok)
		if !ok || p.Name != c.name || p.Rights != c.rights {
			t.Errorf("Lookup(%s) = %+v %v, want %s %v", c.name, p, ok, c.name, c.rights)
		}
	}
	for _, bad := range []string{"", "nope", Digest(readTok), strings.Repeat("x", MaxTokenLen+1), submitTok + " "} {
		if p, ok := set.Lookup(bad); ok {
			t.Errorf("Lookup(%.20q) = %+v, want no match", bad, p)
		}
	}
}

func TestParseTokensRefusals(t *testing.T) {
	long := strings.Repeat("a", MaxTokenLen+1)
	for _, c := range []struct{ name, file, want string }{
		{"two fields", "abcdefghijklmnopq ci", "t:1: 2 fields"},
		{"four fields", "abcdefghijklmnopq ci read extra", "t:1: 4 fields"},
		{"short token", "short ci read", "shorter than 16"},
		{"long token", long + " ci read", "longer than 4096"},
		{"bad right", "abcdefghijklmnopq ci write", `unknown right "write"`},
		{"empty right", "abcdefghijklmnopq ci read,", `unknown right ""`},
		{"bad name", "abcdefghijklmnopq c/i read", `name "c/i"`},
		{"duplicate", "abcdefghijklmnopq a read\n\n" + Digest("abcdefghijklmnopq") + " b read", "t:3: the same token as line 1"},
		{"oversized", strings.Repeat("#", MaxTokenFileBytes+1), "over the limit"},
	} {
		_, err := ParseTokens(strings.NewReader(c.file), "t")
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want it to contain %q", c.name, err, c.want)
		}
		if err != nil && strings.Contains(err.Error(), "abcdefghijklmnopq") {
			t.Errorf("%s: error echoes the token: %v", c.name, err)
		}
	}
}

func TestParseRights(t *testing.T) {
	for in, want := range map[string]Rights{"read": RightRead, "submit,read": RightRead | RightSubmit, " read , submit ": RightRead | RightSubmit, "admin": AllRights, "submit,read,impersonate": RightRead | RightSubmit | RightImpersonate} {
		if got, err := ParseRights(in); err != nil || got != want {
			t.Errorf("ParseRights(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	if AllRights.String() != "submit,read,impersonate,admin" || Rights(0).String() != "none" {
		t.Errorf("String: %q %q", AllRights.String(), Rights(0).String())
	}
}

func TestStoreReloadOnSIGHUP(t *testing.T) {
	path := testTokenFile(t)
	st, err := NewStore(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st.WatchSIGHUP(ctx, slog.New(slog.NewTextHandler(io.Discard, nil)))

	const newTok = "rotated-token-0123456789"
	if err := os.WriteFile(path, []byte(newTok+" ci-bot submit\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "reload after SIGHUP", func() bool { _, ok := st.Tokens().Lookup(newTok); return ok })
	if _, ok := st.Tokens().Lookup(submitTok); ok {
		t.Fatal("the old token still works after reload")
	}

	// A broken file keeps the previous tokens in force.
	if err := os.WriteFile(path, []byte("broken\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := st.Reload(); err == nil {
		t.Fatal("Reload of a broken file succeeded")
	}
	if _, ok := st.Tokens().Lookup(newTok); !ok {
		t.Fatal("a failed reload dropped the working tokens")
	}
	if err := os.WriteFile(path, []byte("# empty\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := st.Reload(); err == nil || !strings.Contains(err.Error(), "no tokens") {
		t.Fatalf("Reload of an empty file: %v", err)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestActAsBindsATokenToItsUser: a token acts as the user its name names
// unless it may impersonate; the zero Principal (no token) acts as nobody.
func TestActAsBindsATokenToItsUser(t *testing.T) {
	bob := Principal{Name: "bob", Rights: RightSubmit | RightRead}
	backend := Principal{Name: "backend", Rights: RightSubmit | RightImpersonate}
	for _, c := range []struct {
		p          Principal
		named      string
		want       string
		otherUser  bool
		ownsAlices bool
	}{
		{bob, "", "bob", false, false},
		{bob, "bob", "bob", false, false},
		{bob, "alice", "", true, false},
		{backend, "alice", "alice", false, true},
		{backend, "", "", false, true},
		{Principal{Name: "ops", Rights: AllRights}, "alice", "alice", false, true},
		{Principal{}, "", "", true, false},
	} {
		got, err := c.p.ActAs("user", c.named)
		if got != c.want || errors.Is(err, ErrOtherUser) != c.otherUser {
			t.Errorf("%+v.ActAs(%q) = %q, %v; want %q, refused %v", c.p, c.named, got, err, c.want, c.otherUser)
		}
		if err != nil && !strings.Contains(err.Error(), `field "user"`) {
			t.Errorf("%+v.ActAs(%q): %v does not name the field", c.p, c.named, err)
		}
		if c.p.Owns("alice") != c.ownsAlices {
			t.Errorf("%+v.Owns(alice) = %v", c.p, !c.ownsAlices)
		}
	}
}
