package main

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	"github.com/tandem-ai/tandem/limits"
)

// readPace is the pace a request must keep: its headers within Header;
// its body, after Grace, at least Min bytes a second on average since the
// request began.
type readPace struct {
	Header time.Duration
	Grace  time.Duration
	Min    int64
}

// defaultReadPace is `producer serve`'s.
var defaultReadPace = readPace{Header: limits.APIHeaderTime, Grace: limits.APIBodyGrace, Min: limits.MinAPIBodyRate}

// newHTTPServer is the http.Server of `producer serve`: the headers must
// arrive within rate.Header and every request body keeps rate, so
// a client that trickles a body (or its headers) cannot hold a connection
// and a handler for as long as it likes. The bodies' size limits are the
// handlers' (http.MaxBytesReader, 413).
func newHTTPServer(h http.Handler, rate readPace) *http.Server {
	return &http.Server{Handler: rate.wrap(h), ReadHeaderTimeout: rate.Header}
}

// wrap gives every request that has a body a paced one (pacedBody). When
// the handler leaves part of the body unread, net/http reads on (up to
// 256 KB) to reuse the connection; that read gets limits.APIBodyDrainTime,
// so a client that trickles cannot hold the connection there either.
func (rate readPace) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body == nil || r.Body == http.NoBody {
			h.ServeHTTP(w, r)
			return
		}
		b := &pacedBody{ReadCloser: r.Body, rc: http.NewResponseController(w), start: time.Now(), rate: rate}
		r.Body = b
		h.ServeHTTP(w, r)
		if !b.eof {
			_ = b.rc.SetReadDeadline(time.Now().Add(limits.APIBodyDrainTime))
		}
	})
}

// errBodyTooSlow is the error of a body that fell behind its rate;
// writeBodyError answers it with 408.
type errBodyTooSlow struct{ rate readPace }

func (e *errBodyTooSlow) Error() string {
	return fmt.Sprintf("body: arrived slower than %d bytes/s after the first %v", e.rate.Min, e.rate.Grace)
}

// pacedBody is a request body whose every Read has a connection read
// deadline: the time by which, at the minimum rate, one more byte is due.
// The deadline is set on the connection only while a Read is waiting and
// cleared after it, so it cannot reach the server's own reads between
// requests or while a handler streams its answer.
type pacedBody struct {
	io.ReadCloser
	rc    *http.ResponseController
	start time.Time
	rate  readPace
	n     int64 // bytes read so far
	eof   bool  // read to its end
	err   error // sticky: a body that fell behind stays refused
}

func (b *pacedBody) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	due := b.start.Add(b.rate.Grace + time.Duration(float64(b.n+1)/float64(b.rate.Min)*float64(time.Second)))
	if time.Now().After(due) {
		b.err = &errBodyTooSlow{b.rate}
		return 0, b.err
	}
	// ErrNotSupported (a writer without deadlines): the check above still
	// holds between reads.
	_ = b.rc.SetReadDeadline(due)
	n, err := b.ReadCloser.Read(p)
	_ = b.rc.SetReadDeadline(time.Time{})
	b.n += int64(n)
	b.eof = err == io.EOF
	if errors.Is(err, os.ErrDeadlineExceeded) {
		b.err = &errBodyTooSlow{b.rate}
		err = b.err
	}
	return n, err
}

// isBodyError reports whether err came from reading a request body (over
// its size limit or too slow) rather than from what the body said.
func isBodyError(err error) bool {
	return errors.As(err, new(*http.MaxBytesError)) || errors.As(err, new(*errBodyTooSlow))
}
