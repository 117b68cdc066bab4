package batch

import (
	"strings"
	"testing"
	"time"

	"github.com/tandem-ai/tandem/generation"
)

// FuzzPlanInput: a user's batch file and template, both untrusted.
// PlanInput must not panic or hang; every row it accepts must be a valid
// request within the prompt limit, and every problem must name a line.
func FuzzPlanInput(f *testing.F) {
	f.Add("custom_id,topic,max_tokens\na,rain,8\nb,sun,x\n", "Write about {{.topic}}:", "csv")
	f.Add(`{"custom_id":"a","topic":"t"}`+"\n"+`{"custom_id":"a","topic":"u"}`, "{{.topic}}{{range .tags}}{{.}}{{end}}", "jsonl")
	f.Add(`{"custom_id":"x","method":"POST","url":"/v1/completions","body":{"prompt":"hi","max_tokens":4}}`, "", "")
	f.Add(`{"custom_id":"x","topic":"t"}`, `{{range $i := .n}}{{$i}}{{end}}{{printf "%99999d" 1}}`, "jsonl")
	f.Add("custom_id\n\"a\nb\",c\n", "{{.custom_id}}", "csv")
	f.Add(`{"custom_id":"l","topic":"t"}`, `{{define "r"}}{{template "r" .}}{{end}}{{template "r" .}}`, "jsonl")
	f.Fuzz(func(t *testing.T, data, tmpl, format string) {
		if len(data) > 1<<16 || len(tmpl) > MaxTemplateBytes {
			return
		}
		start := time.Now()
		p, err := PlanInput(strings.NewReader(data), Input{Model: "builtin:tiny", Template: tmpl, Format: format})
		if took := time.Since(start); took > 20*time.Second {
			t.Fatalf("PlanInput took %v", took)
		}
		if err != nil {
			return
		}
		for _, row := range p.Rows {
			if row.Line < 1 {
				t.Fatalf("row with line %d", row.Line)
			}
			if row.Request.CustomID == "" || row.Request.Body.Prompt == "" {
				t.Fatalf("accepted row on line %d lacks custom_id or prompt", row.Line)
			}
			if len(row.Request.Body.Prompt) > generation.MaxPromptChars {
				t.Fatalf("accepted prompt of %d bytes on line %d", len(row.Request.Body.Prompt), row.Line)
			}
			if _, err := row.Request.Body.Params(); err != nil {
				t.Fatalf("accepted row on line %d has bad params: %v", row.Line, err)
			}
		}
		for _, pr := range p.Invalid {
			if pr.Line < 1 {
				t.Fatalf("problem without a line: %+v", pr)
			}
		}
	})
}
