package main

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// stream, which both interactive steps use, reads the server-sent events
// of POST /v1/completions: it echoes the tokens, counts them and keeps the
// last chunk's id and usage; an error event or a stream cut before its
// last chunk is an error.
func TestDemoStreamReadsTheEventStream(t *testing.T) {
	cases := map[string]struct {
		events  []string
		wantErr string
	}{
		"complete": {events: []string{
			`{"id":"cmpl-1","choices":[{"text":"Hello"}]}`,
			`{"id":"cmpl-1","choices":[{"text":" there\n"}]}`,
			`{"id":"cmpl-1","choices":[{"text":""}],"usage":{"completion_tokens":2},"timing":{"model_first_token_ms":1.5}}`,
			`[DONE]`,
		}},
		"error event": {events: []string{
			`{"id":"cmpl-2","choices":[{"text":"Hi"}]}`,
			`{"id":"cmpl-2","error":{"code":"model_failed","message":"boom"}}`,
		}, wantErr: "generation cmpl-2: model_failed: boom"},
		"cut short": {events: []string{`{"id":"cmpl-3","choices":[{"text":"Hi"}]}`}, wantErr: "without its last chunk"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.Method != http.MethodPost || r.URL.Path != "/v1/completions" {
					http.NotFound(w, r)
					return
				}
				w.Header().Set("Content-Type", "text/event-stream")
				for _, e := range tc.events {
					fmt.Fprintf(w, "data: %s\n\n", e)
				}
			}))
			defer srv.Close()
			d := &demo{api: srv.URL}
			var echo strings.Builder
			s, err := d.stream(context.Background(), map[string]any{"model": "builtin:tiny", "prompt": "x"}, &echo)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if s.id != "cmpl-1" || s.tokens != 2 || s.usage.CompletionTokens != 2 || s.timing.ModelFirstTokenMS != 1.5 {
				t.Fatalf("stream = %+v", s)
			}
			if echo.String() != "Hello there " {
				t.Fatalf("echoed %q", echo.String())
			}
			if !strings.Contains(s.String(), "2 tokens at") {
				t.Fatalf("String() = %q", s.String())
			}
		})
	}
}
