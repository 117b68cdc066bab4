package batch

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"

	"github.com/tandem-ai/tandem/generation"
	"github.com/tandem-ai/tandem/limits"
)

// Input limits, checked before anything is enqueued.
const (
	// MaxInputBytes bounds an input file (the OpenAI Batch API's limit).
	MaxInputBytes = limits.BatchInputBytes
	// MaxRows bounds the request lines of one batch.
	MaxRows = limits.BatchRows
	// MaxReportedProblems bounds the problems a Report lists; the rest are
	// counted in Report.Unlisted.
	MaxReportedProblems = limits.BatchReportedProblems
)

// Row formats of template input.
const (
	FormatJSONL = "jsonl"
	FormatCSV   = "csv"
)

// Problem is one thing wrong with an input line, or with the batch.
type Problem struct {
	Line     int    `json:"line,omitempty"`
	Code     string `json:"code"`
	Message  string `json:"message"`
	CustomID string `json:"custom_id,omitempty"`
}

func (p Problem) String() string {
	if p.Line > 0 {
		return fmt.Sprintf("line %d: %s: %s", p.Line, p.Code, p.Message)
	}
	return p.Code + ": " + p.Message
}

// Report sums up the validation of an input.
type Report struct {
	Lines    int       `json:"lines"` // request lines read (blank lines are not counted)
	Valid    int       `json:"valid"`
	Invalid  int       `json:"invalid"`
	Problems []Problem `json:"problems,omitempty"` // in line order, at most MaxReportedProblems
	Unlisted int       `json:"problems_unlisted,omitempty"`
}

// ValidationError is returned when an input has invalid lines and the
// caller did not ask to skip them: nothing was enqueued.
type ValidationError struct{ Report Report }

// Unwrap makes errors.Is(err, ErrInvalid) hold.
func (e *ValidationError) Unwrap() error { return ErrInvalid }

func (e *ValidationError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "input: %d of %d lines are invalid; nothing was enqueued (--skip-invalid runs the valid ones):", e.Report.Invalid, e.Report.Lines)
	for _, p := range e.Report.Problems {
		b.WriteString("\n  ")
		b.WriteString(p.String())
	}
	if e.Report.Unlisted > 0 {
		fmt.Fprintf(&b, "\n  ... and %d more", e.Report.Unlisted)
	}
	return b.String()
}

// Row is one valid request with its input line.
type Row struct {
	Line    int                    `json:"line"`
	Request generation.RequestLine `json:"request"`
}

// Input says how to read a batch input.
type Input struct {
	// Model is the batch's model; request lines that name another are
	// invalid.
	Model string
	// Template is a text/template source; empty means the input is OpenAI
	// Batch JSONL.
	Template string
	// Format is the template rows' format, FormatJSONL (default) or
	// FormatCSV.
	Format string
}

// Plan is a validated input.
type Plan struct {
	Kind    string    // InputOpenAI or InputTemplate
	Rows    []Row     // valid rows, in line order
	Invalid []Problem // every invalid line, in line order
	Report  Report
}

// PlanInput reads and validates a whole input. Line-level problems
// (malformed JSON, missing fields, bad parameters, duplicate custom_id,
// lines over generation.MaxLineBytes, template errors) are collected, every one
// with its line, into the Plan; errors that stop reading (input too large,
// too many lines, a template that does not parse, a CSV header without
// custom_id) come back as the error.
func PlanInput(r io.Reader, in Input) (*Plan, error) {
	if err := generation.ValidateModelName(in.Model); err != nil {
		return nil, err
	}
	lr := &limitReader{r: r, left: maxInputBytes}
	var p *Plan
	var err error
	if in.Template == "" {
		if in.Format != "" && in.Format != FormatJSONL {
			return nil, fmt.Errorf("format %q: OpenAI Batch input is JSONL; CSV rows need a template", in.Format)
		}
		p, err = planOpenAI(lr, in.Model)
	} else {
		p, err = planTemplate(lr, in)
	}
	if lr.over {
		return nil, ErrInputTooLarge
	}
	if err != nil {
		return nil, err
	}
	p.Report.Valid, p.Report.Invalid = len(p.Rows), len(p.Invalid)
	p.Report.Lines = p.Report.Valid + p.Report.Invalid
	for i, prob := range p.Invalid {
		if i == MaxReportedProblems {
			p.Report.Unlisted = len(p.Invalid) - i
			break
		}
		p.Report.Problems = append(p.Report.Problems, prob)
	}
	if p.Report.Lines == 0 {
		return nil, errors.New("input: no request lines")
	}
	return p, nil
}

