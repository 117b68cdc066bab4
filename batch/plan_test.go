package batch

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/tandem-ai/tandem/generation"
)

func problemLines(ps []Problem) map[int]string {
	m := map[int]string{}
	for _, p := range ps {
		m[p.Line] = p.Code + ": " + p.Message
	}
	return m
}

func TestPlanOpenAIReportsEveryProblem(t *testing.T) {
	long := `{"custom_id":"long","body":{"prompt":"` + strings.Repeat("x", generation.MaxLineBytes) + `"}}`
	in := strings.Join([]string{
		`{"custom_id":"a","method":"POST","url":"/v1/completions","body":{"prompt":"hi","max_tokens":4}}`, // 1 ok
		`{"custom_id":"b","body":{"prompt":"hi"`,                                                          // 2 malformed
		`{"body":{"prompt":"hi"}}`,                                                                        // 3 no custom_id
		`{"custom_id":"a","body":{"prompt":"again"}}`,                                                     // 4 duplicate
		`{"custom_id":"c","body":{"prompt":"hi","temperature":9}}`,                                        // 5 bad parameter
		long, // 6 too long
		``,   // 7 blank: skipped
		`{"custom_id":"d","body":{"prompt":"hi","model":"other"}}`,              // 8 model mismatch
		`{"custom_id":"e","body":{"prompt":""}}`,                                // 9 empty prompt
		`{"custom_id":"f","body":{"prompt":"ok","stop":["\n"],"seed":3,"n":2}}`, // 10 ok
		`{"custom_id":"g","body":{"prompt":"hi","temprature":1}}`,               // 11 unknown field
	}, "\n")
	p, err := PlanInput(strings.NewReader(in), Input{Model: "builtin:tiny"})
	if err != nil {
		t.Fatal(err)
	}
	if p.Report.Lines != 10 || p.Report.Valid != 2 || p.Report.Invalid != 8 {
		t.Fatalf("report = %+v", p.Report)
	}
	got := problemLines(p.Report.Problems)
	want := map[int]string{2: "invalid_json", 3: "custom_id", 4: "duplicate_custom_id", 5: "temperature", 6: "line_too_long", 8: "model_mismatch", 9: "body.prompt", 11: "temprature"}
	for line, frag := range want {
		if !strings.Contains(got[line], frag) {
			t.Errorf("line %d: got %q; want it to mention %q", line, got[line], frag)
		}
	}
	if len(got) != len(want) {
		t.Errorf("problems on lines %v; want exactly %v", got, want)
	}
	if p.Rows[0].Line != 1 || p.Rows[1].Line != 10 || p.Rows[1].Request.CustomID != "f" {
		t.Fatalf("rows = %+v", p.Rows)
	}
	verr := &ValidationError{Report: p.Report}
	for line := range want {
		if !strings.Contains(verr.Error(), fmt.Sprintf("line %d:", line)) {
			t.Errorf("validation error text misses line %d:\n%s", line, verr)
		}
	}
}

