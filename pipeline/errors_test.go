package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
)

func TestPermanent(t *testing.T) {
	t.Parallel()
	if Permanent(nil) != nil || IsPermanent(nil) {
		t.Error("nil handling")
	}
	cause := errors.New("bad model path")
	err := Permanent(cause)
	if err.Error() != "bad model path" {
		t.Errorf("message %q; want the cause's", err)
	}
	if !errors.Is(err, cause) || !errors.Is(err, asynq.SkipRetry) || !IsPermanent(err) {
		t.Error("Permanent must unwrap to the cause and asynq.SkipRetry")
	}
	wrapped := fmt.Errorf("chunk 3: %w", err)
	if !IsPermanent(wrapped) || Permanent(wrapped) != wrapped {
		t.Error("wrapping must keep it permanent, and Permanent must not double-wrap")
	}
	if IsPermanent(errors.New("timeout")) {
		t.Error("plain error classed permanent")
	}
	if !IsPermanent(fmt.Errorf("x: %w", asynq.SkipRetry)) {
		t.Error("asynq.SkipRetry is permanent")
	}
	var fe *FieldError
	if err := InvalidField("max_tokens", "must be <= %d", 2048); !errors.As(err, &fe) || err.Error() != "max_tokens: must be <= 2048" {
		t.Errorf("InvalidField = %v", err)
	}
}

func TestRetryBackoff(t *testing.T) {
	t.Parallel()
	base, max := 2*time.Second, 10*time.Minute
	f := RetryBackoff(base, max)
	for n := 0; n < 100; n++ {
		want := max
		if n < 20 && base<<n < max {
			want = base << n
		}
		for i := 0; i < 20; i++ {
			d := f(n, nil, nil)
			if d < want/2 || d > want {
				t.Fatalf("retry %d: delay %v outside [%v, %v]", n, d, want/2, want)
			}
		}
	}
	if d := RetryBackoff(0, 0)(3, nil, nil); d <= 0 {
		t.Errorf("zero settings gave %v", d)
	}
}

func TestLoggingLevels(t *testing.T) {
	t.Parallel()
	buf := &syncBuffer{}
	l := slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelInfo}))
	ctx := context.Background()
	run := func(err error) {
		h := Chain(asynq.HandlerFunc(func(context.Context, *asynq.Task) error { return err }), Logging(l))
		_ = h.ProcessTask(ctx, asynq.NewTask("test:log", nil))
	}
	run(nil)
	if buf.String() != "" {
		t.Errorf("success logged at Info: %s", buf)
	}
	run(errors.New("transient"))
	run(Permanent(errors.New("bad args")))
	out := buf.String()
	if !strings.Contains(out, "level=WARN") || !strings.Contains(out, "outcome=retry") ||
		!strings.Contains(out, "level=ERROR") || !strings.Contains(out, "outcome=archived") ||
		!strings.Contains(out, "kind=test:log") || !strings.Contains(out, "duration=") {
		t.Errorf("log:\n%s", out)
	}
}
