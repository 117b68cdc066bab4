package pipeline

import (
	"strconv"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestMetricsReuseAndLabelCap(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	m1 := NewMetrics(reg)
	m2 := NewMetrics(reg) // a second worker component on the same registry
	if m1.processed != m2.processed || m1.duration != m2.duration {
		t.Fatal("second NewMetrics did not reuse the registered collectors")
	}
	for i := 0; i < MaxMetricLabelSets+50; i++ {
		m1.seriesFor("kind:"+strconv.Itoa(i), "q").processed.Inc()
	}
	if n := testutil.CollectAndCount(m1.processed); n != MaxMetricLabelSets+1 {
		t.Errorf("%d series; want the cap plus one for kind=other", n)
	}
	if v := testutil.ToFloat64(m1.processed.WithLabelValues("other", "q")); v != 50 {
		t.Errorf("kind=other counted %v; want 50", v)
	}
}
