package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/nats-io/nats.go"
	"github.com/redis/go-redis/v9"

	"github.com/tandem-ai/tandem/generation"
	"github.com/tandem-ai/tandem/internal/workerproc"
	"github.com/tandem-ai/tandem/jobs"
	"github.com/tandem-ai/tandem/loop"
	"github.com/tandem-ai/tandem/pipeline"
	"github.com/tandem-ai/tandem/tokenstream"
)

func TestNewServersSplitsTheInteractiveLane(t *testing.T) {
	reg := pipeline.NewRegistry()
	cfg := pipeline.DefaultConfig()
	for _, c := range []struct {
		name   string
		queues map[string]int
		poll   time.Duration
		want   int
	}{
		{"lane and the rest", cfg.Queues, 2 * time.Millisecond, 2},
		{"no lane asked", cfg.Queues, 0, 1},
		{"interactive only", map[string]int{pipeline.QueueInteractive: 1}, 2 * time.Millisecond, 1},
		{"no interactive queue", map[string]int{pipeline.QueueDefault: 1}, 2 * time.Millisecond, 1},
	} {
		c2 := cfg
		c2.Queues = c.queues
		servers, err := newServers(c2, reg, slog.Default(), c.poll, 2, nil)
		if err != nil || len(servers) != c.want {
			t.Errorf("%s: %d servers, %v; want %d", c.name, len(servers), err, c.want)
		}
	}
	if _, err := newServers(cfg, reg, slog.Default(), time.Millisecond, 0, nil); err == nil {
		t.Error("interactive concurrency 0 accepted")
	}
}

