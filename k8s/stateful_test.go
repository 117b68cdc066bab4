package k8s

import (
	"fmt"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"

	natsserver "github.com/nats-io/nats-server/v2/server"

	"github.com/tandem-ai/tandem/pipeline"
)

// statefulByComponent returns the StatefulSet of a component (redis, nats).
func statefulByComponent(b *bundle, component string) *appsv1.StatefulSet {
	for _, s := range all[*appsv1.StatefulSet](b) {
		if s.Spec.Template.Labels["app.kubernetes.io/component"] == component {
			return s
		}
	}
	return nil
}

// mountedFile returns the content of file as c sees it, when it lies on a
// ConfigMap volume.
func mountedFile(b *bundle, spec *corev1.PodSpec, c *corev1.Container, file string) (string, error) {
	for _, m := range c.VolumeMounts {
		dir := strings.TrimSuffix(m.MountPath, "/") + "/"
		key, ok := strings.CutPrefix(file, dir)
		if !ok {
			continue
		}
		for _, v := range spec.Volumes {
			if v.Name != m.Name || v.ConfigMap == nil {
				continue
			}
			cm, ok := named[*corev1.ConfigMap](b, v.ConfigMap.Name)
			if !ok {
				return "", fmt.Errorf("ConfigMap %s is not in the bundle", v.ConfigMap.Name)
			}
			data, ok := cm.Data[key]
			if !ok {
				return "", fmt.Errorf("ConfigMap %s has no key %s", cm.Name, key)
			}
			return data, nil
		}
	}
	return "", fmt.Errorf("%s is on no ConfigMap mount", file)
}

// claimMount returns the volumeClaimTemplate mounted at dir or above it.
func claimMount(s *appsv1.StatefulSet, c *corev1.Container, dir string) (*corev1.PersistentVolumeClaim, bool) {
	for _, m := range c.VolumeMounts {
		if dir != m.MountPath && !strings.HasPrefix(dir, strings.TrimSuffix(m.MountPath, "/")+"/") {
			continue
		}
		for i := range s.Spec.VolumeClaimTemplates {
			if s.Spec.VolumeClaimTemplates[i].Name == m.Name {
				return &s.Spec.VolumeClaimTemplates[i], true
			}
		}
	}
	return nil, false
}

// redisBytes parses a Redis memory size: 1536mb, 10gb, 1g, 100000.
func redisBytes(s string) (int64, error) {
	s = strings.ToLower(strings.TrimSpace(s))
	units := []struct {
		suffix string
		mult   int64
	}{{"kb", 1 << 10}, {"mb", 1 << 20}, {"gb", 1 << 30}, {"k", 1e3}, {"m", 1e6}, {"g", 1e9}, {"b", 1}}
	for _, u := range units {
		if n, ok := strings.CutSuffix(s, u.suffix); ok {
			v, err := strconv.ParseInt(n, 10, 64)
			return v * u.mult, err
		}
	}
	return strconv.ParseInt(s, 10, 64)
}