func planOpenAI(r io.Reader, model string) (*Plan, error) {
	lines, err := generation.ReadRequestLines(r, MaxRows)
	if err != nil {
		return nil, fmt.Errorf("input: %w", err)
	}
	p := &Plan{Kind: InputOpenAI}
	for _, il := range lines {
		switch {
		case il.Err != nil:
			p.Invalid = append(p.Invalid, Problem{Line: il.LineNo, Code: il.Err.Code, Message: il.Err.Message, CustomID: il.Request.CustomID})
		case il.Request.Model() != "" && il.Request.Model() != model:
			p.Invalid = append(p.Invalid, Problem{Line: il.LineNo, Code: "model_mismatch", CustomID: il.Request.CustomID,
				Message: fmt.Sprintf("body.model: %q differs from the batch's model %q", il.Request.Model(), model)})
		default:
			p.Rows = append(p.Rows, Row{Line: il.LineNo, Request: il.Request})
		}
	}
	return p, nil
}

func planTemplate(r io.Reader, in Input) (*Plan, error) {
	tmpl, err := ParseTemplate("template", in.Template)
	if err != nil {
		return nil, err
	}
	p := &Plan{Kind: InputTemplate}
	seen := map[string]int{}
	visit := func(line int, row map[string]any, prob *Problem) error {
		if len(p.Rows)+len(p.Invalid) >= MaxRows {
			return fmt.Errorf("input: line %d: more than %d rows", line, MaxRows)
		}
		if prob == nil {
			var req generation.RequestLine
			req, prob = renderRow(tmpl, line, row)
			if prob == nil {
				if first, dup := seen[req.CustomID]; dup {
					prob = &Problem{Line: line, Code: "duplicate_custom_id", CustomID: req.CustomID,
						Message: fmt.Sprintf("custom_id %q already used on line %d", req.CustomID, first)}
				} else {
					seen[req.CustomID] = line
					p.Rows = append(p.Rows, Row{Line: line, Request: req})
					return nil
				}
			}
		}
		p.Invalid = append(p.Invalid, *prob)
		return nil
	}
	switch in.Format {
	case "", FormatJSONL:
		err = readJSONLRows(r, visit)
	case FormatCSV:
		err = readCSVRows(r, visit)
	default:
		return nil, fmt.Errorf("format %q: want %s or %s", in.Format, FormatJSONL, FormatCSV)
	}
	if err != nil {
		return nil, err
	}
	return p, nil
}

// renderRow turns a template row into a request line, checked exactly as an
// OpenAI Batch line is.
func renderRow(tmpl *Template, line int, row map[string]any) (generation.RequestLine, *Problem) {
	bad := func(code, msg string) (generation.RequestLine, *Problem) {
		p := &Problem{Line: line, Code: code, Message: msg}
		if id, ok := row["custom_id"].(string); ok {
			p.CustomID = id
		}
		return generation.RequestLine{}, p
	}
	id, ok := row["custom_id"].(string)
	switch {
	case row["custom_id"] == nil:
		return bad("invalid_request", "custom_id: required")
	case !ok:
		return bad("invalid_request", "custom_id: want a string")
	case strings.TrimSpace(id) == "":
		return bad("invalid_request", "custom_id: required")
	case !utf8.ValidString(id): // a CSV field keeps its bytes as they were
		return bad("invalid_request", "custom_id: not valid UTF-8 (an invalid byte)")
	}
	if t, ok := row["topic"]; ok {
		if _, isStr := t.(string); !isStr {
			return bad("invalid_request", "topic: want a string")
		}
	}
	body, err := rowParams(row)
	if err != nil {
		return bad("invalid_request", err.Error())
	}
	prompt, err := tmpl.Render(row)
	if err != nil {
		return bad("template_error", err.Error())
	}
	body.Prompt = prompt
	req := generation.RequestLine{CustomID: id, Method: "POST", URL: generation.CompletionsURL, Body: body}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(req); err != nil {
		return bad("invalid_request", err.Error())
	}
	checked, err := generation.ParseRequestLine(bytes.TrimSpace(buf.Bytes()), line)
	if err != nil {
		var le *generation.LineError
		if errors.As(err, &le) {
			msg := le.Message
			if le.Code == "invalid_request" && strings.HasPrefix(msg, "body.prompt:") {
				msg = "the rendered prompt" + strings.TrimPrefix(msg, "body.prompt")
			}
			return bad(le.Code, msg)
		}
		return bad("invalid_request", err.Error())
	}
	return checked, nil
}

// limitReader fails once more than left bytes have been read.
type limitReader struct {
	r    io.Reader
	left int64
	over bool
}

// maxInputBytes is MaxInputBytes, lowered by tests.
var maxInputBytes int64 = MaxInputBytes

// ErrInputTooLarge is the error of an input over MaxInputBytes.
var ErrInputTooLarge = fmt.Errorf("input: larger than %d bytes", MaxInputBytes)

func (l *limitReader) Read(p []byte) (int, error) {
	if l.over {
		return 0, ErrInputTooLarge
	}
	n, err := l.r.Read(p)
	l.left -= int64(n)
	if l.left < 0 {
		l.over = true
		return 0, ErrInputTooLarge
	}
	return n, err
}
