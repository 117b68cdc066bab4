package batch

import (
	"fmt"
	"strings"
	"testing"
)

func TestPlanTakesModelAndEndpointFromTheLines(t *testing.T) {
	in := `{"custom_id":"a","url":"/v1/completions","body":{"model":"builtin:tiny","prompt":"x"}}
{"custom_id":"b","body":{"prompt":"y"}}
{"custom_id":"c","body":{"model":"builtin:small","prompt":"z"}}
{"custom_id":"d","url":"/v1/embeddings","body":{"model":"builtin:tiny","input":"z"}}
`
	p, err := PlanInput(strings.NewReader(in), Input{})
	if err != nil {
		t.Fatal(err)
	}
	if p.Model != "builtin:tiny" || len(p.Rows) != 2 || len(p.Invalid) != 2 {
		t.Fatalf("plan: model %q, %d rows, problems %v", p.Model, len(p.Rows), p.Invalid)
	}
	if got := p.Invalid[0]; got.Line != 3 || got.Code != "model_mismatch" || !strings.Contains(got.Message, "line 1") {
		t.Errorf("mixed models: %+v", got)
	}
	// Line 4 is a good embeddings line in a completions batch: the
	// endpoint check refuses it, with its line.
	if got := p.Invalid[1]; got.Line != 4 || !strings.Contains(got.Message, "url") {
		t.Errorf("other endpoint: %+v", got)
	}
	if _, err := PlanInput(strings.NewReader(`{"custom_id":"a","body":{"prompt":"x"}}`), Input{}); err == nil || !strings.Contains(err.Error(), "model") {
		t.Errorf("no model anywhere: %v", err)
	}
}

func TestCheckFileStreamsEveryProblem(t *testing.T) {
	in := `{"custom_id":"a","body":{"model":"builtin:tiny","prompt":"x"}}

{"custom_id":"b","body":{"model":"builtin:tiny"}}
{"custom_id":"c","body":{"model":"builtin:small","prompt":"z"}}
{"custom_id":"a","body":{"prompt":"z"}}
`
	rep, err := CheckFile(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	if rep.Lines != 4 || rep.Valid != 1 || rep.Invalid != 3 {
		t.Fatalf("report %+v", rep)
	}
	for i, want := range []struct {
		line  int
		field string
	}{{3, "body.prompt"}, {4, "body.model"}, {5, "custom_id"}} {
		if p := rep.Problems[i]; p.Line != want.line || !strings.Contains(p.Message, want.field) {
			t.Errorf("problem %d: %+v, want line %d naming %s", i, p, want.line, want.field)
		}
	}
	defer func(old int) { maxFileRequests = old }(maxFileRequests)
	maxFileRequests = 3
	if _, err := CheckFile(strings.NewReader(in)); err == nil || !strings.Contains(err.Error(), "line 5: more than 3 request lines") {
		t.Fatalf("too many lines: %v", err)
	}
	defer func(old int64) { maxInputBytes = old }(maxInputBytes)
	maxInputBytes = 10
	if _, err := CheckFile(strings.NewReader(in)); err != ErrInputTooLarge {
		t.Fatalf("oversized: %v", err)
	}
}

// BenchmarkCheckFile checks a batch file of MaxFileRequests lines of about 2 KB
// (some 100 MB), as an upload is checked.
func BenchmarkCheckFile(b *testing.B) {
	line := `{"custom_id":"%d","method":"POST","url":"/v1/completions","body":{"model":"builtin:tiny","max_tokens":16,"prompt":"` + strings.Repeat("a b ", 500) + `"}}` + "\n"
	var sb strings.Builder
	for i := range MaxFileRequests {
		fmt.Fprintf(&sb, line, i)
	}
	in := sb.String()
	b.SetBytes(int64(len(in)))
	b.ResetTimer()
	for range b.N {
		rep, err := CheckFile(strings.NewReader(in))
		if err != nil || rep.Invalid > 0 {
			b.Fatal(err, rep)
		}
	}
}
