package main

import (
	"fmt"
	"strings"
	"testing"

	"github.com/tandem-ai/tandem/internal/workerproc"
)

// TestMetricsPassPromlint runs the scheduler binary and lints its /metrics
// as `promtool check metrics` does.
func TestMetricsPassPromlint(t *testing.T) {
	env := []string{fmt.Sprintf("TANDEM_REDIS_URL=redis://%s/%d", testRedisAddr(), testRedisDB), "TANDEM_NATS_URL=", "TANDEM_DATA_DIR=" + t.TempDir()}
	p := workerproc.Start(t, workerproc.BuildCmd(t, "scheduler"), t.TempDir(), env, "--recs-rebuild", "off")
	if body := workerproc.CheckMetrics(t, p.Admin); !strings.Contains(body, "\ngo_goroutines") {
		t.Errorf("/metrics lacks go_goroutines:\n%s", body)
	}
}