// TestWorkerBinaryStreamsAndCancelsInteractive runs the worker binary with
// its interactive lane: a generation streams over NATS and is recorded, and
// a cancel message stops a long one early.
func TestWorkerBinaryStreamsAndCancelsInteractive(t *testing.T) {
	b := setup(t)
	ns, err := pipeline.StartEmbeddedNATS(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Shutdown)
	admin := b.startWorkerProc(t, "TANDEM_NATS_URL="+ns.URL(), "TANDEM_QUEUES=interactive=1,default=1", "TANDEM_INTERACTIVE_POLL_INTERVAL=5ms").Admin
	nc, err := nats.Connect(ns.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	client, err := pipeline.NewClient(pipeline.Config{RedisURL: b.redisURL, Queues: map[string]int{"default": 1}, Concurrency: 1,
		ShutdownTimeout: time.Second, RetryBaseDelay: time.Second, RetryMaxDelay: time.Second, PollInterval: time.Second, DataDir: b.dir, DataRoot: b.dir})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()

	// run enqueues a generation and reads its stream; cancelAfter > 0 sends
	// a cancel once that many tokens arrived, sealed with the generation's
	// key as the producer sends it, or unsealed (forged) when forge is set.
	run := func(maxTokens, cancelAfter int, forge bool) []tokenstream.Message {
		t.Helper()
		id := jobs.NewCompletionID()
		ch := make(chan *nats.Msg, jobs.MaxInteractiveTokens+4)
		sub, err := nc.ChanSubscribe(pipeline.GenTokensSubject(id), ch)
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Unsubscribe()
		if err := nc.Flush(); err != nil {
			t.Fatal(err)
		}
		args := jobs.InteractiveArgs{ID: id, StreamKey: pipeline.NewSealKey(), Body: generation.CompletionsBody{Model: "builtin:small", Prompt: "Once upon a time", MaxTokens: &maxTokens}}
		if _, err := pipeline.Enqueue(context.Background(), client, args, asynq.TaskID(id)); err != nil {
			t.Fatal(err)
		}
		rd := tokenstream.Decoder{Key: args.StreamKey}
		var msgs []tokenstream.Message
		for {
			select {
			case raw := <-ch:
				m, err := rd.Decode(raw)
				if err != nil {
					t.Fatal(err)
				}
				msgs = append(msgs, m)
				if m.Type == tokenstream.TypeDone || m.Type == tokenstream.TypeError {
					return msgs
				}
				if m.Type == tokenstream.TypeToken && len(msgs)-1 == cancelAfter {
					msg := &nats.Msg{Subject: pipeline.GenCancelSubject(id), Data: []byte("{}")}
					if !forge {
						if err := pipeline.Seal(args.StreamKey, msg); err != nil {
							t.Fatal(err)
						}
					}
					if err := nc.PublishMsg(msg); err != nil {
						t.Fatal(err)
					}
				}
			case <-time.After(60 * time.Second):
				t.Fatalf("stream of %s stalled after %d messages", id, len(msgs))
			}
		}
	}
	// A cancel nobody sealed (anyone else on the bus) is ignored: the
	// generation runs on (a sealed one stops it about 2 tokens later).
	msgs := run(64, 1, true)
	if done := msgs[len(msgs)-1]; done.Type != tokenstream.TypeDone || done.FinishReason == jobs.FinishCancelled {
		t.Fatalf("generation sent a forged cancel: ended %+v; want it to run on, not cancelled", done)
	}
	msgs = run(8, 0, false)
	done := msgs[len(msgs)-1]
	if done.Type != tokenstream.TypeDone || done.Usage.CompletionTokens != len(msgs)-2 || msgs[0].Type != tokenstream.TypeStart {
		t.Fatalf("short generation: %d messages ending %+v", len(msgs), done)
	}
	first := done
	msgs = run(jobs.MaxInteractiveTokens, 3, false)
	done = msgs[len(msgs)-1]
	if done.FinishReason != jobs.FinishCancelled || done.Usage.CompletionTokens >= 500 {
		t.Fatalf("cancelled generation ended %q after %d tokens (builtin:small holds about 500)", done.FinishReason, done.Usage.CompletionTokens)
	}
	rdb := redis.NewClient(&redis.Options{Addr: testRedisAddr(), DB: testRedisDB})
	defer rdb.Close()
	recent, err := loop.NewStore(rdb, loop.StoreOptions{}).Recent(context.Background(), 10)
	if err != nil || len(recent) != 3 || recent[0].FinishReason != jobs.FinishCancelled || recent[1].Text != first.Text || recent[1].Source != jobs.SourceInteractive {
		t.Fatalf("loop records %+v, %v", recent, err)
	}
	// The model's engine ran them, and says so on /metrics.
	resp, err := http.Get("http://" + admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, want := range []string{fmt.Sprintf(`tandem_engine_slots{model="builtin:small"} %d`, generation.DefaultCPUSlots), `tandem_engine_first_token_seconds_count{class="interactive",model="builtin:small"} 3`} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if !regexp.MustCompile(`tandem_engine_tokens_total\{class="interactive",model="builtin:small"\} [1-9]`).Match(body) {
		t.Error("/metrics counts no interactive tokens")
	}
}

// TestWorkerWithoutNATSLeavesTheInteractiveQueue runs the worker binary
// with the interactive queue asked for but no NATS: it must serve its other
// queues and leave interactive jobs queued for a worker that can stream
// them, rather than fail each one.
func TestWorkerWithoutNATSLeavesTheInteractiveQueue(t *testing.T) {
	b := setup(t)
	p := workerproc.Start(t, b.bin, b.dir, []string{"TANDEM_REDIS_URL=" + b.redisURL, "TANDEM_NATS_URL=", "TANDEM_DATA_DIR=" + b.state,
		"TANDEM_QUEUES=interactive=1,default=1", "TANDEM_INTERACTIVE_POLL_INTERVAL=5ms"}, "--concurrency", "2")
	id := jobs.NewCompletionID()
	payload, err := json.Marshal(jobs.InteractiveArgs{ID: id, StreamKey: pipeline.NewSealKey(), Body: generation.CompletionsBody{Model: "builtin:tiny", Prompt: "hi"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.client.Enqueue(asynq.NewTask(jobs.KindInteractive, payload), asynq.TaskID(id), asynq.Queue(pipeline.QueueInteractive)); err != nil {
		t.Fatal(err)
	}
	// A ping on the default queue, enqueued after it, shows the worker has
	// been fetching; its lane polls interactive far more often.
	b.enqueuePing(t, "after-interactive", jobs.PingArgs{})
	waitFor(t, "the ping to complete", 30*time.Second, func() bool {
		info, err := b.insp.GetTaskInfo("default", "after-interactive")
		return err == nil && info.State == asynq.TaskStateCompleted
	})
	info, err := b.insp.GetTaskInfo(pipeline.QueueInteractive, id)
	if err != nil {
		t.Fatal(err)
	}
	if info.State != asynq.TaskStatePending {
		t.Fatalf("interactive job without NATS is %v (%s); want it left pending", info.State, info.LastErr)
	}
	if log, _ := os.ReadFile(p.Log); !strings.Contains(string(log), "not serving the interactive queue") {
		t.Fatalf("no warning in the worker's log:\n%s", log)
	}

	// Asked for the interactive queue alone, it refuses to start.
	cmd := exec.Command(b.bin, "--admin-addr", workerproc.FreeAddr(t))
	cmd.Env = append(os.Environ(), "TANDEM_REDIS_URL="+b.redisURL, "TANDEM_NATS_URL=", "TANDEM_DATA_DIR="+b.state, "TANDEM_QUEUES=interactive=1")
	if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "TANDEM_NATS_URL") {
		t.Fatalf("interactive queue alone without NATS: %v\n%s", err, out)
	}
}
