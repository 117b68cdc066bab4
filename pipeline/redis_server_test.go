package pipeline

import (
	"testing"

	"github.com/tandem-ai/tandem/internal/redistest"
)

// startRedisServer runs a private redis-server with the given extra config
// lines on a free loopback port and returns the port. tls selects whether
// the port is the TLS one. The server is stopped in t.Cleanup. Tests that
// need it skip when redis-server is not on PATH (scripts/install-deps.sh
// installs it).
func startRedisServer(t *testing.T, tls bool, conf ...string) int {
	t.Helper()
	return redistest.Start(t, tls, conf...).Port
}
