package main

import (
	"bytes"
	"strings"
	"testing"
)

// A govulncheck JSON stream, shortened: one stdlib finding reached, one
// module finding reached, one module finding only imported.
const sample = `{"config":{"protocol_version":"v1.0.0","scanner_name":"govulncheck","scanner_version":"v1.9.0","db":"file:///x","db_last_modified":"2026-11-05T00:00:00Z","go_version":"go1.26.8","scan_level":"symbol"}}
{"progress":{"message":"Scanning your code..."}}
{"osv":{"id":"GO-2026-6809","summary":"TLS issue in crypto/tls"}}
{"osv":{"id":"GO-2026-0001","summary":"bad parse in example.com/m"}}
{"osv":{"id":"GO-2026-0002","summary":"unreached"}}
{"finding":{"osv":"GO-2026-6809","fixed_version":"v1.26.10","trace":[{"module":"stdlib","version":"v1.26.8","package":"crypto/tls"}]}}
{"finding":{"osv":"GO-2026-6809","fixed_version":"v1.26.10","trace":[{"module":"stdlib","version":"v1.26.8","package":"crypto/tls","function":"Handshake","receiver":"*Conn"},{"module":"github.com/hibiken/asynq","package":"github.com/hibiken/asynq","function":"NewClient"}]}}
{"finding":{"osv":"GO-2026-0001","fixed_version":"v1.2.3","trace":[{"module":"example.com/m","version":"v1.2.0","package":"example.com/m/p","function":"Parse"}]}}
{"finding":{"osv":"GO-2026-0002","fixed_version":"v0.9.0","trace":[{"module":"example.com/n","version":"v0.8.0","package":"example.com/n"}]}}
`

func TestReport(t *testing.T) {
	var out bytes.Buffer
	code, err := run(strings.NewReader(sample), &out)
	if err != nil {
		t.Fatal(err)
	}
	s := out.String()
	if code != 1 {
		t.Errorf("exit code %d, want 1 (a module vulnerability is reached)\n%s", code, s)
	}
	for _, want := range []string{
		"STDLIB  GO-2026-6809  stdlib v1.26.8, fixed in go1.26.10",
		"(reached: crypto/tls.Conn.Handshake via github.com/hibiken/asynq.NewClient)",
		"go1.26.10 or later fixes all of them",
		"MODULE  GO-2026-0001  example.com/m@v1.2.0, fixed in v1.2.3",
		"1 reachable in modules (fail), 1 reachable in the standard library (go1.26.8; report only), 1 imported",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("report lacks %q:\n%s", want, s)
		}
	}
	if strings.Contains(s, "GO-2026-0002  ") {
		t.Errorf("unreached finding listed:\n%s", s)
	}

	// Standard-library findings alone do not fail.
	stdOnly := strings.Join(strings.Split(sample, "\n")[:7], "\n")
	out.Reset()
	if code, err := run(strings.NewReader(stdOnly), &out); err != nil || code != 0 {
		t.Errorf("stdlib only: code %d err %v\n%s", code, err, out.String())
	}
	if !versionLess("v1.26.9", "v1.26.10") || versionLess("v1.26.10", "v1.26.9") {
		t.Error("versionLess compares as strings")
	}
	if _, err := run(strings.NewReader("{"), &out); err == nil {
		t.Error("truncated JSON: no error")
	}
}
