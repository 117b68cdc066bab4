package batch

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/tandem-ai/tandem/jobs"
	"github.com/tandem-ai/tandem/limits"
	"github.com/tandem-ai/tandem/pipeline"
)

// Webhook configuration, from the environment of the workers.
const (
	// EnvWebhookURLs is a comma-separated list of https:// URLs that receive
	// every lifecycle event.
	EnvWebhookURLs = "TANDEM_WEBHOOK_URLS"
	// EnvWebhookSecret is the HMAC-SHA256 key that signs each delivery.
	EnvWebhookSecret = "TANDEM_WEBHOOK_SECRET"
)

// Webhook request headers.
const (
	HeaderWebhookSignature = "X-Tandem-Signature" // "sha256=" + hex HMAC of timestamp + "." + body
	HeaderWebhookTimestamp = "X-Tandem-Timestamp" // unix seconds
	HeaderWebhookEventID   = "X-Tandem-Event-Id"
	HeaderWebhookEventType = "X-Tandem-Event-Type"
)

// Webhook limits.
const (
	MaxWebhookURLs       = limits.WebhookURLs
	MaxWebhookURLLen     = limits.WebhookURLLen
	webhookTimeout       = limits.WebhookTimeout
	webhookResponseLimit = limits.WebhookResponseBytes
	// DefaultWebhookTolerance is how old a signed timestamp VerifyWebhook
	// accepts by default; receivers use it to refuse replays.
	DefaultWebhookTolerance = 5 * time.Minute
)

// WebhookArgs is one delivery of one event to one URL. The body is the
// event as published on NATS; the secret is not in the payload (it stays in
// the workers' environment, out of Redis).
type WebhookArgs struct {
	URL       string          `json:"url"`
	EventID   string          `json:"event_id"`
	EventType string          `json:"event_type"`
	Body      json.RawMessage `json:"body"`
}

// Kind implements pipeline.JobArgs.
func (WebhookArgs) Kind() string { return jobs.KindWebhook }

// Validate implements pipeline.Validator.
func (a WebhookArgs) Validate() error {
	if err := validateWebhookURL(a.URL); err != nil {
		return pipeline.InvalidField("url", "%v", err)
	}
	if err := validateHeaderValue(a.EventID, pipeline.MaxMsgIDLen); err != nil || a.EventID == "" {
		return pipeline.InvalidField("event_id", "want 1..%d printable bytes", pipeline.MaxMsgIDLen)
	}
	if err := validateHeaderValue(a.EventType, pipeline.MaxTokenLen); err != nil || a.EventType == "" {
		return pipeline.InvalidField("event_type", "want 1..%d printable bytes", pipeline.MaxTokenLen)
	}
	if len(a.Body) > pipeline.MaxEventBytes {
		return pipeline.InvalidField("body", "%d bytes, limit %d", len(a.Body), pipeline.MaxEventBytes)
	}
	if !json.Valid(a.Body) {
		return pipeline.InvalidField("body", "not valid JSON")
	}
	return nil
}

func validateHeaderValue(s string, limit int) error {
	if len(s) > limit {
		return fmt.Errorf("%d bytes, limit %d", len(s), limit)
	}
	for i := 0; i < len(s); i++ {
		if s[i] < ' ' || s[i] == 0x7f {
			return fmt.Errorf("control byte at %d", i)
		}
	}
	return nil
}

func validateWebhookURL(raw string) error {
	if len(raw) > MaxWebhookURLLen {
		return fmt.Errorf("%d bytes, limit %d", len(raw), MaxWebhookURLLen)
	}
	u, err := url.Parse(raw)
	if err != nil {
		return err
	}
	if u.Scheme != "https" || u.Host == "" {
		return fmt.Errorf("%q: want an https:// URL with a host", raw)
	}
	if u.User != nil {
		return fmt.Errorf("%q: credentials in the URL are not allowed; the body is signed with %s", u.Redacted(), EnvWebhookSecret)
	}
	return nil
}

// WebhookConfig is where and how a worker delivers webhooks.
type WebhookConfig struct {
	URLs   []string
	Secret string
	// Client sends the requests; nil uses one with a 10 s timeout that does
	// not follow redirects.
	Client *http.Client
	// Now is the clock of the signature timestamps; nil is time.Now.
	Now func() time.Time
}

// WebhookConfigFromEnv reads EnvWebhookURLs and EnvWebhookSecret. It
// returns nil (webhooks off) when no URL is set, and an error when URLs are
// set without a secret or one of them is not https.
func WebhookConfigFromEnv() (*WebhookConfig, error) {
	urls, err := ParseWebhookURLs(os.Getenv(EnvWebhookURLs))
	if err != nil || len(urls) == 0 {
		return nil, err
	}
	secret := os.Getenv(EnvWebhookSecret)
	if secret == "" {
		return nil, fmt.Errorf("%s is set but %s is empty: webhooks are always signed", EnvWebhookURLs, EnvWebhookSecret)
	}
	return &WebhookConfig{URLs: urls, Secret: secret}, nil
}

// ParseWebhookURLs splits and checks a comma-separated URL list.
func ParseWebhookURLs(s string) ([]string, error) {
	var urls []string
	for _, u := range strings.Split(s, ",") {
		if u = strings.TrimSpace(u); u == "" {
			continue
		}
		if err := validateWebhookURL(u); err != nil {
			return nil, fmt.Errorf("%s: %w", EnvWebhookURLs, err)
		}
		urls = append(urls, u)
	}
	if len(urls) > MaxWebhookURLs {
		return nil, fmt.Errorf("%s: %d URLs, at most %d", EnvWebhookURLs, len(urls), MaxWebhookURLs)
	}
	return urls, nil
}

