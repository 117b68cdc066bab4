package generation

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the engines' figures on a worker's /metrics, labelled by
// model and, where it matters, by class.
type Metrics struct {
	capacity    *prometheus.GaugeVec
	inUse       *prometheus.GaugeVec
	waiting     *prometheus.GaugeVec
	queueWait   *prometheus.HistogramVec
	firstToken  *prometheus.HistogramVec
	tokens      *prometheus.CounterVec
	preemptions *prometheus.CounterVec
	steps       *prometheus.CounterVec
}

// latencyBuckets span a first token on an idle engine (tens of ms) to a
// batch row waiting its turn (minutes).
var latencyBuckets = []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300}

// NewMetrics makes the engines' metrics and registers them on reg (nil:
// not registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		capacity: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "tandem_engine_slots",
			Help: "Sequences the model's generation engine decodes together."}, []string{"model"}),
		inUse: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "tandem_engine_slots_in_use",
			Help: "Slots holding a sequence."}, []string{"model"}),
		waiting: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "tandem_engine_waiting_sequences",
			Help: "Sequences waiting for a slot, paused batch rows included."}, []string{"model", "class"}),
		queueWait: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "tandem_engine_queue_wait_seconds",
			Help: "From submission to a slot, per sequence.", Buckets: latencyBuckets}, []string{"model", "class"}),
		firstToken: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "tandem_engine_first_token_seconds",
			Help: "From submission to the first generated token, per call.", Buckets: latencyBuckets}, []string{"model", "class"}),
		tokens: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tandem_engine_tokens_total",
			Help: "Tokens generated."}, []string{"model", "class"}),
		preemptions: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tandem_engine_preemptions_total",
			Help: "Batch rows paused to give an interactive sequence their slot."}, []string{"model"}),
		steps: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tandem_engine_steps_total",
			Help: "Engine steps (one decode call for the live sequences, plus prompt chunks)."}, []string{"model"}),
	}
	if reg != nil {
		reg.MustRegister(m.capacity, m.inUse, m.waiting, m.queueWait, m.firstToken, m.tokens, m.preemptions, m.steps)
	}
	return m
}

// engineMetrics are one engine's series.
type engineMetrics struct {
	capacity, inUse    prometheus.Gauge
	waiting            *prometheus.GaugeVec
	queueWait          prometheus.ObserverVec
	firstToken         prometheus.ObserverVec
	tokens             *prometheus.CounterVec
	preemptions, steps prometheus.Counter
}

// forModel curries m's vectors with the model's name; a nil m gives
// series that nothing reads.
func (m *Metrics) forModel(name string) *engineMetrics {
	if m == nil {
		m = NewMetrics(nil)
	}
	l := prometheus.Labels{"model": name}
	return &engineMetrics{
		capacity:    m.capacity.With(l),
		inUse:       m.inUse.With(l),
		waiting:     m.waiting.MustCurryWith(l),
		queueWait:   m.queueWait.MustCurryWith(l),
		firstToken:  m.firstToken.MustCurryWith(l),
		tokens:      m.tokens.MustCurryWith(l),
		preemptions: m.preemptions.With(l),
		steps:       m.steps.With(l),
	}
}
