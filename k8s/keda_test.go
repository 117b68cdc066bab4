package k8s

import (
	"fmt"
	"net"
	"net/url"
	"regexp"
	"strconv"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"

	"github.com/tandem-ai/tandem/pipeline"
)

// asynqList matches the Redis list names of asynq's queues that KEDA can
// measure: asynq:{QUEUE}:pending (waiting) and asynq:{QUEUE}:active
// (running).
var asynqList = regexp.MustCompile(`^asynq:\{([^{}]+)\}:(pending|active)$`)

// redisTriggerKeys are the metadata keys of KEDA's redis (list) scaler; a
// misspelt key is otherwise ignored by KEDA without a word.
var redisTriggerKeys = map[string]bool{
	"address": true, "addressFromEnv": true, "host": true, "hostFromEnv": true, "port": true, "portFromEnv": true,
	"username": true, "usernameFromEnv": true, "passwordFromEnv": true, "databaseIndex": true,
	"listName": true, "listLength": true, "activationListLength": true, "enableTLS": true, "unsafeSsl": true,
}

var resourceTriggerKeys = map[string]bool{"value": true, "containerName": true}

// checkKEDA: each ScaledObject and ScaledJob scales something in the bundle,
// on the lists of exactly the queues that its worker takes (TANDEM_QUEUES in
// the worker's resolved environment), reading the same Redis database the
// worker uses.
func checkKEDA(b *bundle) []error {
	var errs []error
	hpaTargets := make(map[string]string)
	for _, h := range all[*autoscalingv2.HorizontalPodAutoscaler](b) {
		hpaTargets[h.Spec.ScaleTargetRef.Kind+"/"+h.Spec.ScaleTargetRef.Name] = h.Name
		if d, ok := named[*appsv1.Deployment](b, h.Spec.ScaleTargetRef.Name); ok && d.Spec.Replicas != nil {
			errs = append(errs, fmt.Errorf("HorizontalPodAutoscaler %s: Deployment %s sets replicas; every kubectl apply would reset what the HPA scaled", h.Name, d.Name))
		}
	}
	for _, so := range all[*scaledObject](b) {
		where := "ScaledObject " + so.Name
		ref := so.Spec.ScaleTargetRef
		kind := ref.Kind
		if kind == "" {
			kind = "Deployment" // KEDA's default
		}
		if kind != "Deployment" || (ref.APIVersion != "" && ref.APIVersion != "apps/v1") {
			errs = append(errs, fmt.Errorf("%s: scales %s %s; Tandem's workers are apps/v1 Deployments", where, ref.APIVersion, kind))
			continue
		}
		d, ok := named[*appsv1.Deployment](b, ref.Name)
		if !ok {
			errs = append(errs, fmt.Errorf("%s: target Deployment %s is not in the bundle", where, ref.Name))
			continue
		}
		if d.Spec.Replicas != nil {
			errs = append(errs, fmt.Errorf("%s: Deployment %s sets replicas; every kubectl apply would reset what KEDA scaled", where, ref.Name))
		}
		if h, ok := hpaTargets["Deployment/"+ref.Name]; ok {
			errs = append(errs, fmt.Errorf("%s: Deployment %s is also scaled by HorizontalPodAutoscaler %s; two autoscalers fight", where, ref.Name, h))
		}
		lo, hi := int32(0), int32(100) // KEDA's defaults
		if so.Spec.MinReplicaCount != nil {
			lo = *so.Spec.MinReplicaCount
		}
		if so.Spec.MaxReplicaCount != nil {
			hi = *so.Spec.MaxReplicaCount
		}
		if lo > hi {
			errs = append(errs, fmt.Errorf("%s: minReplicaCount %d above maxReplicaCount %d", where, lo, hi))
		}
		if f := so.Spec.Fallback; f != nil && (f.Replicas < lo || f.Replicas > hi || f.FailureThreshold < 1) {
			errs = append(errs, fmt.Errorf("%s: fallback %+v outside [%d, %d] or without a failure threshold", where, *f, lo, hi))
		}
		c := envSource(&d.Spec.Template.Spec, ref.EnvSourceContainerName)
		if c == nil {
			errs = append(errs, fmt.Errorf("%s: envSourceContainerName %q is not a container of %s", where, ref.EnvSourceContainerName, d.Name))
			continue
		}
		errs = append(errs, checkTriggers(b, where, so.Spec.Triggers, c)...)
	}
	for _, sj := range all[*scaledJob](b) {
		where := "ScaledJob " + sj.Name
		spec := &sj.Spec.JobTargetRef.Template.Spec
		if spec.RestartPolicy != corev1.RestartPolicyNever && spec.RestartPolicy != corev1.RestartPolicyOnFailure {
			errs = append(errs, fmt.Errorf("%s: a Job's pods need restartPolicy Never or OnFailure", where))
		}
		c := envSource(spec, "")
		if c == nil {
			errs = append(errs, fmt.Errorf("%s: no container", where))
			continue
		}
		errs = append(errs, checkTriggers(b, where, sj.Spec.Triggers, c)...)
	}
	return errs
}

