package recsys

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strconv"
	"strings"
)

// Format is an interaction file format.
type Format int

const (
	// FormatJSONL is one JSON object per line with the fields of Event.
	FormatJSONL Format = iota + 1
	// FormatCSV has a header naming its columns: user, item and event are
	// required; value, ts, kind and id are optional, in any order.
	FormatCSV
)

func (f Format) String() string {
	switch f {
	case FormatJSONL:
		return "jsonl"
	case FormatCSV:
		return "csv"
	}
	return fmt.Sprintf("Format(%d)", int(f))
}

// FormatFromPath picks the format from a file name: .csv is CSV; .jsonl,
// .ndjson and .json are JSONL.
func FormatFromPath(path string) (Format, error) {
	switch strings.ToLower(filepath.Ext(path)) {
	case ".csv":
		return FormatCSV, nil
	case ".jsonl", ".ndjson", ".json":
		return FormatJSONL, nil
	}
	return 0, fmt.Errorf("%w: %s: unknown interaction file extension (want .csv or .jsonl)", ErrBadInput, path)
}

// ReadEvents decodes r line by line and calls fn with each event and its
// 1-based line number. Blank lines are skipped. It stops at the first bad
// line with an *InputError naming the line and field; an error fn returns is
// passed through, stamped with the line when it is an *InputError. Events are
// decoded but not validated against event weights: the Store does that.
func ReadEvents(r io.Reader, format Format, lim Limits, fn func(line int, ev Event) error) error {
	lim = lim.withDefaults()
	if err := lim.validate(); err != nil {
		return err
	}
	var parse func(line []byte) (Event, error)
	switch format {
	case FormatJSONL:
		parse = parseJSONLine
	case FormatCSV:
		parse = nil // set once the header is read
	default:
		return fmt.Errorf("recsys: unknown format %v", format)
	}
	// Room for the longest allowed line plus "\r\n"; bufio wants at least 16.
	br := bufio.NewReaderSize(r, max(lim.MaxLineBytes+2, 16))
	for n := 1; ; n++ {
		raw, rerr := br.ReadSlice('\n')
		if errors.Is(rerr, bufio.ErrBufferFull) {
			return &InputError{Line: n, Err: fmt.Errorf("longer than the limit of %d bytes", lim.MaxLineBytes)}
		}
		if rerr != nil && rerr != io.EOF {
			return fmt.Errorf("recsys: reading line %d: %w", n, rerr)
		}
		line := bytes.TrimRight(raw, "\r\n")
		if n == 1 {
			line = bytes.TrimPrefix(line, []byte("\xef\xbb\xbf")) // UTF-8 byte order mark
		}
		if len(line) > lim.MaxLineBytes {
			return &InputError{Line: n, Err: fmt.Errorf("%d bytes, over the limit of %d", len(line), lim.MaxLineBytes)}
		}
		if len(bytes.TrimSpace(line)) > 0 {
			if parse == nil {
				p, err := csvHeader(line)
				if err != nil {
					return atLine(err, n)
				}
				parse = p
			} else {
				ev, err := parse(line)
				if err != nil {
					return atLine(err, n)
				}
				if err := fn(n, ev); err != nil {
					return atLine(err, n)
				}
			}
		}
		if rerr == io.EOF {
			return nil
		}
	}
}

func parseJSONLine(line []byte) (Event, error) {
	var ev Event
	if err := json.Unmarshal(line, &ev); err != nil {
		var ie *InputError
		if errors.As(err, &ie) {
			return Event{}, ie
		}
		var se *json.SyntaxError
		if errors.As(err, &se) {
			return Event{}, &InputError{Err: fmt.Errorf("invalid JSON at byte %d: %v", se.Offset, se)}
		}
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return Event{}, fieldErr(te.Field, "want %s, got JSON %s", te.Type, te.Value)
		}
		return Event{}, &InputError{Err: fmt.Errorf("invalid JSON: %v", err)}
	}
	return ev, nil
}

