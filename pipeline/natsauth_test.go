package pipeline

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// startRoleNATS starts an embedded server that requires the roles, with
// credentials generated in a temp dir, and returns it with them.
func startRoleNATS(t *testing.T) (*EmbeddedNATS, NATSCredentials) {
	t.Helper()
	creds, err := LoadOrCreateNATSCredentials(filepath.Join(t.TempDir(), "creds"))
	if err != nil {
		t.Fatal(err)
	}
	return startTestNATS(t, WithEmbeddedRoles(creds)), creds
}

// connectRole opens a plain connection as role, closed when the test ends.
func connectRole(t *testing.T, url, role string, creds NATSCredentials) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(url, NATSRoleOptions(role, creds[role])...)
	if err != nil {
		t.Fatalf("connect as %s: %v", role, err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// violation reports whether the server refused the last operation on subject
// with a permissions violation; the flush makes the server's answer to the
// operation arrive first.
func violation(t *testing.T, nc *nats.Conn, subject string) bool {
	t.Helper()
	if err := nc.Flush(); err != nil {
		t.Fatalf("flush: %v", err)
	}
	err := nc.LastError()
	return err != nil && strings.Contains(err.Error(), "Permissions Violation") && strings.Contains(err.Error(), `"`+subject+`"`)
}

// Without the right credentials nobody gets on the bus.
func TestEmbeddedRolesRequireCredentials(t *testing.T) {
	srv, creds := startRoleNATS(t)
	for name, opts := range map[string][]nats.Option{
		"anonymous":               nil,
		"wrong password":          {nats.UserInfo(RoleWorker, "guess")},
		"another role's password": {nats.UserInfo(RoleWorker, creds[RoleProducer])},
		"unknown user":            {nats.UserInfo("tandem", creds[RoleProducer])},
	} {
		nc, err := nats.Connect(srv.URL(), opts...)
		if err == nil {
			nc.Close()
			t.Errorf("%s: connected; want an authorization error", name)
		} else if !strings.Contains(err.Error(), "Authorization Violation") {
			t.Errorf("%s: %v; want an authorization violation", name, err)
		}
	}
}

// Each role may publish and subscribe where the table says, and nowhere
// else, against a real server.
func TestNATSRolePermissions(t *testing.T) {
	srv, creds := startRoleNATS(t)
	type op struct {
		role, action, subject string
		allowed               bool
	}
	cases := []op{
		// Tokens: only workers publish, only the producer reads.
		{RoleWorker, "pub", "tandem.gen.cmpl-1.tokens", true},
		{RoleProducer, "pub", "tandem.gen.cmpl-2.tokens", false},
		{RoleScheduler, "pub", "tandem.gen.cmpl-3.tokens", false},
		{RoleObserver, "pub", "tandem.gen.cmpl-4.tokens", false},
		{RoleProducer, "sub", "tandem.gen.*.tokens", true},
		{RoleWorker, "sub", "tandem.gen.cmpl-5.tokens", false},
		{RoleScheduler, "sub", "tandem.gen.*.tokens", false},
		{RoleObserver, "sub", "tandem.gen.>", false},
		// Cancels: only the producer publishes, workers listen.
		{RoleProducer, "pub", "tandem.gen.cmpl-6.cancel", true},
		{RoleWorker, "pub", "tandem.gen.cmpl-7.cancel", false},
		{RoleObserver, "pub", "tandem.gen.cmpl-8.cancel", false},
		{RoleWorker, "sub", "tandem.gen.*.cancel", true},
		{RoleObserver, "sub", "tandem.gen.*.cancel", false},
		// Feedback: only the producer publishes.
		{RoleProducer, "pub", "tandem.feedback.rating", true},
		{RoleWorker, "pub", "tandem.feedback.rating", false},
		{RoleScheduler, "pub", "tandem.feedback.edit", false},
		{RoleObserver, "pub", "tandem.feedback.accept", false},
		// Progress: workers (and the producer, for batches) publish;
		// producer and observer follow.
		{RoleWorker, "pub", "tandem.batch.b1.progress", true},
		{RoleWorker, "pub", "tandem.finetune.r1.progress", true},
		{RoleObserver, "pub", "tandem.batch.b2.progress", false},
		{RoleObserver, "sub", "tandem.batch.*.progress", true},
		{RoleObserver, "sub", "tandem.finetune.*.progress", true},
		// Events and dead letters.
		{RoleWorker, "pub", "tandem.events.batch.completed", true},
		{RoleProducer, "pub", "tandem.events.batch.completed", false},
		{RoleScheduler, "pub", "tandem.dlq.recsys", true},
		{RoleWorker, "pub", "tandem.dlq.recsys", false},
		// JetStream: nobody but the scheduler destroys Tandem's streams.
		{RoleWorker, "pub", "$JS.API.STREAM.DELETE.FEEDBACK", false},
		{RoleProducer, "pub", "$JS.API.STREAM.PURGE.EVENTS", false},
		{RoleProducer, "pub", "$JS.API.CONSUMER.DELETE.FEEDBACK.recsys", false},
		{RoleObserver, "pub", "$JS.API.STREAM.INFO.FEEDBACK", false},
		{RoleObserver, "pub", "$JS.API.CONSUMER.CREATE.FEEDBACK", false},
		{RoleObserver, "pub", "$JS.API.STREAM.INFO.EVENTS", true},
		{RoleObserver, "pub", "$JS.API.STREAM.MSG.GET.EVENTS", true},
		{RoleObserver, "pub", "$JS.API.STREAM.MSG.GET.FEEDBACK", false},
		// No consumers for the observer: a push consumer's deliveries
		// would go to any subject it names, cancels included.
		{RoleObserver, "pub", "$JS.API.CONSUMER.CREATE.EVENTS", false},
		{RoleObserver, "pub", "$JS.API.CONSUMER.DURABLE.CREATE.EVENTS.x", false},
		// Inboxes: each role reads its own replies only.
		{RoleObserver, "sub", "_INBOX_producer.>", false},
		{RoleWorker, "sub", "_INBOX.>", false},
		{RoleProducer, "sub", "_INBOX_producer.x", true},
		// Nothing outside the table.
		{RoleWorker, "pub", "anything.else", false},
		{RoleProducer, "sub", ">", false},
	}
	conns := map[string]*nats.Conn{}
	for _, c := range cases {
		// A fresh connection per role and a distinct subject per case,
		// since the last error of a connection stays until the next one.
		nc := conns[c.role]
		if nc == nil {
			nc = connectRole(t, srv.URL(), c.role, creds)
			conns[c.role] = nc
		}
		switch c.action {
		case "pub":
			if err := nc.Publish(c.subject, []byte("{}")); err != nil {
				t.Fatal(err)
			}
		case "sub":
			sub, err := nc.SubscribeSync(c.subject)
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = sub.Unsubscribe() }()
		}
		if got := !violation(t, nc, c.subject); got != c.allowed {
			t.Errorf("%s may %s %s: %v, want %v", c.role, c.action, c.subject, got, c.allowed)
		}
	}
}

// The roles do their real work under their permissions: the scheduler
// creates the streams and consumes feedback the producer published (acks
// included), a worker's token reaches the producer, a worker's object is
// read back by the producer, and the observer reads lifecycle events.
func TestNATSRolesCarryThePipeline(t *testing.T) {
	srv, creds := startRoleNATS(t)
	ctx := testContext(t)
	connect := func(role string) *Bus {
		t.Helper()
		b, err := ConnectBus(ctx, srv.URL(), NATSRoleOptions(role, creds[role])...)
		if err != nil {
			t.Fatalf("ConnectBus as %s: %v", role, err)
		}
		t.Cleanup(b.Close)
		return b
	}
	sched, prod, work, obs := connect(RoleScheduler), connect(RoleProducer), connect(RoleWorker), connect(RoleObserver)
	if err := sched.EnsureStreams(ctx); err != nil {
		t.Fatalf("scheduler EnsureStreams: %v", err)
	}
	for name, b := range map[string]*Bus{"producer": prod, "worker": work} {
		if err := b.EnsureStreams(ctx); err != nil {
			t.Fatalf("%s EnsureStreams: %v", name, err)
		}
	}

	if err := prod.Publish(ctx, FeedbackSubject("rating"), "fb-1", feedbackEvent{User: "u", Item: "i", Rating: 4}); err != nil {
		t.Fatalf("producer publishes feedback: %v", err)
	}
	got := make(chan Delivery, 1)
	stop, err := sched.Consume(ctx, ConsumerSpec{Stream: StreamFeedback, Durable: "recsys", Logger: quietLogger()},
		func(_ context.Context, d Delivery) error { got <- d; return nil })
	if err != nil {
		t.Fatalf("scheduler consumes feedback: %v", err)
	}
	if d := receive(t, got, "feedback at the scheduler"); d.MsgID != "fb-1" {
		t.Fatalf("scheduler got %q, want fb-1", d.MsgID)
	}
	stop()
	eventually(t, "the scheduler's ack", func() bool { return consumerInfo(t, sched, StreamFeedback, "recsys").AckFloor.Stream == 1 })

	tokens := make(chan []byte, 1)
	stopTokens, err := prod.SubscribeCore(GenTokensSubject("cmpl-9"), func(_ string, data []byte) { tokens <- data })
	if err != nil {
		t.Fatal(err)
	}
	defer stopTokens()
	if err := prod.NC.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := work.PublishCore(GenTokensSubject("cmpl-9"), map[string]string{"type": "start"}); err != nil {
		t.Fatal(err)
	}
	if data := receive(t, tokens, "a worker's token at the producer"); !bytes.Contains(data, []byte("start")) {
		t.Fatalf("producer got %s", data)
	}

	obj, err := work.JS.CreateObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: "roles-test", Storage: jetstream.FileStorage})
	if err != nil {
		t.Fatalf("worker creates the artifact bucket: %v", err)
	}
	payload := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB: several chunks, flow control
	if _, err := obj.PutBytes(ctx, "chunk-1", payload); err != nil {
		t.Fatalf("worker puts an object: %v", err)
	}
	pobj, err := prod.JS.ObjectStore(ctx, "roles-test")
	if err != nil {
		t.Fatal(err)
	}
	back, err := pobj.GetBytes(ctx, "chunk-1")
	if err != nil || !bytes.Equal(back, payload) {
		t.Fatalf("producer reads the object: %d bytes, %v", len(back), err)
	}

	if err := work.Publish(ctx, EventSubject("batch.completed"), "ev-1", map[string]string{"id": "b1"}); err != nil {
		t.Fatalf("worker publishes an event: %v", err)
	}
	events, err := obs.JS.Stream(ctx, StreamEvents)
	if err != nil {
		t.Fatalf("observer looks up EVENTS: %v", err)
	}
	if m, err := events.GetMsg(ctx, 1); err != nil || m.Header.Get(jetstream.MsgIDHeader) != "ev-1" {
		t.Fatalf("observer reads event 1: %v, %v", m, err)
	}
	// The server drops the refused request: the observer waits in vain.
	short, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if _, err := obs.JS.CreateOrUpdateConsumer(short, StreamFeedback, jetstream.ConsumerConfig{Durable: "snoop"}); err == nil || !violation(t, obs.NC, "$JS.API.CONSUMER.CREATE.FEEDBACK.snoop") {
		t.Fatal("observer created a consumer on FEEDBACK; want a permissions error")
	}
}

