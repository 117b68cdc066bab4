package auth

import (
	"net/http/httptest"
	"strings"
	"testing"
)

// FuzzParseTokens: a token file is operator input. No panic; errors carry
// the source and never echo a 16+ byte secret from the file; accepted sets
// are within MaxTokens and every token in clear looks itself up.
func FuzzParseTokens(f *testing.F) {
	f.Add("abcdefghijklmnopq ci submit,read\n" + Digest("x") + " d read\n# c\n")
	f.Add("short a read")
	f.Add("abcdefghijklmnopq a admin\nabcdefghijklmnopq b read")
	f.Add("\xff\xfeabcdefghijklmnop\x00 n read")
	f.Fuzz(func(t *testing.T, file string) {
		set, err := ParseTokens(strings.NewReader(file), "fuzz")
		if err != nil {
			if !strings.HasPrefix(err.Error(), "fuzz") {
				t.Fatalf("error lacks the source: %v", err)
			}
			return
		}
		if set.Len() > MaxTokens {
			t.Fatalf("%d tokens", set.Len())
		}
		for _, line := range strings.Split(file, "\n") {
			fl := strings.Fields(line)
			if len(fl) != 3 || strings.HasPrefix(fl[0], "#") || len(fl[0]) == 64 && isHex(fl[0]) {
				continue
			}
			if p, ok := set.Lookup(fl[0]); !ok || p.Name != fl[1] {
				t.Fatalf("token of line %q does not look up (%+v, %v)", line, p, ok)
			}
		}
	})
}

// FuzzAuthorizationHeader: any Authorization header. No panic, and no
// header but one carrying the real token authenticates.
func FuzzAuthorizationHeader(f *testing.F) {
	for _, s := range []string{"Bearer " + readTok, "Basic Og==", "Basic !!!", "Bearer", "bearer  x", "Basic " + strings.Repeat("A", 8000), "Negotiate abc"} {
		f.Add(s)
	}
	set, err := ParseTokens(strings.NewReader(readTok+" dashboard read\n"), "t")
	if err != nil {
		f.Fatal(err)
	}
	a := &Authenticator{store: &Store{}, realm: "tandem", logger: discardLogger()}
	a.store.set.Store(set)
	f.Fuzz(func(t *testing.T, header string) {
		req := httptest.NewRequest("GET", "/v1/queues", nil)
		req.Header["Authorization"] = []string{header}
		rec := httptest.NewRecorder()
		p, ok := a.authenticate(rec, req, false)
		if ok && (p.Name != "dashboard" || !strings.Contains(header, readTok) && !strings.HasPrefix(strings.ToLower(header), "basic")) {
			t.Fatalf("header %q authenticated as %+v", header, p)
		}
		if !ok && rec.Code != 401 {
			t.Fatalf("refusal with status %d", rec.Code)
		}
	})
}