// csvColumns are the columns a CSV header may name.
var csvColumns = map[string]bool{"user": true, "item": true, "event": true, "value": true, "ts": true, "kind": true, "id": true}

// csvHeader reads the header and returns the parser for the rows under it.
func csvHeader(line []byte) (func([]byte) (Event, error), error) {
	names, err := splitCSV(line, nil)
	if err != nil {
		return nil, err
	}
	pos := map[string]int{}
	for i, n := range names {
		n = strings.ToLower(strings.TrimSpace(n))
		if !csvColumns[n] {
			return nil, &InputError{Field: n, Err: fmt.Errorf("unknown CSV column %d (want user,item,event[,value][,ts][,kind][,id])", i+1)}
		}
		if _, dup := pos[n]; dup {
			return nil, &InputError{Field: n, Err: errors.New("column named twice in the header")}
		}
		pos[n] = i
	}
	for _, req := range []string{"user", "item", "event"} {
		if _, ok := pos[req]; !ok {
			return nil, &InputError{Field: req, Err: errors.New("required column missing from the CSV header")}
		}
	}
	col := func(name string) int {
		if i, ok := pos[name]; ok {
			return i
		}
		return -1
	}
	iUser, iItem, iEvent, iValue, iTS, iKind, iID := col("user"), col("item"), col("event"), col("value"), col("ts"), col("kind"), col("id")
	want := len(names)
	var buf []string
	return func(line []byte) (Event, error) {
		f, err := splitCSV(line, buf[:0])
		if err != nil {
			return Event{}, err
		}
		buf = f
		if len(f) != want {
			return Event{}, &InputError{Err: fmt.Errorf("%d fields, the header has %d", len(f), want)}
		}
		ev := Event{User: f[iUser], Item: f[iItem], Type: f[iEvent], Value: 1}
		if iValue >= 0 && strings.TrimSpace(f[iValue]) != "" {
			v, err := strconv.ParseFloat(strings.TrimSpace(f[iValue]), 64)
			if err != nil {
				return Event{}, fieldErr("value", "not a number: %.64q", f[iValue])
			}
			ev.Value = v
		}
		if iTS >= 0 {
			t, err := parseTime(strings.TrimSpace(f[iTS]))
			if err != nil {
				return Event{}, err
			}
			ev.Time = t
		}
		if iKind >= 0 {
			ev.ItemKind = f[iKind]
		}
		if iID >= 0 {
			ev.ID = f[iID]
		}
		return ev, nil
	}, nil
}

// splitCSV splits one CSV record (RFC 4180 quoting, no embedded newlines:
// records are one line each) and appends the fields to dst.
func splitCSV(line []byte, dst []string) ([]string, error) {
	for i := 0; ; {
		if i < len(line) && line[i] == '"' {
			var sb strings.Builder
			j := i + 1
			for {
				k := bytes.IndexByte(line[j:], '"')
				if k < 0 {
					return nil, &InputError{Err: fmt.Errorf("column %d: unterminated quoted field", len(dst)+1)}
				}
				sb.Write(line[j : j+k])
				j += k + 1
				if j < len(line) && line[j] == '"' { // "" is an escaped quote
					sb.WriteByte('"')
					j++
					continue
				}
				break
			}
			dst = append(dst, sb.String())
			if j == len(line) {
				return dst, nil
			}
			if line[j] != ',' {
				return nil, &InputError{Err: fmt.Errorf("column %d: text after a closing quote", len(dst))}
			}
			i = j + 1
			continue
		}
		k := bytes.IndexByte(line[i:], ',')
		end := len(line)
		if k >= 0 {
			end = i + k
		}
		field := line[i:end]
		if bytes.IndexByte(field, '"') >= 0 {
			return nil, &InputError{Err: fmt.Errorf("column %d: quote inside an unquoted field", len(dst)+1)}
		}
		dst = append(dst, string(field))
		if k < 0 {
			return dst, nil
		}
		i = end + 1
	}
}
