package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/tandem-ai/tandem/pipeline"
)

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// The scheduler's --embedded-nats server admits only the roles, with the
// passwords it wrote (0600) under the data dir: a process without them
// cannot connect, and a worker that reads its file can publish tokens but
// not cancels.
func TestEmbeddedNATSRequiresRoleCredentials(t *testing.T) {
	dataDir, natsAddr, adminAddr := t.TempDir(), freePort(t), freePort(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		// As `make demo` runs it: TANDEM_NATS_URL names the embedded server.
		done <- run(ctx, []string{"--embedded-nats", natsAddr, "--nats-url", "nats://" + natsAddr, "--admin-addr", adminAddr, "--data-dir", dataDir,
			"--redis-url", fmt.Sprintf("redis://%s/%d", testRedisAddr(), testRedisDB), "--recs-rebuild", "off"}, io.Discard)
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("scheduler: %v", err)
		}
	}()
	url := "nats://" + natsAddr
	credsDir := pipeline.NATSCredentialsDir(dataDir)
	workerFile := filepath.Join(credsDir, pipeline.RoleWorker)
	// The admin server answers once the scheduler has connected as its
	// role, made the streams and started its consumers.
	waitFor(t, "the scheduler's /healthz", func() bool {
		select {
		case err := <-done:
			t.Fatalf("scheduler stopped: %v", err)
		default:
		}
		resp, err := http.Get("http://" + adminAddr + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	pw, err := pipeline.ReadNATSPasswordFile(workerFile)
	if err != nil {
		t.Fatal(err)
	}
	quiet := nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {})
	worker, err := nats.Connect(url, append(pipeline.NATSRoleOptions(pipeline.RoleWorker, pw), quiet)...)
	if err != nil {
		t.Fatalf("worker with its password file: %v", err)
	}
	defer worker.Close()
	for _, role := range pipeline.NATSRoles() {
		st, err := os.Stat(filepath.Join(credsDir, role))
		if err != nil || st.Mode().Perm() != 0o600 {
			t.Errorf("credentials of %s: %v, %v; want a 0600 file", role, st, err)
		}
	}

	if nc, err := nats.Connect(url, nats.Timeout(5*time.Second)); err == nil {
		nc.Close()
		t.Fatal("an anonymous client connected to the embedded server")
	} else if !strings.Contains(err.Error(), "Authorization Violation") {
		t.Fatalf("anonymous client: %v; want an authorization violation", err)
	}
	if err := worker.Publish("tandem.gen.cmpl-x.tokens", []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	if err := worker.Publish("tandem.gen.cmpl-x.cancel", nil); err != nil {
		t.Fatal(err)
	}
	if err := worker.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := worker.LastError(); err == nil || !strings.Contains(err.Error(), `Permissions Violation for Publish to "tandem.gen.cmpl-x.cancel"`) {
		t.Fatalf("worker publishing a cancel: last error %v; want a permissions violation", err)
	}
}
