package pipeline

import (
	"strings"
	"testing"
	"time"
)

func TestSplitQueue(t *testing.T) {
	c := DefaultConfig()
	fast, rest, err := c.SplitQueue(QueueInteractive, 2*time.Millisecond, 3)
	if err != nil {
		t.Fatal(err)
	}
	if len(fast.Queues) != 1 || fast.Queues[QueueInteractive] != 1 || fast.PollInterval != 2*time.Millisecond || fast.Concurrency != 3 {
		t.Fatalf("fast lane = queues %v poll %v concurrency %d", fast.Queues, fast.PollInterval, fast.Concurrency)
	}
	if fast.delayedPollInterval() != c.PollInterval {
		t.Fatalf("fast lane promotes delayed jobs every %v, want the bulk interval %v", fast.delayedPollInterval(), c.PollInterval)
	}
	if _, ok := rest.Queues[QueueInteractive]; ok || len(rest.Queues) != len(c.Queues)-1 || rest.PollInterval != c.PollInterval {
		t.Fatalf("rest = queues %v poll %v", rest.Queues, rest.PollInterval)
	}
	if _, ok := c.Queues[QueueInteractive]; !ok {
		t.Fatal("SplitQueue changed the caller's queue map")
	}
	for _, err := range []error{fast.Validate(), rest.Validate()} {
		if err != nil {
			t.Fatal(err)
		}
	}
	for name, call := range map[string]func() error{
		"not among":     func() error { _, _, err := c.SplitQueue("nope", time.Millisecond, 1); return err },
		"poll interval": func() error { _, _, err := c.SplitQueue(QueueInteractive, time.Microsecond, 1); return err },
		"concurrency 0": func() error { _, _, err := c.SplitQueue(QueueInteractive, time.Millisecond, 0); return err },
	} {
		if err := call(); err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("bad %s: err %v, want one naming it", name, err)
		}
	}
	c.DelayedPollInterval = time.Nanosecond
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "DelayedPollInterval") {
		t.Errorf("DelayedPollInterval 1ns: %v", err)
	}
}
