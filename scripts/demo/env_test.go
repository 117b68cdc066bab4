package main

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tandem-ai/tandem/pipeline"
)

// The environment the demo gives the producer and the worker logs them in,
// as their roles, to a server with the credentials the scheduler writes
// under the demo's data dir; the scheduler gets no login of its own.
func TestDemoEnvLogsEachBinaryInAsItsRole(t *testing.T) {
	dir := t.TempDir()
	d := &demo{dir: dir, state: filepath.Join(dir, "state"), natsRoles: true, env: []string{"TANDEM_DATA_DIR=" + filepath.Join(dir, "state")}}
	creds, err := pipeline.LoadOrCreateNATSCredentials(pipeline.NATSCredentialsDir(d.state)) // as the scheduler does
	if err != nil {
		t.Fatal(err)
	}
	ns, err := pipeline.StartEmbeddedNATS(filepath.Join(d.dir, "nats"), pipeline.WithEmbeddedRoles(creds))
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Shutdown()
	for _, name := range []string{"producer", "worker"} {
		env := map[string]string{}
		for _, kv := range d.envFor(name) {
			k, v, _ := strings.Cut(kv, "=")
			env[k] = v
		}
		cfg := pipeline.DefaultConfig()
		if err := cfg.ApplyEnv(func(k string) (string, bool) { v, ok := env[k]; return v, ok }); err != nil {
			t.Fatal(err)
		}
		if cfg.NATSUser != name {
			t.Fatalf("%s logs in as %q", name, cfg.NATSUser)
		}
		opts, err := cfg.NATSOptions()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		bus, err := pipeline.ConnectBus(context.Background(), ns.URL(), opts...)
		if err != nil {
			t.Fatalf("%s with the demo's environment: %v", name, err)
		}
		bus.Close()
	}
	if env := strings.Join(d.envFor("scheduler"), " "); strings.Contains(env, "TANDEM_NATS_USER") {
		t.Fatalf("the scheduler got a NATS login: %s", env)
	}
	if len(d.env) != 1 {
		t.Fatalf("envFor changed the shared environment: %v", d.env)
	}
}
