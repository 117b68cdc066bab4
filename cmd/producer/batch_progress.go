package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/tandem-ai/tandem/batch"
)

// progressBar draws a batch's progress on one terminal line, redrawn with a
// carriage return: bar, rows done, percentage, rows per second and the time
// left. On a writer that is not a terminal it prints a plain line at most
// every few seconds instead, so logs stay readable.
type progressBar struct {
	w        io.Writer
	tty      bool
	start    time.Time
	base     int // rows already done when following began (not counted in the rate)
	started  bool
	lastLine time.Time
	drawn    bool
	width    int
}

func newProgressBar(w io.Writer, tty bool) *progressBar {
	return &progressBar{w: w, tty: tty, width: 30}
}

// isTerminal reports whether f, a reader or writer, is a character device
// (a terminal).
func isTerminal(v any) bool {
	f, ok := v.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

func (p *progressBar) update(b *batch.Batch) {
	now := time.Now()
	done := b.RequestCounts.Done()
	if !p.started {
		p.start, p.base, p.started = now, done, true
	}
	line := p.render(b, now)
	switch {
	case p.tty:
		fmt.Fprintf(p.w, "\r%s\x1b[K", line)
		p.drawn = true
	case b.Status.Terminal() || now.Sub(p.lastLine) >= 2*time.Second:
		fmt.Fprintln(p.w, line)
		p.lastLine = now
	}
}

// render is the bar's text for b at now.
func (p *progressBar) render(b *batch.Batch, now time.Time) string {
	c := b.RequestCounts
	done, total := c.Done(), max(c.Total, 1)
	filled := p.width * done / total
	bar := strings.Repeat("#", filled) + strings.Repeat("-", p.width-filled)
	elapsed := now.Sub(p.start).Seconds()
	rate := 0.0
	if elapsed > 0 {
		rate = float64(done-p.base) / elapsed
	}
	eta := "--:--"
	if rate > 0 && done < c.Total {
		eta = formatDuration(time.Duration(float64(c.Total-done) / rate * float64(time.Second)))
	} else if done >= c.Total {
		eta = "0:00"
	}
	s := fmt.Sprintf("[%s] %d/%d rows %3d%%  %.1f rows/s  ETA %s  %s", bar, done, c.Total, 100*done/total, rate, eta, b.Status)
	if c.Failed > 0 {
		s += fmt.Sprintf("  (%d failed)", c.Failed)
	}
	return s
}

func (p *progressBar) finish() {
	if p.tty && p.drawn {
		fmt.Fprintln(p.w)
	}
}

func formatDuration(d time.Duration) string {
	s := int(d.Round(time.Second).Seconds())
	if s >= 3600 {
		return fmt.Sprintf("%d:%02d:%02d", s/3600, s/60%60, s%60)
	}
	return fmt.Sprintf("%d:%02d", s/60, s%60)
}