func TestPlanTemplateJSONL(t *testing.T) {
	tmpl := "Write a {{.style}} about {{.topic}}:"
	in := strings.Join([]string{
		`{"custom_id":"r1","topic":"rain","style":"haiku","max_tokens":8,"temperature":0.5,"seed":1,"stop":["\n"]}`, // 1 ok
		`{"custom_id":"r2","topic":"sun"}`,                               // 2 missing style
		`{"topic":"x","style":"y"}`,                                      // 3 no custom_id
		`{"custom_id":"r1","topic":"again","style":"s"}`,                 // 4 duplicate
		`{"custom_id":"r5","topic":"t","style":"s","temperature":"hot"}`, // 5 wrong type
		`{"custom_id":"r6","topic":"t","style":"s","max_tokens":-1}`,     // 6 out of range
		`not json`, // 7
		`{"custom_id":7,"topic":"t","style":"s"}`,     // 8 custom_id not a string
		`{"custom_id":"r9","topic":3,"style":"s"}`,    // 9 topic not a string
		`{"custom_id":"r10","topic":"t","style":"s"}`, // 10 ok
	}, "\n")
	p, err := PlanInput(strings.NewReader(in), Input{Model: "builtin:tiny", Template: tmpl})
	if err != nil {
		t.Fatal(err)
	}
	got := problemLines(p.Invalid)
	want := map[int]string{2: "style", 3: "custom_id", 4: "duplicate_custom_id", 5: "temperature", 6: "max_tokens", 7: "invalid_json", 8: "custom_id", 9: "topic"}
	for line, frag := range want {
		if !strings.Contains(got[line], frag) {
			t.Errorf("line %d: got %q; want it to mention %q", line, got[line], frag)
		}
	}
	if len(got) != len(want) || len(p.Rows) != 2 {
		t.Fatalf("problems %v, rows %d", got, len(p.Rows))
	}
	r := p.Rows[0].Request
	if r.Body.Prompt != "Write a haiku about rain:" || *r.Body.MaxTokens != 8 || *r.Body.Temperature != 0.5 || *r.Body.Seed != 1 || r.Body.Stop[0] != "\n" {
		t.Fatalf("row 1 = %+v", r)
	}
	if p.Kind != InputTemplate {
		t.Fatalf("kind %q", p.Kind)
	}
}

func TestPlanTemplateCSV(t *testing.T) {
	tmpl := "{{.topic}} in the style of {{.style}}"
	in := "custom_id,topic,style,max_tokens,temperature,stop\n" +
		"c1,rain,haiku,8,0.7,\n" + // 2 ok
		"c2,\"a\nmulti-line topic\",prose,,,\"[\"\"\\n\"\"]\"\n" + // 3-4 ok (quoted newline)
		"c3,x,y,many,,\n" + // 5 bad int
		"c4,x\n" + // 6 field count
		",x,y,,,\n" + // 7 empty custom_id
		"c6," + strings.Repeat("z", generation.MaxLineBytes+10) + ",y,,,\n" + // 8 too long
		"c7,x,y,4,0.2,END\n" // 9 ok
	p, err := PlanInput(strings.NewReader(in), Input{Model: "builtin:tiny", Template: tmpl, Format: FormatCSV})
	if err != nil {
		t.Fatal(err)
	}
	got := problemLines(p.Invalid)
	want := map[int]string{5: "max_tokens", 6: "fields", 7: "custom_id", 8: "line_too_long"}
	for line, frag := range want {
		if !strings.Contains(got[line], frag) {
			t.Errorf("line %d: got %q; want it to mention %q", line, got[line], frag)
		}
	}
	if len(got) != len(want) || len(p.Rows) != 3 {
		t.Fatalf("problems %v, rows %+v", got, p.Rows)
	}
	if r := p.Rows[1]; r.Line != 3 || r.Request.Body.Prompt != "a\nmulti-line topic in the style of prose" || r.Request.Body.Stop[0] != "\n" {
		t.Fatalf("row 2 = %+v", r)
	}
	if r := p.Rows[2]; r.Line != 9 || r.Request.Body.Stop[0] != "END" || *r.Request.Body.MaxTokens != 4 {
		t.Fatalf("row 3 = %+v", r)
	}
}

func TestPlanHardErrors(t *testing.T) {
	cases := []struct {
		name, input string
		in          Input
	}{
		{"bad model", `{"custom_id":"a","body":{"prompt":"x"}}`, Input{Model: "builtin:huge"}},
		{"no lines", "\n\n", Input{Model: "builtin:tiny"}},
		{"bad template", `{"custom_id":"a"}`, Input{Model: "builtin:tiny", Template: "{{.x"}},
		{"csv without custom_id", "topic\nx\n", Input{Model: "builtin:tiny", Template: "{{.topic}}", Format: FormatCSV}},
		{"csv duplicate column", "custom_id,a,a\nx,1,2\n", Input{Model: "builtin:tiny", Template: "{{.a}}", Format: FormatCSV}},
		{"csv for openai", "x", Input{Model: "builtin:tiny", Format: FormatCSV}},
		{"unknown format", "x", Input{Model: "builtin:tiny", Template: "x", Format: "xml"}},
	}
	for _, c := range cases {
		if _, err := PlanInput(strings.NewReader(c.input), c.in); err == nil {
			t.Errorf("%s: accepted", c.name)
		}
	}
	line := `{"custom_id":"%d","body":{"prompt":"` + strings.Repeat("y", 8000) + `"}}` + "\n"
	defer func(old int64) { maxInputBytes = old }(maxInputBytes)
	maxInputBytes = 1 << 20
	_, err := PlanInput(&lineGen{format: line}, Input{Model: "builtin:tiny"})
	if err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Fatalf("oversized input: %v", err)
	}
	var verr *ValidationError
	if errors.As(err, &verr) {
		t.Fatal("an oversized input is not a per-line problem")
	}
}

