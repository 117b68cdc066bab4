package artifact

import (
	"context"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tandem-ai/tandem/pipeline"
)

func jetStream(t *testing.T, url string) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

func TestNATSStore(t *testing.T) {
	srv, err := pipeline.StartEmbeddedNATS(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	ctx := context.Background()
	s, err := Open(ctx, Options{Spec: "nats:test-artifacts", JS: jetStream(t, srv.URL())})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	testStore(t, s)
	if got := s.Location("a/b"); got != "nats-object://test-artifacts/a/b" {
		t.Fatalf("Location = %q", got)
	}

	// A second worker, on its own connection, sees the same objects: no
	// shared disk needed.
	other, err := NewNATS(ctx, jetStream(t, srv.URL()), "test-artifacts")
	if err != nil {
		t.Fatal(err)
	}
	if err := PutBytes(ctx, other, "from/other", []byte("hello")); err != nil {
		t.Fatal(err)
	}
	if got, err := ReadAll(ctx, s, "from/other", 100); err != nil || string(got) != "hello" {
		t.Fatalf("read across connections: %q, %v", got, err)
	}
}

// With NATS configured and no store named, Open picks the NATS store, so
// processes on different machines share artifacts without being told; its
// ID is the same from every connection.
func TestOpenDefaultsToNATSWhereConfigured(t *testing.T) {
	srv, err := pipeline.StartEmbeddedNATS(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	ctx := context.Background()
	var ids []string
	for range 2 {
		s, err := Open(ctx, Options{DataDir: t.TempDir(), JS: jetStream(t, srv.URL())})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		if n, ok := s.(*NATS); !ok || n.Bucket() != DefaultBucket {
			t.Fatalf("Open with NATS and no spec gave %T", s)
		}
		id, err := s.ID(ctx)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	if ids[0] != ids[1] || DescribeID(ids[0]) != "nats:"+DefaultBucket {
		t.Fatalf("IDs %q", ids)
	}
	// Without NATS the same spec is the local store.
	s, err := Open(ctx, Options{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, ok := s.(*Local); !ok {
		t.Fatalf("Open without NATS gave %T", s)
	}
}
