package batch

import (
	"bufio"
	"bytes"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/tandem-ai/tandem/generation"
)

// rowVisitor receives each template row (or its problem) in line order.
type rowVisitor func(line int, row map[string]any, prob *Problem) error

// Row fields that set sampling parameters; every field, these included, is
// also visible to the template as {{.name}}.
var (
	intParams   = []string{"max_tokens", "top_k", "seed", "n", "logprobs"}
	floatParams = []string{"temperature", "top_p", "min_p", "presence_penalty", "frequency_penalty", "repetition_penalty"}
)

// rowParams builds the completions body (without the prompt) from a row's
// parameter fields, with the types and ranges an OpenAI Batch body has.
func rowParams(row map[string]any) (generation.CompletionsBody, error) {
	var body generation.CompletionsBody
	params := map[string]any{}
	for _, k := range append(append([]string{"stop"}, intParams...), floatParams...) {
		if v, ok := row[k]; ok && v != nil {
			params[k] = v
		}
	}
	if len(params) == 0 {
		return body, nil
	}
	raw, err := json.Marshal(params)
	if err != nil {
		return body, err
	}
	if err := json.Unmarshal(raw, &body); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return body, fmt.Errorf("%s: want a %s, got %s", te.Field, jsonKind(te.Type.Kind().String()), te.Value)
		}
		return body, err
	}
	if _, err := body.Params(); err != nil {
		return body, errors.New(strings.TrimPrefix(err.Error(), "body: "))
	}
	return body, nil
}

func jsonKind(goKind string) string {
	switch {
	case strings.HasPrefix(goKind, "int"), strings.HasPrefix(goKind, "uint"):
		return "whole number"
	case strings.HasPrefix(goKind, "float"):
		return "number"
	case goKind == "slice":
		return "string or list of strings"
	}
	return goKind
}

// readJSONLRows reads one JSON object per line. Lines over generation.MaxLineBytes
// are refused without being held in memory; blank lines are skipped.
func readJSONLRows(r io.Reader, visit rowVisitor) error {
	br := bufio.NewReaderSize(r, 64<<10)
	for line := 1; ; line++ {
		raw, tooLong, err := generation.ReadBoundedLine(br, generation.MaxLineBytes)
		if err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("input: line %d: %w", line, err)
		}
		switch {
		case tooLong:
			if verr := visit(line, nil, &Problem{Line: line, Code: "line_too_long", Message: fmt.Sprintf("line exceeds %d bytes", generation.MaxLineBytes)}); verr != nil {
				return verr
			}
		case len(bytes.TrimSpace(raw)) > 0:
			row, prob := decodeJSONRow(raw, line)
			if verr := visit(line, row, prob); verr != nil {
				return verr
			}
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
	}
}

func decodeJSONRow(raw []byte, line int) (map[string]any, *Problem) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber() // numbers print in templates as written
	var row map[string]any
	if err := dec.Decode(&row); err != nil {
		return nil, &Problem{Line: line, Code: "invalid_json", Message: err.Error()}
	}
	if dec.More() {
		return nil, &Problem{Line: line, Code: "invalid_json", Message: "trailing data after the JSON object"}
	}
	if row == nil {
		return nil, &Problem{Line: line, Code: "invalid_json", Message: "want a JSON object"}
	}
	if id, ok := row["custom_id"].(string); ok {
		if err := generation.CheckIDText(raw, "custom_id", id); err != nil {
			return nil, &Problem{Line: line, Code: "invalid_request", Message: err.Error()}
		}
	}
	return row, nil
}