// checkRedis: the queue store persists every write within a second to a
// volume, never evicts a key, and keeps maxmemory below the pod's limit.
func checkRedis(b *bundle) []error {
	s := statefulByComponent(b, "redis")
	if s == nil {
		return nil
	}
	var errs []error
	where := "StatefulSet/" + s.Name
	if s.Spec.Replicas != nil && *s.Spec.Replicas != 1 {
		errs = append(errs, fmt.Errorf("%s: %d replicas of one Redis without replication; asynq needs a single primary", where, *s.Spec.Replicas))
	}
	c := &s.Spec.Template.Spec.Containers[0]
	env, err := b.env(c)
	if err != nil {
		return append(errs, fmt.Errorf("%s: %w", where, err))
	}
	expand := func(a string) string {
		return envRef.ReplaceAllStringFunc(a, func(ref string) string {
			if v, ok := env[envRef.FindStringSubmatch(ref)[1]]; ok {
				return v.value
			}
			return ref
		})
	}
	var confFile string
	flags := make(map[string]string)
	args := c.Args
	for i := 0; i < len(args); i++ {
		switch {
		case strings.HasSuffix(args[i], ".conf") && confFile == "":
			confFile = args[i]
		case strings.HasPrefix(args[i], "--") && i+1 < len(args):
			flags[strings.TrimPrefix(args[i], "--")] = expand(args[i+1])
			i++
		}
	}
	if confFile == "" {
		return append(errs, fmt.Errorf("%s: redis-server gets no configuration file", where))
	}
	conf, err := mountedFile(b, &s.Spec.Template.Spec, c, confFile)
	if err != nil {
		return append(errs, fmt.Errorf("%s: %s: %w", where, confFile, err))
	}
	settings := make(map[string]string)
	for _, line := range strings.Split(conf, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, _ := strings.Cut(line, " ")
		settings[strings.ToLower(k)] = strings.Trim(strings.TrimSpace(v), `"`)
	}
	for k, v := range flags {
		settings[k] = v // command-line options override the file
	}
	for k, want := range map[string]string{"appendonly": "yes", "appendfsync": "everysec", "maxmemory-policy": "noeviction"} {
		if settings[k] != want {
			errs = append(errs, fmt.Errorf("%s: Redis %s is %q, want %q (asynq keeps every queued job here)", where, k, settings[k], want))
		}
	}
	if _, ok := claimMount(s, c, settings["dir"]); !ok {
		errs = append(errs, fmt.Errorf("%s: Redis dir %q (the AOF) is not on a persistent volume claim", where, settings["dir"]))
	}
	if settings["requirepass"] == "" {
		errs = append(errs, fmt.Errorf("%s: Redis has no password (requirepass)", where))
	}
	maxmem, err := redisBytes(settings["maxmemory"])
	limit := c.Resources.Limits[corev1.ResourceMemory]
	switch {
	case err != nil || maxmem <= 0:
		errs = append(errs, fmt.Errorf("%s: maxmemory %q: want a size, so Redis refuses writes before the kernel kills it", where, settings["maxmemory"]))
	case float64(maxmem) > 0.9*float64(limit.Value()):
		errs = append(errs, fmt.Errorf("%s: maxmemory %s is above 90%% of the memory limit %s; the AOF rewrite's fork needs headroom", where, settings["maxmemory"], limit.String()))
	}
	return errs
}

var natsRouteHost = regexp.MustCompile(`^([a-z0-9-]+)-([0-9]+)\.([a-z0-9-]+)$`)

// parseNATSConfig runs a NATS configuration through nats-server's own
// parser, with the pod's environment variables stood in.
func parseNATSConfig(conf string, env map[string]string) (*natsserver.Options, error) {
	for k, v := range env {
		conf = strings.ReplaceAll(conf, "$"+k, v)
	}
	f, err := os.CreateTemp("", "tandem-nats-*.conf")
	if err != nil {
		return nil, err
	}
	defer os.Remove(f.Name())
	if _, err := f.WriteString(conf); err != nil {
		f.Close()
		return nil, err
	}
	if err := f.Close(); err != nil {
		return nil, err
	}
	return natsserver.ProcessConfigFile(f.Name())
}