// envSource is the container KEDA resolves *FromEnv parameters in: the
// named one, or the first.
func envSource(spec *corev1.PodSpec, name string) *corev1.Container {
	for i := range spec.Containers {
		if name == "" || spec.Containers[i].Name == name {
			return &spec.Containers[i]
		}
	}
	return nil
}

func checkTriggers(b *bundle, where string, triggers []kedaTrigger, c *corev1.Container) []error {
	var errs []error
	env, err := b.env(c)
	if err != nil {
		return []error{fmt.Errorf("%s: %w", where, err)}
	}
	cfg := pipeline.DefaultConfig()
	if err := cfg.ApplyEnv(func(k string) (string, bool) { v, ok := env[k]; return v.value, ok }); err != nil {
		return []error{fmt.Errorf("%s: worker configuration: %w", where, err)}
	}
	redisURL, err := url.Parse(cfg.RedisURL)
	if err != nil {
		return []error{fmt.Errorf("%s: worker's TANDEM_REDIS_URL: %w", where, err)}
	}
	redisDB := strings.TrimPrefix(redisURL.Path, "/")
	if redisDB == "" {
		redisDB = "0"
	}
	pending := make(map[string]bool)
	names := make(map[string]bool)
	for i, tr := range triggers {
		tw := fmt.Sprintf("%s trigger %d (%s)", where, i, tr.Name)
		if tr.Name != "" {
			if names[tr.Name] {
				errs = append(errs, fmt.Errorf("%s: trigger name repeated", tw))
			}
			names[tr.Name] = true
		}
		switch tr.Type {
		case "redis":
			for k := range tr.Metadata {
				if !redisTriggerKeys[k] {
					errs = append(errs, fmt.Errorf("%s: unknown redis scaler parameter %q", tw, k))
				}
			}
			m := asynqList.FindStringSubmatch(tr.Metadata["listName"])
			if m == nil {
				errs = append(errs, fmt.Errorf("%s: listName %q is not an asynq list (asynq:{QUEUE}:pending or :active)", tw, tr.Metadata["listName"]))
				continue
			}
			queue, state := m[1], m[2]
			if _, ok := cfg.Queues[queue]; !ok {
				errs = append(errs, fmt.Errorf("%s: queue %q is not in the worker's TANDEM_QUEUES (%s)", tw, queue, pipeline.FormatQueues(cfg.Queues)))
			}
			n, err := strconv.Atoi(tr.Metadata["listLength"])
			switch {
			case err != nil || n < 1:
				errs = append(errs, fmt.Errorf("%s: listLength %q is not a positive number", tw, tr.Metadata["listLength"]))
			case state == "active" && n != cfg.Concurrency:
				errs = append(errs, fmt.Errorf("%s: an active-list trigger's listLength (%d) should be the worker's TANDEM_CONCURRENCY (%d): one replica per pod's worth of running jobs", tw, n, cfg.Concurrency))
			}
			if state == "pending" {
				pending[queue] = true
			}
			errs = append(errs, checkTriggerRedis(b, tw, tr, env, redisURL.Host, redisDB)...)
		case "cpu", "memory":
			for k := range tr.Metadata {
				if !resourceTriggerKeys[k] {
					errs = append(errs, fmt.Errorf("%s: unknown %s scaler parameter %q", tw, tr.Type, k))
				}
			}
			if tr.MetricType != autoscalingv2.UtilizationMetricType && tr.MetricType != autoscalingv2.AverageValueMetricType {
				errs = append(errs, fmt.Errorf("%s: metricType %q: want Utilization or AverageValue", tw, tr.MetricType))
			}
			if _, err := strconv.Atoi(tr.Metadata["value"]); err != nil {
				errs = append(errs, fmt.Errorf("%s: value %q is not a number", tw, tr.Metadata["value"]))
			}
		default:
			errs = append(errs, fmt.Errorf("%s: trigger type %q is not one these manifests use (redis, cpu, memory)", tw, tr.Type))
		}
	}
	for q := range cfg.Queues {
		if !pending[q] {
			errs = append(errs, fmt.Errorf("%s: the worker takes queue %q but no trigger watches asynq:{%s}:pending", where, q, q))
		}
	}
	return errs
}

