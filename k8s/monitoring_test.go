package k8s

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// asynqMetrics are the series of asynq's queue collector
// (github.com/hibiken/asynq/x/metrics) as the producer exports them
// (pipeline.QueueCollector, which renames two).
var asynqMetrics = map[string]bool{
	"asynq_tasks_enqueued": true, "asynq_queue_size": true, "asynq_queue_latency_seconds": true,
	"asynq_queue_memory_usage_approx_bytes": true, "asynq_tasks_processed_total": true,
	"asynq_tasks_failed_total": true, "asynq_queue_paused": true,
}

// processMetrics come with the Go and process collectors every binary
// registers, and Prometheus's own `up`.
var processMetrics = map[string]bool{"up": true, "process_cpu_seconds_total": true, "process_resident_memory_bytes": true}

var metricName = regexp.MustCompile(`\b(tandem_[a-z_]+|asynq_[a-z_]+|process_[a-z_]+|up)\b`)
var quotedTandemMetric = regexp.MustCompile(`"(tandem_[a-z_]+)"`)

// tandemMetrics reads the tandem_* metric names from the pipeline package's
// source, so a renamed metric breaks the dashboard check, not the
// dashboard in production.
func tandemMetrics() (map[string]bool, error) {
	files, err := filepath.Glob("../pipeline/*.go")
	if err != nil {
		return nil, err
	}
	out := make(map[string]bool)
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		for _, m := range quotedTandemMetric.FindAllStringSubmatch(string(data), -1) {
			out[m[1]] = true
		}
	}
	return out, nil
}

// checkMonitoring: ServiceMonitors scrape every metrics endpoint, and the
// Grafana dashboard parses and queries only metrics that exist.
func checkMonitoring(b *bundle) []error {
	monitors := all[*serviceMonitor](b)
	if len(monitors) == 0 {
		return nil
	}
	var errs []error
	services := all[*corev1.Service](b)
	scraped := make(map[string]bool) // service/port
	for _, sm := range monitors {
		var matched []*corev1.Service
		for _, svc := range services {
			if ok, _ := labelSelects(&sm.Spec.Selector, svc.Labels); ok {
				matched = append(matched, svc)
			}
		}
		if len(matched) == 0 {
			errs = append(errs, fmt.Errorf("ServiceMonitor %s: selects no Service", sm.Name))
		}
		for _, ep := range sm.Spec.Endpoints {
			found := false
			for _, svc := range matched {
				for _, p := range svc.Spec.Ports {
					if p.Name == ep.Port {
						found = true
						scraped[svc.Name+"/"+p.Name] = true
					}
				}
			}
			if !found {
				errs = append(errs, fmt.Errorf("ServiceMonitor %s: no selected Service has a port named %s", sm.Name, ep.Port))
			}
		}
	}
	for _, svc := range services {
		for _, p := range svc.Spec.Ports {
			metrics := p.Name == "metrics" || svc.Labels["app.kubernetes.io/component"] == "producer"
			if metrics && !scraped[svc.Name+"/"+p.Name] {
				errs = append(errs, fmt.Errorf("Service %s: port %s serves /metrics but no ServiceMonitor scrapes it", svc.Name, p.Name))
			}
		}
	}

	known, err := tandemMetrics()
	if err != nil {
		return append(errs, err)
	}
	dashboards := 0
	for _, cm := range all[*corev1.ConfigMap](b) {
		if cm.Labels["grafana_dashboard"] != "1" {
			continue
		}
		for key, data := range cm.Data {
			dashboards++
			errs = append(errs, checkDashboard(cm.Name+"/"+key, data, known)...)
		}
	}
	if dashboards == 0 {
		errs = append(errs, fmt.Errorf("ServiceMonitors but no Grafana dashboard ConfigMap (label grafana_dashboard: \"1\")"))
	}
	return errs
}

// dashboardJSON holds the parts of a Grafana dashboard the check reads.
type dashboardJSON struct {
	UID    string           `json:"uid"`
	Title  string           `json:"title"`
	Panels []dashboardPanel `json:"panels"`
}

type dashboardPanel struct {
	Title   string `json:"title"`
	Type    string `json:"type"`
	Targets []struct {
		Expr string `json:"expr"`
	} `json:"targets"`
	Panels []dashboardPanel `json:"panels"`
}

func checkDashboard(where, data string, known map[string]bool) []error {
	var d dashboardJSON
	if err := json.Unmarshal([]byte(data), &d); err != nil {
		return []error{fmt.Errorf("dashboard %s: %w", where, err)}
	}
	var errs []error
	if d.UID == "" || d.Title == "" {
		errs = append(errs, fmt.Errorf("dashboard %s: needs a uid and a title", where))
	}
	used := make(map[string]bool)
	var walk func([]dashboardPanel)
	walk = func(ps []dashboardPanel) {
		for _, p := range ps {
			walk(p.Panels)
			if p.Type == "row" {
				continue
			}
			if len(p.Targets) == 0 {
				errs = append(errs, fmt.Errorf("dashboard %s: panel %q has no query", where, p.Title))
			}
			for _, t := range p.Targets {
				for _, m := range metricName.FindAllString(t.Expr, -1) {
					base := m
					for _, suffix := range []string{"_bucket", "_sum", "_count"} {
						if b, ok := strings.CutSuffix(m, suffix); ok && known[b] {
							base = b
						}
					}
					used[base] = true
					if !known[base] && !asynqMetrics[base] && !processMetrics[base] {
						errs = append(errs, fmt.Errorf("dashboard %s: panel %q queries %s, which nothing exports", where, p.Title, m))
					}
				}
			}
		}
	}
	walk(d.Panels)
	for m := range known {
		if !used[m] {
			errs = append(errs, fmt.Errorf("dashboard %s: metric %s is exported but on no panel", where, m))
		}
	}
	return errs
}