// checkNATS: nats-server accepts the configuration; the cluster's routes
// name exactly the StatefulSet's pods through its headless Service; a single
// server has no cluster block; JetStream's store sits on the volume and fits
// both the volume and Tandem's streams; the user Tandem's pods log in as
// exists.
func checkNATS(b *bundle) []error {
	s := statefulByComponent(b, "nats")
	if s == nil {
		return nil
	}
	var errs []error
	where := "StatefulSet/" + s.Name
	replicas := 1
	if s.Spec.Replicas != nil {
		replicas = int(*s.Spec.Replicas)
	}
	c := &s.Spec.Template.Spec.Containers[0]
	confFile := ""
	for i, a := range c.Args {
		if (a == "--config" || a == "-c") && i+1 < len(c.Args) {
			confFile = c.Args[i+1]
		}
	}
	conf, err := mountedFile(b, &s.Spec.Template.Spec, c, confFile)
	if err != nil {
		return append(errs, fmt.Errorf("%s: config %q: %w", where, confFile, err))
	}
	env, err := b.env(c)
	if err != nil {
		return append(errs, fmt.Errorf("%s: %w", where, err))
	}
	standIns := make(map[string]string)
	for k, v := range env {
		standIns[k] = v.value
	}
	standIns["POD_NAME"] = s.Name + "-0" // the downward API's value in the first pod
	opts, err := parseNATSConfig(conf, standIns)
	if err != nil {
		return append(errs, fmt.Errorf("%s: nats-server refuses %s: %w", where, confFile, err))
	}

	var ordinals []int
	for _, u := range opts.Routes {
		m := natsRouteHost.FindStringSubmatch(u.Hostname())
		if m == nil || m[1] != s.Name || m[3] != s.Spec.ServiceName || u.Port() != strconv.Itoa(opts.Cluster.Port) {
			errs = append(errs, fmt.Errorf("%s: route %s is not a pod of this StatefulSet through %s on the cluster port", where, u, s.Spec.ServiceName))
			continue
		}
		n, _ := strconv.Atoi(m[2])
		ordinals = append(ordinals, n)
	}
	sort.Ints(ordinals)
	hasCluster := opts.Cluster.Port != 0
	switch {
	case replicas == 1 && hasCluster:
		errs = append(errs, fmt.Errorf("%s: one server with a cluster block: routes to absent peers leave JetStream without a quorum", where))
	case replicas > 1:
		want := make([]int, replicas)
		for i := range want {
			want[i] = i
		}
		if !hasCluster || fmt.Sprint(ordinals) != fmt.Sprint(want) {
			errs = append(errs, fmt.Errorf("%s: %d replicas but the cluster routes name pods %v", where, replicas, ordinals))
		}
		if replicas%2 == 0 {
			errs = append(errs, fmt.Errorf("%s: %d servers; JetStream's quorum wants an odd number", where, replicas))
		}
		if s.Spec.PodManagementPolicy != appsv1.ParallelPodManagement {
			errs = append(errs, fmt.Errorf("%s: podManagementPolicy must be Parallel: each server waits for its routes", where))
		}
		if svc, ok := named[*corev1.Service](b, s.Spec.ServiceName); ok && !svc.Spec.PublishNotReadyAddresses {
			errs = append(errs, fmt.Errorf("%s: Service %s must publish not-ready addresses, or routes never form", where, svc.Name))
		}
	}
	if !hasPort(c, strconv.Itoa(opts.Port)) || (hasCluster && !hasPort(c, strconv.Itoa(opts.Cluster.Port))) || !hasPort(c, strconv.Itoa(opts.HTTPPort)) {
		errs = append(errs, fmt.Errorf("%s: the client, cluster and monitor ports of the config (%d, %d, %d) must be container ports", where, opts.Port, opts.Cluster.Port, opts.HTTPPort))
	}

	// preStop puts the server in lame-duck mode, which outlasts SIGTERM: the
	// kubelet must wait out the grace period and the duration.
	grace := defaultGracePeriod
	if g := s.Spec.Template.Spec.TerminationGracePeriodSeconds; g != nil {
		grace = time.Duration(*g) * time.Second
	}
	if ldm := opts.LameDuckGracePeriod + opts.LameDuckDuration; grace <= ldm {
		errs = append(errs, fmt.Errorf("%s: terminationGracePeriodSeconds %v does not outlast lame-duck mode (%v)", where, grace, ldm))
	}

	if !opts.JetStream {
		return append(errs, fmt.Errorf("%s: JetStream is not enabled", where))
	}
	claim, ok := claimMount(s, c, opts.StoreDir)
	if !ok {
		return append(errs, fmt.Errorf("%s: JetStream store_dir %q is not on a persistent volume claim", where, opts.StoreDir))
	}
	size := claim.Spec.Resources.Requests[corev1.ResourceStorage]
	if opts.JetStreamMaxStore <= 0 || opts.JetStreamMaxStore > size.Value() {
		errs = append(errs, fmt.Errorf("%s: max_file_store (%d bytes) must be set and fit the volume (%s)", where, opts.JetStreamMaxStore, size.String()))
	}
	var reserved int64
	for _, st := range pipeline.DefaultStreams() {
		reserved += st.MaxBytes
	}
	if reserved > opts.JetStreamMaxStore {
		errs = append(errs, fmt.Errorf("%s: Tandem's streams reserve %d bytes, above max_file_store (%d): JetStream would refuse to create them", where, reserved, opts.JetStreamMaxStore))
	}

	users := make(map[string]bool)
	for _, u := range opts.Users {
		users[u.Username] = true
	}
	tcs, _ := b.tandemContainers()
	for _, tc := range tcs {
		if u := tc.cfg.NATSUser; u != "" && !users[u] {
			errs = append(errs, fmt.Errorf("%s: logs in to NATS as %q, a user the NATS config does not define", tc.where, u))
		}
	}
	return errs
}