// lineGen produces numbered lines without end, without holding them.
type lineGen struct {
	format string
	n      int
	buf    []byte
}

func (g *lineGen) Read(p []byte) (int, error) {
	if len(g.buf) == 0 {
		g.n++
		g.buf = fmt.Appendf(nil, g.format, g.n)
	}
	n := copy(p, g.buf)
	g.buf = g.buf[n:]
	return n, nil
}

// Ids that are not valid UTF-8 (a raw invalid byte, a lone surrogate
// escape) are refused with their line, in every input format: decoding
// them would turn them into U+FFFD silently, and two different ids into
// one duplicate (issue 22). A real U+FFFD, written or escaped, and an
// escaped surrogate pair are fine.
func TestPlanRefusesIDsThatAreNotUTF8(t *testing.T) {
	openai := strings.Join([]string{
		`{"custom_id":"id-` + "\xff" + `","body":{"prompt":"hi"}}`,     // 1 invalid byte
		`{"custom_id":"id-` + "\xfe" + `","body":{"prompt":"hi"}}`,     // 2 another: no duplicate of 1
		`{"custom_id":"id-\ud800","body":{"prompt":"hi"}}`,             // 3 lone high surrogate
		`{"custom_id":"id-\udc00x","body":{"prompt":"hi"}}`,            // 4 lone low surrogate
		`{"custom_id":"ok-\ufffd","body":{"prompt":"hi"}}`,             // 5 an escaped U+FFFD
		`{"custom_id":"ok2-` + "\ufffd" + `","body":{"prompt":"hi"}}`,  // 6 a written one
		`{"custom_id":"ok-\ud83d\ude00\ufffd","body":{"prompt":"hi"}}`, // 7 a pair, then U+FFFD
	}, "\n")
	jsonRows := strings.ReplaceAll(openai, `"body":{"prompt":"hi"}`, `"topic":"t"`)
	csvRows := "custom_id,topic\nid-\xff,t\nid-\xfe,t\nok,t\n"
	for _, c := range []struct {
		name  string
		input string
		in    Input
		bad   []int
		valid int
	}{
		{"openai", openai, Input{Model: "builtin:tiny"}, []int{1, 2, 3, 4}, 3},
		{"template jsonl", jsonRows, Input{Model: "builtin:tiny", Template: "about {{.topic}}"}, []int{1, 2, 3, 4}, 3},
		{"template csv", csvRows, Input{Model: "builtin:tiny", Template: "about {{.topic}}", Format: FormatCSV}, []int{2, 3}, 1},
	} {
		t.Run(c.name, func(t *testing.T) {
			p, err := PlanInput(strings.NewReader(c.input), c.in)
			if err != nil {
				t.Fatal(err)
			}
			got := problemLines(p.Report.Problems)
			for _, line := range c.bad {
				if !strings.Contains(got[line], "custom_id: not valid UTF-8") {
					t.Errorf("line %d: %q; want custom_id refused as not valid UTF-8", line, got[line])
				}
			}
			if len(got) != len(c.bad) || p.Report.Valid != c.valid {
				t.Errorf("problems %v, %d valid; want problems on lines %v only, %d valid", got, p.Report.Valid, c.bad, c.valid)
			}
		})
	}
}
