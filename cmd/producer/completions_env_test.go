package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tandem-ai/tandem/auth"
	"github.com/tandem-ai/tandem/dataroot/dataroottest"
	"github.com/tandem-ai/tandem/generation"
	"github.com/tandem-ai/tandem/jobs"
	"github.com/tandem-ai/tandem/pipeline"
)

// interactiveTestRedisDB is the Redis database of the interactive tests;
// they flush only it.
const interactiveTestRedisDB = 3

// genEnv is one interactive pipeline: Redis, an embedded nats-server, the
// producer's completion routes on an httptest server, and (after
// startWorker) an in-process asynq server running the real handler on the
// interactive queue.
type genEnv struct {
	cfg    pipeline.Config
	rdb    *redis.Client
	ns     *pipeline.EmbeddedNATS
	creds  pipeline.NATSCredentials // the server admits only the roles
	api    *completionsAPI
	srv    *httptest.Server
	logger *slog.Logger
}

// newGenEnv builds the environment over redisURL, or over this package's
// interactive test database when redisURL is "".
func newGenEnv(t testing.TB, redisURL string) *genEnv {
	t.Helper()
	if redisURL == "" {
		redisURL = fmt.Sprintf("redis://%s/%d", testRedisAddr(), interactiveTestRedisDB)
	}
	opt, err := redis.ParseURL(redisURL)
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(opt)
	if err := rdb.FlushDB(context.Background()).Err(); err != nil {
		t.Fatalf("Redis at %s is needed: %v", pipeline.RedactURL(redisURL), err)
	}
	t.Cleanup(func() {
		_ = rdb.FlushDB(context.Background()).Err()
		rdb.Close()
	})
	creds, err := pipeline.LoadOrCreateNATSCredentials(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ns, err := pipeline.StartEmbeddedNATS(t.TempDir(), pipeline.WithEmbeddedRoles(creds))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Shutdown)
	cfg := pipeline.DefaultConfig()
	cfg.RedisURL, cfg.NATSURL, cfg.DataDir = redisURL, ns.URL(), t.TempDir()
	cfg.NATSUser, cfg.NATSPassword = pipeline.RoleProducer, creds[pipeline.RoleProducer]
	cfg.Queues, cfg.PollInterval, cfg.Concurrency = map[string]int{pipeline.QueueInteractive: 1}, 2*time.Millisecond, 2
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	client, err := newClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	api, err := newCompletionsAPI(context.Background(), cfg, client, logger)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(api.Close)
	mux := http.NewServeMux()
	routes := &apiServer{client: client, logger: logger, completions: api}
	routes.completionsRoutes(mux)
	routes.embeddingsRoutes(mux)
	srv := httptest.NewServer(openGuard(t, mux))
	t.Cleanup(srv.Close)
	return &genEnv{cfg: cfg, rdb: rdb, ns: ns, creds: creds, api: api, srv: srv, logger: logger}
}

// startWorker runs the real interactive handler in an asynq server of its
// own, as the worker's interactive lane does; it returns the worker's deps.
func (e *genEnv) startWorker(t testing.TB) *jobs.Deps {
	t.Helper()
	deps := jobs.NewDeps(e.logger)
	bus := e.connect(t, pipeline.RoleWorker)
	deps.Bus, deps.Redis = bus, e.rdb
	// Tests keep their model directories in t.TempDir()s.
	dataroottest.Install(t, deps, os.TempDir())
	reg := pipeline.NewRegistry()
	jobs.RegisterAll(reg, deps)
	e.serve(t, reg)
	return deps
}

// connect opens a bus to the environment's server as role, closed when the
// test ends (after the server stops: cleanups run last first).
func (e *genEnv) connect(t testing.TB, role string) *pipeline.Bus {
	t.Helper()
	bus, err := pipeline.ConnectBus(context.Background(), e.ns.URL(), pipeline.NATSRoleOptions(role, e.creds[role])...)
	if err != nil {
		t.Fatalf("connect as %s: %v", role, err)
	}
	t.Cleanup(bus.Close)
	return bus
}

// serve runs reg's handlers in an asynq server on the environment's queues
// until the test ends.
func (e *genEnv) serve(t testing.TB, reg *pipeline.Registry) {
	t.Helper()
	srv, err := pipeline.NewServer(e.cfg, reg, e.logger)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	waitWorkerListed(t, e)
}

// post sends body to path and returns the response; the caller closes it.
func (e *genEnv) post(t testing.TB, ctx context.Context, path, body string) *http.Response {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.srv.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// postJSON sends body and decodes a JSON answer into out (when non-nil);
// it returns the status and the raw answer.
func (e *genEnv) postJSON(t testing.TB, path, body string, out any) (int, string) {
	t.Helper()
	resp := e.post(t, context.Background(), path, body)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if out != nil && resp.StatusCode/100 == 2 {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("POST %s: %v in %s", path, err, b)
		}
	}
	return resp.StatusCode, string(b)
}

// streamed is what one streamed completion sent.
type streamed struct {
	id     string
	texts  []string      // one per token chunk, in arrival order
	tokens []chunkChoice // the token chunks' choices, in arrival order
	// finishes holds each choice's finish reason, by index, from the
	// chunks that end the choices; last is the last of those chunks.
	finishes map[int]string
	last     completionChunk
	// usage is that of the usage-only last chunk, when one came.
	usage  *generation.Usage
	status int
	err    error
}

func (s streamed) text() string { return strings.Join(s.texts, "") }

// choiceText is the text streamed for choice i.
func (s streamed) choiceText(i int) string {
	var b strings.Builder
	for _, c := range s.tokens {
		if c.Index == i {
			b.WriteString(c.Text)
		}
	}
	return b.String()
}

// stream posts a streamed completion and reads it to [DONE]; after
// (optional) runs on the first token chunk and may stop the read by
// returning an error.
func (e *genEnv) stream(t testing.TB, ctx context.Context, body string, after func() error) streamed {
	t.Helper()
	resp := e.post(t, ctx, "/v1/completions", body)
	defer resp.Body.Close()
	out := streamed{status: resp.StatusCode}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		out.err = fmt.Errorf("HTTP %d: %s", resp.StatusCode, b)
		return out
	}
	out.err = readSSE(resp.Body, func(data []byte) error {
		var c completionChunk
		if err := json.Unmarshal(data, &c); err != nil {
			return err
		}
		if c.Error != nil {
			return fmt.Errorf("%s: %s", c.Error.Code, c.Error.Message)
		}
		out.id = c.ID
		if len(c.Choices) == 0 { // stream_options.include_usage's last chunk
			out.usage = c.Usage
			return nil
		}
		if ch := c.Choices[0]; ch.FinishReason != nil {
			if out.finishes == nil {
				out.finishes = map[int]string{}
			}
			out.finishes[ch.Index] = *ch.FinishReason
			out.last = c
			return nil
		}
		out.texts = append(out.texts, c.Choices[0].Text)
		out.tokens = append(out.tokens, c.Choices[0])
		if len(out.texts) == 1 && after != nil {
			return after()
		}
		return nil
	})
	return out
}

// openGuard puts h behind the API's token guard with no token file, as
// `producer serve` runs on a laptop: every request is the anonymous
// principal with every right (its warning about that is not logged).
func openGuard(t testing.TB, h http.Handler) http.Handler {
	t.Helper()
	authn, err := auth.New(auth.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	return authn.Protect(auth.ByMethod, h)
}
