package pipeline

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestPeriodicReplicasEnqueueOnce(t *testing.T) {
	t.Parallel()
	b := setup(t)
	Register(b.reg, WorkFunc[echoArgs](func(context.Context, *Job[echoArgs]) error { return nil }), KindOptions{})
	entries := []PeriodicEntry{{
		Name: "nightly-rebuild", Spec: "0 3 * * *", Kind: "test:echo",
		Payload: json.RawMessage(`{"text":"rebuild"}`), Queue: b.queue,
	}}
	// A second replica: its own client and scheduler on the same Redis.
	c2, err := NewClient(b.cfg, WithRegistry(b.reg))
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	p1, err := NewPeriodic(b.client, entries, b.logger, nil)
	if err != nil {
		t.Fatal(err)
	}
	p2, err := NewPeriodic(c2, entries, b.logger, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	day1 := time.Date(2026, 1, 2, 3, 0, 0, 0, time.UTC)

	// One after the other.
	n1, err1 := p1.Tick(ctx, day1)
	n2, err2 := p2.Tick(ctx, day1.Add(400*time.Millisecond)) // same second
	if err1 != nil || err2 != nil || n1+n2 != 1 || n1 != 1 {
		t.Fatalf("sequential ticks: %d (%v), %d (%v); want 1 and 0", n1, err1, n2, err2)
	}
	// At the same moment.
	day2 := day1.Add(24 * time.Hour)
	var wg sync.WaitGroup
	counts := make([]int, 2)
	for i, p := range []*Periodic{p1, p2} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n, err := p.Tick(ctx, day2)
			if err != nil {
				t.Error(err)
			}
			counts[i] = n
		}()
	}
	wg.Wait()
	if counts[0]+counts[1] != 1 {
		t.Fatalf("concurrent ticks enqueued %v; want one in total", counts)
	}
	// Not due at other instants.
	for _, at := range []time.Time{day1.Add(time.Minute), day1.Add(-time.Second), day1.Add(time.Hour)} {
		if n, err := p1.Tick(ctx, at); n != 0 || err != nil {
			t.Errorf("Tick(%v) = %d, %v; want nothing due", at, n, err)
		}
	}

	tasks, err := b.client.Inspector().ListPendingTasks(b.queue)
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string]bool{}
	for _, ti := range tasks {
		ids[ti.ID] = true
		if ti.Retention != PeriodicRetention || string(ti.Payload) != `{"text":"rebuild"}` {
			t.Errorf("task %s: retention %v payload %s", ti.ID, ti.Retention, ti.Payload)
		}
	}
	want1, want2 := PeriodicTaskID("nightly-rebuild", day1), PeriodicTaskID("nightly-rebuild", day2)
	if len(ids) != 2 || !ids[want1] || !ids[want2] || want1 != "nightly-rebuild:1767322800" {
		t.Errorf("pending IDs %v; want %s and %s", ids, want1, want2)
	}
}

func TestPeriodicEveryIsAligned(t *testing.T) {
	t.Parallel()
	b := setup(t)
	p, err := NewPeriodic(b.client, []PeriodicEntry{
		{Name: "ten", Spec: "@every 10m", Kind: "test:any", Queue: b.queue},
		{Name: "tokyo", Spec: "CRON_TZ=Asia/Tokyo 0 12 * * *", Kind: "test:any", Queue: b.queue},
	}, discardLogger, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	base := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		at   time.Time
		want int
	}{
		{base.Add(10 * time.Minute), 1},
		{base.Add(5 * time.Minute), 0},
		{base.Add(10*time.Minute + time.Second), 0},
		{base.Add(3 * time.Hour), 2}, // 12:00 in Tokyo is 03:00 UTC, also a multiple of 10m
		{base.In(time.FixedZone("X", 3600)).Add(20 * time.Minute), 1},
	} {
		if n, err := p.Tick(ctx, tc.at); n != tc.want || err != nil {
			t.Errorf("Tick(%v) = %d, %v; want %d", tc.at, n, err, tc.want)
		}
	}
	if got := p.next(base.Add(time.Second)); !got.Equal(base.Add(10 * time.Minute)) {
		t.Errorf("next tick %v", got)
	}
}

func TestPeriodicRun(t *testing.T) {
	t.Parallel()
	b := setup(t)
	p, err := NewPeriodic(b.client, []PeriodicEntry{{Name: "fast", Spec: "@every 1s", Kind: "test:any", Queue: b.queue}}, b.logger, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	waitFor(t, "a periodic job", func() bool {
		tasks, err := b.client.Inspector().ListPendingTasks(b.queue)
		return err == nil && len(tasks) > 0 && strings.HasPrefix(tasks[0].ID, "fast:")
	})
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run = %v", err)
	}
}

