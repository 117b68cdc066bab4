package recsys

import (
	"bufio"
	"bytes"
	"io"
	"strconv"
	"time"
)

// CSVWriter writes events as an interaction file that ReadEvents reads
// back to the same events: header user,item,event,value,ts,kind,id; values
// in the shortest form that parses to the same float64, a revision's
// (Event.Previous) as the difference it makes, value - previous, so the
// file adds the same to H (a snapshot is the matrix's input, and its
// columns stay those every reader knows); times as RFC 3339
// with nanoseconds (UTC), empty when zero; fields quoted when they hold a
// comma or a quote. CSV, not JSONL, because it loads about five times
// faster, which counts when every shard of a rebuild loads the snapshot.
type CSVWriter struct {
	bw      *bufio.Writer
	line    []byte
	started bool
}

// NewCSVWriter writes to w; call Flush at the end.
func NewCSVWriter(w io.Writer) *CSVWriter {
	return &CSVWriter{bw: bufio.NewWriterSize(w, 256<<10)}
}

// Write writes one event, after the header on the first call.
func (c *CSVWriter) Write(ev Event) error {
	l := c.line[:0]
	if !c.started {
		c.started = true
		l = append(l, "user,item,event,value,ts,kind,id\n"...)
	}
	l = appendCSVField(l, ev.User)
	l = append(l, ',')
	l = appendCSVField(l, ev.Item)
	l = append(l, ',')
	l = appendCSVField(l, ev.Type)
	l = append(l, ',')
	l = strconv.AppendFloat(l, ev.Value-ev.Previous, 'g', -1, 64)
	l = append(l, ',')
	if !ev.Time.IsZero() {
		l = ev.Time.UTC().AppendFormat(l, time.RFC3339Nano)
	}
	l = append(l, ',')
	l = appendCSVField(l, ev.ItemKind)
	l = append(l, ',')
	l = appendCSVField(l, ev.ID)
	l = append(l, '\n')
	c.line = l
	_, err := c.bw.Write(l)
	return err
}

// Flush writes the header if nothing was written, and what is buffered.
func (c *CSVWriter) Flush() error {
	if !c.started {
		c.started = true
		if _, err := c.bw.WriteString("user,item,event,value,ts,kind,id\n"); err != nil {
			return err
		}
	}
	return c.bw.Flush()
}

// appendCSVField appends s, quoted (RFC 4180) when it holds a comma or a
// quote. Stored IDs never hold line breaks: the store refuses control
// characters.
func appendCSVField(dst []byte, s string) []byte {
	if !bytes.ContainsAny([]byte(s), ",\"") {
		return append(dst, s...)
	}
	dst = append(dst, '"')
	for i := 0; i < len(s); i++ {
		if s[i] == '"' {
			dst = append(dst, '"')
		}
		dst = append(dst, s[i])
	}
	return append(dst, '"')
}