// checkTriggerRedis: the trigger reads the worker's Redis, from an address
// KEDA's operator (in another namespace) can resolve, with the password from
// a TriggerAuthentication backed by the Redis Secret.
func checkTriggerRedis(b *bundle, where string, tr kedaTrigger, env map[string]envValue, workerAddr, workerDB string) []error {
	var errs []error
	addr := tr.Metadata["address"]
	if from, ok := tr.Metadata["addressFromEnv"]; ok {
		v, ok := env[from]
		if !ok || v.value == "" {
			errs = append(errs, fmt.Errorf("%s: addressFromEnv %s is not set in the container", where, from))
		}
		addr = v.value
	}
	if addr == "" {
		return append(errs, fmt.Errorf("%s: no Redis address (address or addressFromEnv)", where))
	}
	if addr != workerAddr {
		errs = append(errs, fmt.Errorf("%s: reads Redis at %s but the worker uses %s", where, addr, workerAddr))
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		errs = append(errs, fmt.Errorf("%s: Redis address %q: %w", where, addr, err))
	} else if !strings.HasSuffix(host, "."+deployNamespace+".svc") && !strings.HasSuffix(host, "."+deployNamespace+".svc.cluster.local") {
		errs = append(errs, fmt.Errorf("%s: Redis host %q does not name its namespace; KEDA's operator resolves it from its own", where, host))
	}
	db := tr.Metadata["databaseIndex"]
	if db == "" {
		db = "0"
	}
	if db != workerDB {
		errs = append(errs, fmt.Errorf("%s: databaseIndex %s but the worker's queues are in database %s", where, db, workerDB))
	}
	if tr.AuthenticationRef == nil {
		return append(errs, fmt.Errorf("%s: no authenticationRef: Redis needs its password", where))
	}
	ta, ok := named[*triggerAuthentication](b, tr.AuthenticationRef.Name)
	if !ok || (tr.AuthenticationRef.Kind != "" && tr.AuthenticationRef.Kind != "TriggerAuthentication") {
		return append(errs, fmt.Errorf("%s: TriggerAuthentication %s is not in the bundle", where, tr.AuthenticationRef.Name))
	}
	hasPassword := false
	for _, ref := range ta.Spec.SecretTargetRef {
		if ref.Parameter == "password" && ref.Name == "tandem-redis" {
			hasPassword = true
		}
	}
	if !hasPassword {
		errs = append(errs, fmt.Errorf("%s: TriggerAuthentication %s gives no password from Secret tandem-redis", where, ta.Name))
	}
	return errs
}