func TestNewPeriodicChecksEntries(t *testing.T) {
	t.Parallel()
	b := setup(t)
	Register(b.reg, WorkFunc[echoArgs](func(context.Context, *Job[echoArgs]) error { return nil }), KindOptions{})
	for _, tc := range []struct {
		e    PeriodicEntry
		want string
	}{
		{PeriodicEntry{Name: "x", Spec: "0 3 * * *", Kind: "test:echo", Payload: json.RawMessage(`{"text":""}`)}, "text: required"},
		{PeriodicEntry{Name: "x", Spec: "0 3 * * *", Kind: "test:echo", Payload: json.RawMessage(`{"text":"a","zz":1}`)}, "zz"},
		{PeriodicEntry{Name: "x:y", Spec: "0 3 * * *", Kind: "test:echo"}, "name"},
		{PeriodicEntry{Name: "x", Spec: "61 * * * *", Kind: "test:echo"}, "spec"},
		{PeriodicEntry{Name: "x", Spec: "CRON_TZ=UTC", Kind: "test:echo"}, "spec"},
		{PeriodicEntry{Name: "x", Spec: "@every 1m", Kind: ""}, "kind"},
		{PeriodicEntry{Name: "x", Spec: "@every 1m", Kind: "a", Payload: json.RawMessage(`[1]`)}, "payload"},
		{PeriodicEntry{Name: "x", Spec: "@every 1m", Kind: "a", Queue: "no space"}, "queue"},
	} {
		if _, err := NewPeriodic(b.client, []PeriodicEntry{tc.e}, discardLogger, nil); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v; want an error containing %q", tc.e, err, tc.want)
		}
	}
	dup := PeriodicEntry{Name: "d", Spec: "@daily", Kind: "a"}
	if _, err := NewPeriodic(b.client, []PeriodicEntry{dup, dup}, discardLogger, nil); err == nil {
		t.Error("duplicate names accepted")
	}
}

func TestLoadSchedule(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := write("good.json", `[
  {"name": "nightly-recs", "spec": "0 3 * * *", "kind": "recs:rebuild", "payload": {"shards": 8}},
  {"name": "feedback-finetune", "spec": "@every 6h", "kind": "finetune:feedback", "queue": "finetune"}
]`)
	entries, err := LoadSchedule(good)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 2 || entries[0].Name != "nightly-recs" || string(entries[0].Payload) != `{"shards": 8}` || entries[1].Queue != "finetune" {
		t.Errorf("entries = %+v", entries)
	}

	for _, tc := range []struct{ body, want string }{
		{"[\n {\"name\": \"a\", \"spec\": \"@daily\", \"kind\": \"k\"},\n {\"name\": \"b\", \"spec\": \"@daily\", \"kind\": \"k\", \"knd\": 1}\n]", `bad.json:3: entry 2: json: unknown field "knd"`},
		{"[\n {\"name\": \"a\",\n  \"spec\": \"@daily\",\n  \"kind\": 5}\n]", `bad.json:4: entry 1: field kind`},
		{"[\n {\"name\": \"a\" \"spec\": 1}\n]", "bad.json:2: entry 1: syntax error"},
		{"[\n\n {\"name\": \"a\", \"spec\": \"every day\", \"kind\": \"k\"}\n]", `bad.json:3: entry 1 ("a"): spec:`},
		{"[\n {\"name\": \"a\", \"spec\": \"@daily\", \"kind\": \"k\"},\n {\"name\": \"a\", \"spec\": \"@daily\", \"kind\": \"k\"}\n]", "also used on line 2"},
		{`{"name": "a"}`, "bad.json:1: want a JSON array"},
		{`[] []`, "data after the array"},
		{``, "bad.json:1: empty payload"},
	} {
		_, err := LoadSchedule(write("bad.json", tc.body))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("LoadSchedule(%q) = %v; want %q", tc.body, err, tc.want)
		}
	}
	if _, err := LoadSchedule(filepath.Join(dir, "missing.json")); err == nil {
		t.Error("missing file accepted")
	}
	if _, err := LoadSchedule(write("big.json", "["+strings.Repeat(" ", MaxScheduleBytes)+"]")); err == nil || !strings.Contains(err.Error(), "limit") {
		t.Errorf("oversized schedule: %v", err)
	}
}

// The deterministic ID is what makes replicas safe; pin its format.
func TestPeriodicTaskIDFormat(t *testing.T) {
	t.Parallel()
	at := time.Unix(1700000000, 0)
	if got := PeriodicTaskID("n", at); got != "n:1700000000" {
		t.Errorf("PeriodicTaskID = %q", got)
	}
}

// A tick found later than MaxCatchUp (a suspended scheduler) is skipped,
// not enqueued; one less late still is. The clock jumps from the start to
// past the first tick, as it does after a suspension.
func TestPeriodicSkipsTicksPastCatchUp(t *testing.T) {
	t.Parallel()
	start := time.Date(2026, 1, 2, 3, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		name     string
		late     time.Duration
		enqueued bool
	}{
		{"past the limit", MaxCatchUp + time.Second, false},
		{"within the limit", MaxCatchUp - time.Second, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			b := setup(t)
			var mu sync.Mutex
			calls := 0
			clock := func() time.Time {
				mu.Lock()
				defer mu.Unlock()
				calls++
				if calls == 1 {
					return start
				}
				return start.Add(time.Hour + c.late) // the hourly tick is c.late behind
			}
			p, err := NewPeriodic(b.client, []PeriodicEntry{{Name: "hourly", Spec: "0 * * * *", Kind: "test:any", Queue: b.queue}}, b.logger, clock)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- p.Run(ctx) }()
			if c.enqueued {
				waitFor(t, "the late tick's job", func() bool {
					tasks, err := b.client.Inspector().ListPendingTasks(b.queue)
					return err == nil && len(tasks) == 1 && strings.HasPrefix(tasks[0].ID, "hourly:")
				})
			} else {
				waitFor(t, "the skip to be logged", func() bool { return strings.Contains(b.logs.String(), "skipping missed periodic ticks") })
			}
			cancel()
			if err := <-done; err != nil {
				t.Fatalf("Run = %v", err)
			}
			tasks, _ := b.client.Inspector().ListPendingTasks(b.queue)
			if c.enqueued != (len(tasks) == 1) {
				t.Fatalf("%d jobs enqueued for a tick %v late; MaxCatchUp is %v", len(tasks), c.late, MaxCatchUp)
			}
		})
	}
}
