package loop

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tandem-ai/tandem/feedback"
)

// collectTimeout bounds the Redis read of one scrape.
const collectTimeout = 3 * time.Second

// Collector exports the all-time loop metrics from Redis at every scrape,
// so every producer replica reports the same figures (aggregate them with
// max, not sum). Labels: scope (all, template, topic, model) and name
// (the template, topic or model; "all" for scope all).
type Collector struct {
	m                            *Metrics
	feedback, ratingSum, editSum *prometheus.Desc
	acceptance, rating, editDist *prometheus.Desc
	up                           *prometheus.Desc
}

var _ prometheus.Collector = (*Collector)(nil)

// NewCollector returns a Collector reading m.
func NewCollector(m *Metrics) *Collector {
	labels := []string{"scope", "name"}
	return &Collector{
		m:          m,
		feedback:   prometheus.NewDesc("tandem_loop_feedback_total", "Generation feedback events counted, by action.", append(labels, "action"), nil),
		ratingSum:  prometheus.NewDesc("tandem_loop_rating_points", "Sum of the ratings given, each at its latest value, so a revised rating may lower it (divide by the rate action's count for the mean).", labels, nil),
		editSum:    prometheus.NewDesc("tandem_loop_edit_distance_total", "Sum of the normalised word edit distances of edits (divide by the edit action's count for the mean).", labels, nil),
		acceptance: prometheus.NewDesc("tandem_loop_acceptance_ratio", "(accepts + edits) / (accepts + edits + rejects + regenerations), all time.", labels, nil),
		rating:     prometheus.NewDesc("tandem_loop_rating_mean", "Mean rating, all time.", labels, nil),
		editDist:   prometheus.NewDesc("tandem_loop_edit_distance_mean", "Mean normalised word edit distance of edits, all time.", labels, nil),
		up:         prometheus.NewDesc("tandem_loop_metrics_up", "1 when the last scrape read the loop metrics from Redis.", nil, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.feedback, c.ratingSum, c.editSum, c.acceptance, c.rating, c.editDist, c.up} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), collectTimeout)
	defer cancel()
	b, err := c.m.Totals(ctx)
	if err != nil {
		ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, 0)
		return
	}
	ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, 1)
	c.emit(ch, ScopeAll, ScopeAll, b.All)
	for scope, names := range map[string]map[string]Stats{ScopeTemplate: b.Template, ScopeTopic: b.Topic, ScopeModel: b.Model} {
		for name, s := range names {
			c.emit(ch, scope, name, s)
		}
	}
}

func (c *Collector) emit(ch chan<- prometheus.Metric, scope, name string, s Stats) {
	for action, n := range map[string]int64{feedback.ActionAccept: s.Accept, feedback.ActionReject: s.Reject, feedback.ActionRate: s.Rate, feedback.ActionEdit: s.Edit, feedback.ActionRegenerate: s.Regenerate} {
		ch <- prometheus.MustNewConstMetric(c.feedback, prometheus.CounterValue, float64(n), scope, name, action)
	}
	ch <- prometheus.MustNewConstMetric(c.ratingSum, prometheus.GaugeValue, s.RatingSum, scope, name)
	ch <- prometheus.MustNewConstMetric(c.editSum, prometheus.CounterValue, s.EditDistanceSum, scope, name)
	for d, v := range map[*prometheus.Desc]*float64{c.acceptance: s.AcceptanceRate, c.rating: s.MeanRating, c.editDist: s.MeanEditDistance} {
		if v != nil {
			ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, *v, scope, name)
		}
	}
}
