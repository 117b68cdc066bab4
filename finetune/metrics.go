package finetune

import "github.com/prometheus/client_golang/prometheus"

// Per-step metrics. They carry no run label: a worker trains one run at a
// time per slot and a label per run would grow without bound; the gauges
// show the latest step of any run, the counters add up all of them.
var (
	metricLoss = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "tandem_finetune_loss", Help: "Training loss of the latest fine-tuning step.",
	})
	metricTokensPerSec = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "tandem_finetune_tokens_per_second", Help: "Tokens per second of the latest fine-tuning step.",
	})
	metricLR = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "tandem_finetune_learning_rate", Help: "Learning rate of the latest fine-tuning step.",
	})
	metricSteps = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "tandem_finetune_steps_total", Help: "Fine-tuning optimizer steps taken.",
	})
	metricDevLoss = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "tandem_finetune_dev_loss", Help: "Dev loss at the latest fine-tuning epoch end.",
	})
)

// Collectors are the fine-tuning metrics, for a worker to register on the
// registry its /metrics serves.
func Collectors() []prometheus.Collector {
	return []prometheus.Collector{metricLoss, metricTokensPerSec, metricLR, metricSteps, metricDevLoss}
}

// ObserveStep records one step in the metrics.
func ObserveStep(e StepEvent) {
	metricLoss.Set(e.Loss)
	metricTokensPerSec.Set(e.TokensPerSec)
	metricLR.Set(e.LR)
	metricSteps.Inc()
}

// ObserveEpoch records an epoch end in the metrics.
func ObserveEpoch(s EpochStats) { metricDevLoss.Set(s.DevLoss) }
