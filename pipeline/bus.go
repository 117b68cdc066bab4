package pipeline

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Bus is Tandem's NATS event bus: JetStream for events that must not be lost
// (feedback, lifecycle, dead letters) and core NATS for ephemeral streams
// (batch progress, generated tokens). It is safe for concurrent use.
type Bus struct {
	NC *nats.Conn
	JS jetstream.JetStream

	mu        sync.Mutex
	closed    bool
	consumers map[*consumerRun]struct{}
}

// Defaults ConnectBus applies before the caller's options, which win.
const (
	busReconnectWait  = time.Second
	busFlushOnClose   = 2 * time.Second
	busConnectTimeout = 5 * time.Second
)

// ConnectBus dials urls (one or more comma-separated nats:// or tls:// URLs)
// and checks that JetStream answers, so a misconfigured server fails here and
// not at the first publish. The connection reconnects forever until Close.
func ConnectBus(ctx context.Context, urls string, opts ...nats.Option) (*Bus, error) {
	if strings.TrimSpace(urls) == "" {
		return nil, errors.New("pipeline: NATS URL is empty")
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("pipeline: connect NATS: %w", err)
	}
	timeout := busConnectTimeout
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < timeout {
		timeout = max(time.Until(dl), time.Millisecond)
	}
	all := []nats.Option{
		nats.Name("tandem"),
		nats.Timeout(timeout),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(busReconnectWait),
	}
	all = append(all, opts...)
	nc, err := nats.Connect(urls, all...)
	if err != nil {
		return nil, fmt.Errorf("pipeline: connect NATS %s: %w", redactURLs(urls), err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("pipeline: JetStream client: %w", err)
	}
	if _, err := js.AccountInfo(ctx); err != nil {
		nc.Close()
		return nil, fmt.Errorf("pipeline: JetStream unavailable at %s: %w", redactURLs(urls), err)
	}
	return &Bus{NC: nc, JS: js, consumers: make(map[*consumerRun]struct{})}, nil
}

// Close stops every consumer started by this Bus (letting in-flight handlers
// finish), flushes pending core publishes and closes the connection. It is
// safe to call more than once.
func (b *Bus) Close() {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return
	}
	b.closed = true
	runs := make([]*consumerRun, 0, len(b.consumers))
	for r := range b.consumers {
		runs = append(runs, r)
	}
	b.mu.Unlock()

	for _, r := range runs {
		r.stop()
	}
	if b.NC.IsConnected() {
		_ = b.NC.FlushTimeout(busFlushOnClose) // best effort: the connection closes anyway
	}
	b.NC.Close()
}

// register records a running consumer so Close can stop it; it fails once the
// Bus is closed.
func (b *Bus) register(r *consumerRun) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return ErrBusClosed
	}
	b.consumers[r] = struct{}{}
	return nil
}

func (b *Bus) unregister(r *consumerRun) {
	b.mu.Lock()
	delete(b.consumers, r)
	b.mu.Unlock()
}

func (b *Bus) isClosed() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.closed
}

// redactURLs hides passwords in a comma-separated URL list before it reaches
// an error message or a log.
func redactURLs(list string) string {
	parts := strings.Split(list, ",")
	for i, p := range parts {
		p = strings.TrimSpace(p)
		u, err := url.Parse(p)
		switch {
		case err != nil:
			parts[i] = "<unparseable URL>"
		case u.User != nil:
			u.User = url.User("xxxxx")
			parts[i] = u.String()
		default:
			parts[i] = p
		}
	}
	return strings.Join(parts, ",")
}
