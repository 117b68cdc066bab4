package artifact

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/nats-io/nats.go/jetstream"
)

// EnvStore names the environment variable that selects the store: "local",
// "local:DIR", "nats" or "nats:BUCKET". Unset, it is "nats" where NATS is
// configured (the store every process sees) and "local" elsewhere.
const EnvStore = "TANDEM_ARTIFACT_STORE"

// Options tell Open where stores live.
type Options struct {
	// Spec is "local" (DataDir/artifacts), "local:DIR", "nats" (bucket
	// DefaultBucket), "nats:BUCKET", or "": "nats" when JS is set, else
	// "local".
	Spec string
	// DataDir is TANDEM_DATA_DIR; the local store defaults to DataDir/artifacts.
	DataDir string
	// JS is the JetStream connection a NATS store uses; nil without NATS.
	JS jetstream.JetStream
}

// Open returns the store Options.Spec names.
func Open(ctx context.Context, o Options) (Store, error) {
	kind, arg, _ := strings.Cut(strings.TrimSpace(o.Spec), ":")
	if kind == "" && o.JS != nil {
		kind = "nats"
	}
	switch kind {
	case "", "local":
		dir := arg
		if dir == "" {
			if o.DataDir == "" {
				return nil, fmt.Errorf("artifact: %s=local needs a data directory (TANDEM_DATA_DIR)", EnvStore)
			}
			dir = filepath.Join(o.DataDir, "artifacts")
		}
		return NewLocal(dir)
	case "nats":
		return NewNATS(ctx, o.JS, arg)
	default:
		return nil, fmt.Errorf("artifact: %s=%q: want local, local:DIR, nats or nats:BUCKET", EnvStore, o.Spec)
	}
}