// allowed reports whether u is one of the configured URLs: a task whose URL
// is not (the configuration changed, or someone wrote to Redis) is not sent.
func (c *WebhookConfig) allowed(u string) bool {
	for _, x := range c.URLs {
		if x == u {
			return true
		}
	}
	return false
}

// SignWebhook returns the X-Tandem-Signature value for body sent at ts:
// "sha256=" and the hex HMAC-SHA256, keyed by secret, of ts + "." + body.
func SignWebhook(secret string, ts int64, body []byte) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(strconv.FormatInt(ts, 10)))
	m.Write([]byte("."))
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

// ErrWebhookSignature is wrapped by VerifyWebhook's failures.
var ErrWebhookSignature = errors.New("webhook signature")

// VerifyWebhook checks a delivery as a receiver should: the signature
// matches (in constant time) and the timestamp is within tolerance of now,
// which refuses replays of old deliveries.
func VerifyWebhook(secret string, h http.Header, body []byte, now time.Time, tolerance time.Duration) error {
	ts, err := strconv.ParseInt(h.Get(HeaderWebhookTimestamp), 10, 64)
	if err != nil {
		return fmt.Errorf("%w: %s: not a unix time", ErrWebhookSignature, HeaderWebhookTimestamp)
	}
	if d := now.Sub(time.Unix(ts, 0)); d > tolerance || d < -tolerance {
		return fmt.Errorf("%w: timestamp %d is %v away from now (tolerance %v)", ErrWebhookSignature, ts, d.Round(time.Second), tolerance)
	}
	want := SignWebhook(secret, ts, body)
	if !hmac.Equal([]byte(want), []byte(h.Get(HeaderWebhookSignature))) {
		return fmt.Errorf("%w: mismatch", ErrWebhookSignature)
	}
	return nil
}

// deliver runs a webhook task with r.Webhooks. Failures that a retry may
// cure (network errors, 408, 425, 429, 5xx) are transient, so asynq
// retries them with backoff; other answers are final.
func (r *Runner) deliver(ctx context.Context, job *pipeline.Job[WebhookArgs]) error {
	if r.Webhooks == nil {
		return fmt.Errorf("webhook: this worker has no webhook configuration (%s, %s)", EnvWebhookURLs, EnvWebhookSecret)
	}
	return r.Webhooks.Deliver(ctx, job.Args)
}

// Deliver sends one signed POST.
func (c *WebhookConfig) Deliver(ctx context.Context, a WebhookArgs) error {
	if err := a.Validate(); err != nil {
		return pipeline.Permanent(err)
	}
	if !c.allowed(a.URL) {
		return pipeline.Permanent(fmt.Errorf("webhook: %s is not among %s", a.URL, EnvWebhookURLs))
	}
	now := time.Now
	if c.Now != nil {
		now = c.Now
	}
	ts := now().Unix()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, a.URL, bytes.NewReader(a.Body))
	if err != nil {
		return pipeline.Permanent(fmt.Errorf("webhook: %w", err))
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "Tandem-Webhook/1")
	req.Header.Set(HeaderWebhookEventID, a.EventID)
	req.Header.Set(HeaderWebhookEventType, a.EventType)
	req.Header.Set(HeaderWebhookTimestamp, strconv.FormatInt(ts, 10))
	req.Header.Set(HeaderWebhookSignature, SignWebhook(c.Secret, ts, a.Body))
	client := c.Client
	if client == nil {
		client = defaultWebhookClient
	}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("webhook %s: %w", a.URL, err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, webhookResponseLimit))
	resp.Body.Close()
	switch sc := resp.StatusCode; {
	case sc >= 200 && sc < 300:
		return nil
	case sc == http.StatusRequestTimeout, sc == http.StatusTooEarly, sc == http.StatusTooManyRequests, sc >= 500:
		return fmt.Errorf("webhook %s: HTTP %d; will retry", a.URL, sc)
	default:
		return pipeline.Permanent(fmt.Errorf("webhook %s: HTTP %d; not retried", a.URL, sc))
	}
}

// defaultWebhookClient does not follow redirects: a signed body goes only
// to the configured URL.
var defaultWebhookClient = &http.Client{
	Timeout:       webhookTimeout,
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

// WebhookTaskID names one delivery, so that announcing an event twice
// enqueues each delivery once.
func WebhookTaskID(eventID, url string) string {
	h := sha256.Sum256([]byte(url))
	return eventID + ":webhook:" + hex.EncodeToString(h[:6])
}

// ExecWebhook delivers one event in-process: `worker exec webhook`.
func ExecWebhook(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("worker exec webhook", flag.ContinueOnError)
	var a WebhookArgs
	body := fs.String("body", "", "JSON file with the event body")
	fs.StringVar(&a.URL, "url", "", "https:// URL to deliver to (must be in "+EnvWebhookURLs+")")
	fs.StringVar(&a.EventID, "event-id", "evt_manual", "event id header")
	fs.StringVar(&a.EventType, "event-type", "test", "event type header")
	if _, err := pipeline.ParseArgs(fs, args); err != nil {
		return err
	}
	b, err := os.ReadFile(*body)
	if err != nil {
		return fmt.Errorf("--body: %w", err)
	}
	a.Body = b
	cfg, err := WebhookConfigFromEnv()
	if err != nil {
		return err
	}
	if cfg == nil {
		return fmt.Errorf("no webhook URLs: set %s and %s", EnvWebhookURLs, EnvWebhookSecret)
	}
	if err := cfg.Deliver(ctx, a); err != nil {
		return err
	}
	enc := json.NewEncoder(stdout)
	enc.SetEscapeHTML(false)
	return enc.Encode(map[string]string{"delivered": a.URL, "event_id": a.EventID})
}
