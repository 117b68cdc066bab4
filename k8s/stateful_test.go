package k8s

import (
	"fmt"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
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
	files, err := mountedConfigMap(b, spec, c, file)
	if err != nil {
		return "", err
	}
	return files[path.Base(file)], nil
}

// mountedConfigMap returns every key of the ConfigMap that file is mounted
// from (the files beside it in the pod), checking that file is one of them.
func mountedConfigMap(b *bundle, spec *corev1.PodSpec, c *corev1.Container, file string) (map[string]string, error) {
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
				return nil, fmt.Errorf("ConfigMap %s is not in the bundle", v.ConfigMap.Name)
			}
			if _, ok := cm.Data[key]; !ok || strings.Contains(key, "/") {
				return nil, fmt.Errorf("ConfigMap %s has no key %s", cm.Name, key)
			}
			return cm.Data, nil
		}
	}
	return nil, fmt.Errorf("%s is on no ConfigMap mount", file)
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
// parser, with the pod's environment variables stood in. files are the
// mounted ConfigMap's keys, so that includes resolve as in the pod; main is
// the one the server is started with.
func parseNATSConfig(files map[string]string, main string, env map[string]string) (*natsserver.Options, error) {
	dir, err := os.MkdirTemp("", "tandem-nats-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	for name, conf := range files {
		for k, v := range env {
			conf = strings.ReplaceAll(conf, "$"+k, v)
		}
		if err := os.WriteFile(filepath.Join(dir, name), []byte(conf), 0o600); err != nil {
			return nil, err
		}
	}
	return natsserver.ProcessConfigFile(filepath.Join(dir, main))
}

// checkNATS: nats-server accepts the configuration; the cluster's routes
// name exactly the StatefulSet's pods through its headless Service; a single
// server has no cluster block; JetStream's store sits on the volume and fits
// both the volume and Tandem's streams, and fsyncs every write; the users
// are Tandem's roles with their permissions (checkNATSRoles).
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
	files, err := mountedConfigMap(b, &s.Spec.Template.Spec, c, confFile)
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
		if v.secret != nil {
			// Which Secret key a password comes from, so the users can be
			// matched with the pods that log in as them.
			standIns[k] = secretKeyStandIn(v.secret.Name, v.secret.Key)
		}
	}
	standIns["POD_NAME"] = s.Name + "-0" // the downward API's value in the first pod
	opts, err := parseNATSConfig(files, path.Base(confFile), standIns)
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
	if !opts.SyncAlways {
		errs = append(errs, fmt.Errorf("%s: JetStream syncs every %v, not every write (sync_interval: always): servers that crash together lose acknowledged events (docs/RELIABILITY.md)", where, opts.SyncInterval))
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

	return append(errs, checkNATSRoles(b, where, opts)...)
}

// secretKeyStandIn stands in for a value from a Secret's key in a parsed
// NATS config.
func secretKeyStandIn(secret, key string) string { return "secret-" + secret + "-" + key }

// checkNATSRoles: the NATS users are exactly Tandem's roles, each with the
// permissions of pipeline.NATSRolePermissions (what the embedded server
// enforces) and its password from the tandem-nats key named after it; every
// Tandem pod logs in as the role of its binary with that key.
func checkNATSRoles(b *bundle, where string, opts *natsserver.Options) []error {
	var errs []error
	users := make(map[string]*natsserver.User)
	for _, u := range opts.Users {
		users[u.Username] = u
		if _, ok := pipeline.NATSRolePermissions(u.Username); !ok {
			errs = append(errs, fmt.Errorf("%s: NATS user %q is not one of Tandem's roles %v; a user outside them escapes the subject permissions", where, u.Username, pipeline.NATSRoles()))
		}
	}
	if len(opts.Nkeys) > 0 || opts.Username != "" || opts.Authorization != "" {
		errs = append(errs, fmt.Errorf("%s: NATS logins besides the role users (nkeys, a single user or a token) escape the subject permissions", where))
	}
	for _, role := range pipeline.NATSRoles() {
		u := users[role]
		if u == nil {
			errs = append(errs, fmt.Errorf("%s: the NATS config defines no user %q (a role of pipeline.NATSRoles)", where, role))
			continue
		}
		if want := secretKeyStandIn("tandem-nats", role); u.Password != want {
			errs = append(errs, fmt.Errorf("%s: NATS user %s: password is not the tandem-nats Secret's key %q", where, role, role))
		}
		want, _ := pipeline.NATSRolePermissions(role)
		var got pipeline.NATSPermissions
		if p := u.Permissions; p != nil {
			if p.Publish != nil {
				got.Publish, got.PublishDeny = p.Publish.Allow, p.Publish.Deny
			}
			if p.Subscribe != nil {
				got.Subscribe = p.Subscribe.Allow
				if len(p.Subscribe.Deny) > 0 {
					errs = append(errs, fmt.Errorf("%s: NATS user %s: subscribe deny %v is not in pipeline.NATSRolePermissions", where, role, p.Subscribe.Deny))
				}
			}
		}
		for _, list := range []struct {
			name      string
			got, want []string
		}{{"publish allow", got.Publish, want.Publish}, {"publish deny", got.PublishDeny, want.PublishDeny}, {"subscribe allow", got.Subscribe, want.Subscribe}} {
			g, w := slices.Sorted(slices.Values(list.got)), slices.Sorted(slices.Values(list.want))
			if !slices.Equal(g, w) {
				errs = append(errs, fmt.Errorf("%s: NATS user %s: %s is %v; pipeline.NATSRolePermissions says %v", where, role, list.name, g, w))
			}
		}
	}
	tcs, _ := b.tandemContainers()
	for _, tc := range tcs {
		if tc.cfg.NATSURL == "" {
			continue
		}
		u := tc.cfg.NATSUser
		switch {
		case users[u] == nil:
			errs = append(errs, fmt.Errorf("%s: logs in to NATS as %q, a user the NATS config does not define", tc.where, u))
		case u != tc.binary:
			errs = append(errs, fmt.Errorf("%s: the %s logs in to NATS as %q; it must log in as its own role %q", tc.where, tc.binary, u, tc.binary))
		}
		if pw := tc.env["TANDEM_NATS_PASSWORD"]; pw.secret == nil || pw.secret.Name != "tandem-nats" || pw.secret.Key != u {
			errs = append(errs, fmt.Errorf("%s: TANDEM_NATS_PASSWORD must come from the tandem-nats Secret's key %q (its role)", tc.where, u))
		}
	}
	return errs
}
