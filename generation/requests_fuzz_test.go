package generation

import (
	"bytes"
	"strings"
	"testing"

	"github.com/tandem-ai/tandem/model"
)

var requestSeeds = []string{
	`{"custom_id":"a1","method":"POST","url":"/v1/completions","body":{"prompt":"Hello","max_tokens":32,"temperature":0.7}}`,
	`{"custom_id":"a2","body":{"prompt":"x","top_p":0.9,"top_k":40,"min_p":0.05,"presence_penalty":1,"frequency_penalty":-1,"repetition_penalty":1.2,"seed":7,"stop":["\n","END"],"n":2,"logprobs":3}}`,
	`{"custom_id":"a3","body":{"prompt":"x","stop":"."}}`,
	`{"custom_id":"","body":{"prompt":"x"}}`,
	`{"custom_id":"a","method":"GET","body":{"prompt":"x"}}`,
	`{"custom_id":"a","url":"/v1/chat/completions","body":{"prompt":"x"}}`,
	`{"custom_id":"a","body":{"prompt":"x","temprature":1}}`,
	`{"custom_id":"a","body":{"prompt":"x","max_tokens":-1}}`,
	`{"custom_id":"a","body":{"prompt":"x","stop":5}}`,
	`{"custom_id":"a","body":{"prompt":"x"}} trailing`,
	`{"custom_id":"a","body":{"prompt":"x","n":1e9}}`,
	`{"custom_id":"e1","url":"/v1/embeddings","body":{"input":["a","b"],"encoding_format":"base64"}}`,
	`{"custom_id":"e2","url":"/v1/embeddings","body":{"input":[[1,2],[3]],"dimensions":64}}`,
	`{"custom_id":"e3","url":"/v1/embeddings","body":{"input":[1,"b"]}}`,
	`{"custom_id":"e4","url":"/v1/embeddings","body":{"prompt":"x"}}`,
	`{`, ``, `null`, `[]`,
}

// FuzzParseRequestLine: one line of a batch file from a user. It must not
// panic; a refusal is a *LineError naming the line; an accepted line obeys
// every limit and its sampling parameters validate.
func FuzzParseRequestLine(f *testing.F) {
	for _, s := range requestSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		r, err := ParseRequestLine(raw, 42)
		if err != nil {
			le, ok := err.(*LineError)
			if !ok {
				t.Fatalf("error is %T, want *LineError: %v", err, err)
			}
			if le.Line != 42 || le.Code == "" || le.Message == "" {
				t.Fatalf("line error lacks line, code or message: %+v", le)
			}
			return
		}
		checkAcceptedRequest(t, r)
	})
}

func checkAcceptedRequest(t *testing.T, r RequestLine) {
	t.Helper()
	if strings.TrimSpace(r.CustomID) == "" || len(r.CustomID) > 512 {
		t.Fatalf("accepted custom_id %q", r.CustomID)
	}
	if r.Embeddings != nil {
		if r.URL != EmbeddingsURL || r.Body.Prompt != "" || r.Embeddings.Validate() != nil {
			t.Fatalf("accepted an embeddings line with url %q, a prompt or a bad body: %+v", r.URL, r.Embeddings)
		}
		return
	}
	switch {
	case r.Body.Prompt == "" || len(r.Body.Prompt) > MaxPromptChars:
		t.Fatalf("accepted a prompt of %d bytes", len(r.Body.Prompt))
	case r.Method != "" && r.Method != "POST", r.URL != "" && r.URL != CompletionsURL:
		t.Fatalf("accepted method %q url %q", r.Method, r.URL)
	}
	p, err := r.Body.Params()
	if err != nil {
		t.Fatalf("accepted line has bad params: %v", err)
	}
	if p.MaxTokens > model.MaxTokensLimit || p.N > model.MaxChoices || len(p.Stop) > model.MaxStopSequences || p.Logprobs > model.MaxLogprobs {
		t.Fatalf("accepted params beyond the limits: %+v", p)
	}
}

// FuzzReadRequestLines: a whole batch file. Every non-blank line yields one
// InputLine, in order, each good or with its error; custom_ids of good lines
// are unique; maxLines is honoured.
func FuzzReadRequestLines(f *testing.F) {
	f.Add([]byte(strings.Join(requestSeeds, "\n")), uint8(0))
	f.Add([]byte(requestSeeds[0]+"\n"+requestSeeds[0]+"\n\n  \r\n"+requestSeeds[1]), uint8(2))
	f.Add([]byte("\n\n\n"), uint8(1))
	f.Add([]byte(requestSeeds[0]+"\r\n"+requestSeeds[2]+"\r\n"), uint8(1))
	f.Fuzz(func(t *testing.T, data []byte, maxLines uint8) {
		lines, err := ReadRequestLines(bytes.NewReader(data), int(maxLines))
		if maxLines > 0 && len(lines) > int(maxLines) {
			t.Fatalf("%d lines returned with maxLines %d", len(lines), maxLines)
		}
		if err != nil && (maxLines == 0 || !strings.Contains(err.Error(), "more than")) {
			t.Fatalf("unexpected error from an in-memory reader: %v", err)
		}
		if len(lines) > bytes.Count(data, []byte("\n"))+1 {
			t.Fatalf("%d lines from %d newlines", len(lines), bytes.Count(data, []byte("\n")))
		}
		seen := map[string]bool{}
		prev := 0
		for _, il := range lines {
			if il.LineNo <= prev {
				t.Fatalf("line numbers out of order: %d after %d", il.LineNo, prev)
			}
			prev = il.LineNo
			if il.Err != nil {
				if il.Err.Line != il.LineNo {
					t.Fatalf("error line %d on input line %d", il.Err.Line, il.LineNo)
				}
				continue
			}
			checkAcceptedRequest(t, il.Request)
			if seen[il.Request.CustomID] {
				t.Fatalf("custom_id %q accepted twice", il.Request.CustomID)
			}
			seen[il.Request.CustomID] = true
		}
	})
}

// TestReadRequestLinesLongLine checks the per-line bound, which fuzz inputs
// do not reach: the long line is refused, the next one still parses.
func TestReadRequestLinesLongLine(t *testing.T) {
	long := `{"custom_id":"big","body":{"prompt":"` + strings.Repeat("x", MaxLineBytes) + `"}}`
	lines, err := ReadRequestLines(strings.NewReader(long+"\n"+requestSeeds[0]+"\n"), 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(lines) != 2 || lines[0].Err == nil || lines[0].Err.Code != "line_too_long" || lines[1].Err != nil {
		t.Fatalf("got %+v", lines)
	}
}