// Passwords are generated once, 0600, and kept across restarts; a file
// others may read is refused with its name.
func TestLoadOrCreateNATSCredentials(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "creds")
	first, err := LoadOrCreateNATSCredentials(dir)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, role := range NATSRoles() {
		pw := first[role]
		if len(pw) != 2*natsPasswordBytes || seen[pw] {
			t.Errorf("role %s: password %q; want %d fresh hex digits", role, pw, 2*natsPasswordBytes)
		}
		seen[pw] = true
		st, err := os.Stat(filepath.Join(dir, role))
		if err != nil || st.Mode().Perm() != 0o600 {
			t.Errorf("role %s: file %v, %v; want mode 0600", role, st, err)
		}
	}
	again, err := LoadOrCreateNATSCredentials(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, role := range NATSRoles() {
		if again[role] != first[role] {
			t.Errorf("role %s: password changed across a restart", role)
		}
	}
	worker := filepath.Join(dir, RoleWorker)
	if err := os.Chmod(worker, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrCreateNATSCredentials(dir); err == nil || !strings.Contains(err.Error(), worker) || !strings.Contains(err.Error(), "0600") {
		t.Fatalf("world-readable %s: %v; want an error naming it and 0600", worker, err)
	}
}

// A process finds its password through TANDEM_NATS_USER and
// TANDEM_NATS_PASSWORD_FILE and connects as its role.
func TestNATSOptionsPasswordFile(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "creds")
	creds, err := LoadOrCreateNATSCredentials(dir)
	if err != nil {
		t.Fatal(err)
	}
	srv := startTestNATS(t, WithEmbeddedRoles(creds))
	cfg := DefaultConfig()
	cfg.NATSURL, cfg.NATSUser, cfg.NATSPasswordFile = srv.URL(), RoleWorker, filepath.Join(dir, RoleWorker)
	if err := cfg.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	opts, err := cfg.NATSOptions()
	if err != nil {
		t.Fatalf("NATSOptions: %v", err)
	}
	b, err := ConnectBus(testContext(t), cfg.NATSURL, opts...)
	if err != nil {
		t.Fatalf("ConnectBus as the worker: %v", err)
	}
	defer b.Close()
	if err := b.PublishCore(GenTokensSubject("cmpl-1"), map[string]int{"seq": 0}); err != nil || violation(t, b.NC, "tandem.gen.cmpl-1.tokens") {
		t.Fatalf("the worker publishes tokens: %v, %v", err, b.NC.LastError())
	}
	cfg.NATSPassword = "also"
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "NATSPasswordFile") {
		t.Fatalf("password and password file: %v; want an error naming NATSPasswordFile", err)
	}
}
