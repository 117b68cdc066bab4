package pipeline

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hibiken/asynq"
	asynqmetrics "github.com/hibiken/asynq/x/metrics"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/tandem-ai/tandem/limits"
)

// MaxMetricLabelSets bounds the distinct {kind, queue} pairs Metrics tracks.
// Kinds come from task types, which a bad producer controls; past the bound
// new pairs are counted under kind="other" instead of growing the series set.
const MaxMetricLabelSets = limits.MetricLabelSets

// Metrics counts job runs per kind and queue:
//
//	tandem_jobs_processed_total   runs finished, whatever the outcome
//	tandem_jobs_failed_total      runs that returned an error
//	tandem_jobs_retried_total     failed runs asynq will retry
//	tandem_job_duration_seconds   run time histogram
//
// Failed minus retried is what was archived (or revoked).
type Metrics struct {
	processed, failed, retried *prometheus.CounterVec
	duration                   *prometheus.HistogramVec

	// series caches the children of the vectors per label pair: a vector's
	// WithLabelValues hashes the labels and takes a lock on every call, the
	// cache costs one sync.Map load.
	series  sync.Map // labelPair -> *seriesSet
	nSeries atomic.Int32
}

type labelPair struct{ kind, queue string }

type seriesSet struct {
	processed, failed, retried prometheus.Counter
	duration                   prometheus.Observer
}

// NewMetrics creates the job metrics and registers them with reg (nil: not
// registered). Metrics already registered there, by an earlier NewMetrics,
// are reused, so calling it twice with one registry is safe.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	labels := []string{"kind", "queue"}
	m := &Metrics{
		processed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tandem_jobs_processed_total", Help: "Job runs finished, whatever the outcome.",
		}, labels),
		failed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tandem_jobs_failed_total", Help: "Job runs that returned an error.",
		}, labels),
		retried: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tandem_jobs_retried_total", Help: "Failed job runs that will be retried.",
		}, labels),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "tandem_job_duration_seconds", Help: "Time a job run took.",
			// From an interactive generation (tens of ms) to a fine-tune epoch (an hour).
			Buckets: []float64{.005, .025, .1, .25, .5, 1, 2.5, 10, 30, 60, 300, 900, 3600},
		}, labels),
	}
	if reg != nil {
		m.processed = registerOrReuse(reg, m.processed)
		m.failed = registerOrReuse(reg, m.failed)
		m.retried = registerOrReuse(reg, m.retried)
		m.duration = registerOrReuse(reg, m.duration)
	}
	return m
}

func registerOrReuse[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing
			}
		}
		// Same name, different shape: a programming error in metric naming.
		panic("pipeline.NewMetrics: " + err.Error())
	}
	return c
}

func (m *Metrics) seriesFor(kind, queue string) *seriesSet {
	key := labelPair{kind, queue}
	if s, ok := m.series.Load(key); ok {
		return s.(*seriesSet)
	}
	if m.nSeries.Load() >= MaxMetricLabelSets {
		key.kind = "other"
		if s, ok := m.series.Load(key); ok {
			return s.(*seriesSet)
		}
	}
	s := &seriesSet{
		processed: m.processed.WithLabelValues(key.kind, key.queue),
		failed:    m.failed.WithLabelValues(key.kind, key.queue),
		retried:   m.retried.WithLabelValues(key.kind, key.queue),
		duration:  m.duration.WithLabelValues(key.kind, key.queue),
	}
	if prev, loaded := m.series.LoadOrStore(key, s); loaded {
		return prev.(*seriesSet)
	}
	m.nSeries.Add(1)
	return s
}

// Middleware records each run. Put it outside Recover so panics count as
// failures (DefaultMiddleware does).
func (m *Metrics) Middleware() asynq.MiddlewareFunc {
	return func(next asynq.Handler) asynq.Handler {
		return asynq.HandlerFunc(func(ctx context.Context, t *asynq.Task) error {
			start := time.Now()
			err := next.ProcessTask(ctx, t)
			queue, _ := asynq.GetQueueName(ctx)
			s := m.seriesFor(t.Type(), queue)
			s.processed.Inc()
			s.duration.Observe(time.Since(start).Seconds())
			if err != nil {
				s.failed.Inc()
				if classify(ctx, err) == outcomeRetry {
					s.retried.Inc()
				}
			}
			return err
		})
	}
}

// QueueCollector exports queue depths per state (pending, active, scheduled,
// retry, archived, completed), sizes, latency and asynq's processed/failed
// counters, read from Redis at each scrape. The series are asynq's own
// collector's, under its asynq_ names, but for two gauges that asynq names
// as counters are named (`promtool check metrics` refuses a gauge named
// ..._total): asynq_tasks_enqueued_total is asynq_tasks_enqueued here, and
// asynq_queue_paused_total asynq_queue_paused.
func QueueCollector(insp *asynq.Inspector) prometheus.Collector {
	reg := prometheus.NewRegistry()
	reg.MustRegister(asynqmetrics.NewQueueMetricsCollector(insp))
	return queueCollector{reg}
}

// queueGauges renames the gauges of asynq's collector named as counters.
var queueGauges = map[string]string{"asynq_tasks_enqueued_total": "asynq_tasks_enqueued", "asynq_queue_paused_total": "asynq_queue_paused"}

// queueCollector is asynq's collector, gathered and exported again with
// queueGauges's names. It describes nothing: an unchecked collector.
type queueCollector struct{ asynq prometheus.Gatherer }

func (queueCollector) Describe(chan<- *prometheus.Desc) {}

func (c queueCollector) Collect(ch chan<- prometheus.Metric) {
	mfs, err := c.asynq.Gather()
	if err != nil {
		ch <- prometheus.NewInvalidMetric(prometheus.NewDesc("asynq_queue_metrics", "asynq's queue collector", nil, nil), err)
	}
	for _, mf := range mfs {
		name, kind := mf.GetName(), prometheus.GaugeValue
		if renamed, ok := queueGauges[name]; ok {
			name = renamed
		} else if mf.GetType() == dto.MetricType_COUNTER {
			kind = prometheus.CounterValue
		}
		for _, m := range mf.GetMetric() {
			var labels, values []string
			for _, l := range m.GetLabel() {
				labels, values = append(labels, l.GetName()), append(values, l.GetValue())
			}
			value := m.GetGauge().GetValue() + m.GetCounter().GetValue() // the one its type has
			ch <- prometheus.MustNewConstMetric(prometheus.NewDesc(name, mf.GetHelp(), labels, nil), kind, value, values...)
		}
	}
}
