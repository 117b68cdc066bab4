package batch

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are a worker's batch counters:
//
//	tandem_batch_rows_total{outcome}        rows of counted chunks: completed, failed
//	tandem_batch_chunks_total{outcome}      chunk runs: counted, duplicate, refused, skipped, abandoned
//	tandem_batch_chunk_seconds              time of a chunk run that counted
//	tandem_batches_finished_total{status}   batches finalised, by final status
//
// Rows per second is rate(tandem_batch_rows_total[1m]). A nil *Metrics
// records nothing.
type Metrics struct {
	rows, chunks, finished *prometheus.CounterVec
	chunkSeconds           prometheus.Histogram
}

// NewMetrics creates the metrics and registers them with reg (nil: not
// registered); already registered ones are reused.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		rows: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tandem_batch_rows_total", Help: "Batch rows with an outcome, by outcome.",
		}, []string{"outcome"}),
		chunks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tandem_batch_chunks_total", Help: "Batch chunk runs, by outcome.",
		}, []string{"outcome"}),
		finished: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tandem_batches_finished_total", Help: "Batches finalised, by final status.",
		}, []string{"status"}),
		chunkSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "tandem_batch_chunk_seconds", Help: "Time of a batch chunk run that counted.",
			Buckets: []float64{.05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300, 900},
		}),
	}
	if reg != nil {
		m.rows = register(reg, m.rows)
		m.chunks = register(reg, m.chunks)
		m.finished = register(reg, m.finished)
		m.chunkSeconds = register(reg, m.chunkSeconds)
	}
	return m
}

func register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing
			}
		}
	}
	return c
}

func (m *Metrics) chunk(outcome string) {
	if m != nil {
		m.chunks.WithLabelValues(outcome).Inc()
	}
}

func (m *Metrics) counted(completed, failed int, seconds float64) {
	if m == nil {
		return
	}
	m.rows.WithLabelValues("completed").Add(float64(completed))
	m.rows.WithLabelValues("failed").Add(float64(failed))
	m.chunks.WithLabelValues("counted").Inc()
	m.chunkSeconds.Observe(seconds)
}

func (m *Metrics) finish(st Status) {
	if m != nil {
		m.finished.WithLabelValues(string(st)).Inc()
	}
}