// readCSVRows reads a header naming the columns (custom_id required) and
// one row per record. Empty cells are absent fields; parameter columns are
// parsed as numbers, and stop as a string or a JSON list.
func readCSVRows(r io.Reader, visit rowVisitor) error {
	guard := &lineGuard{br: bufio.NewReaderSize(r, 64<<10), limit: generation.MaxLineBytes}
	cr := csv.NewReader(guard)
	cr.ReuseRecord = false
	header, err := cr.Read()
	if errors.Is(err, io.EOF) {
		return errors.New("input: empty CSV (a header row naming the columns is required)")
	}
	if err != nil {
		return fmt.Errorf("input: CSV header: %w", err)
	}
	if len(guard.dropped) > 0 {
		return fmt.Errorf("input: CSV header: line %d exceeds %d bytes", guard.dropped[0], generation.MaxLineBytes)
	}
	cols := map[string]int{}
	for i, h := range header {
		h = strings.TrimSpace(strings.TrimPrefix(h, "\ufeff"))
		header[i] = h
		if h == "" {
			return fmt.Errorf("input: CSV header: column %d has no name", i+1)
		}
		if j, dup := cols[h]; dup {
			return fmt.Errorf("input: CSV header: column %q appears twice (columns %d and %d)", h, j+1, i+1)
		}
		cols[h] = i
	}
	if _, ok := cols["custom_id"]; !ok {
		return fmt.Errorf("input: CSV header: no custom_id column (have %s)", strings.Join(header, ", "))
	}
	reported := 0 // dropped lines already turned into problems
	flushDropped := func(before int) error {
		for ; reported < len(guard.dropped) && (before == 0 || guard.dropped[reported] < before); reported++ {
			l := guard.dropped[reported]
			if err := visit(l, nil, &Problem{Line: l, Code: "line_too_long", Message: fmt.Sprintf("line exceeds %d bytes", generation.MaxLineBytes)}); err != nil {
				return err
			}
		}
		return nil
	}
	for {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			return flushDropped(0)
		}
		// The line of the record, or of the error: FieldPos panics when the
		// failed Read returned no field (an unterminated quote at the end).
		line := 0
		var pe *csv.ParseError
		if err != nil && errors.As(err, &pe) {
			line = pe.StartLine
		} else if len(rec) > 0 {
			line, _ = cr.FieldPos(0)
		}
		if ferr := flushDropped(line); ferr != nil {
			return ferr
		}
		switch {
		case err != nil && errors.Is(err, csv.ErrFieldCount):
			err = visit(line, nil, &Problem{Line: line, Code: "invalid_csv", Message: fmt.Sprintf("%d fields; the header has %d", len(rec), len(header))})
		case err != nil && pe != nil:
			err = visit(line, nil, &Problem{Line: line, Code: "invalid_csv", Message: pe.Err.Error()})
		case err != nil:
			return fmt.Errorf("input: line %d: %w", line, err)
		default:
			row, prob := csvRow(header, rec, line)
			err = visit(line, row, prob)
		}
		if err != nil {
			return err
		}
	}
}

func csvRow(header, rec []string, line int) (map[string]any, *Problem) {
	row := make(map[string]any, len(header))
	for i, h := range header {
		row[h] = rec[i]
	}
	bad := func(msg string) (map[string]any, *Problem) {
		id, _ := row["custom_id"].(string)
		return nil, &Problem{Line: line, Code: "invalid_request", Message: msg, CustomID: id}
	}
	for _, k := range intParams {
		if s, ok := row[k].(string); ok {
			if s = strings.TrimSpace(s); s == "" {
				delete(row, k)
				continue
			}
			n, err := strconv.ParseInt(s, 10, 64)
			if err != nil {
				return bad(fmt.Sprintf("%s: %q is not a whole number", k, s))
			}
			row[k] = n
		}
	}
	for _, k := range floatParams {
		if s, ok := row[k].(string); ok {
			if s = strings.TrimSpace(s); s == "" {
				delete(row, k)
				continue
			}
			f, err := strconv.ParseFloat(s, 32)
			if err != nil {
				return bad(fmt.Sprintf("%s: %q is not a number", k, s))
			}
			row[k] = f
		}
	}
	if s, ok := row["stop"].(string); ok {
		switch {
		case s == "":
			delete(row, "stop")
		case strings.HasPrefix(strings.TrimSpace(s), "["):
			var list []string
			if err := json.Unmarshal([]byte(s), &list); err != nil {
				return bad(fmt.Sprintf("stop: %q is not a JSON list of strings", s))
			}
			row["stop"] = list
		}
	}
	return row, nil
}

// lineGuard passes physical lines through, replacing each line longer than
// limit by an empty line (so later line numbers stay right) and noting its
// number: an oversized line is reported without ever being held whole.
type lineGuard struct {
	br      *bufio.Reader
	limit   int
	line    int
	pending []byte
	dropped []int
	eof     bool
}

func (g *lineGuard) Read(p []byte) (int, error) {
	for len(g.pending) == 0 {
		if g.eof {
			return 0, io.EOF
		}
		g.line++
		raw, tooLong, err := generation.ReadBoundedLine(g.br, g.limit)
		if errors.Is(err, io.EOF) {
			g.eof = true
			continue
		}
		if err != nil {
			return 0, err
		}
		if tooLong {
			g.dropped = append(g.dropped, g.line)
			raw = nil
		}
		g.pending = append(raw, '\n')
	}
	n := copy(p, g.pending)
	g.pending = g.pending[n:]
	return n, nil
}
