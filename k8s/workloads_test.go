package k8s

import (
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/tandem-ai/tandem/artifact"
	"github.com/tandem-ai/tandem/pipeline"
)

// deployNamespace is where every overlay deploys; REDIS_ADDR and
// TANDEM_NATS_URL in the base's tandem-config carry it too, for KEDA's
// operator in its own namespace.
const deployNamespace = "tandem"

// checkpointFlushMargin is the time a stopping worker needs beyond
// TANDEM_SHUTDOWN_TIMEOUT: a fine-tune writing its checkpoint, the NATS
// drain, the admin server's close.
const checkpointFlushMargin = 15 * time.Second

// defaultGracePeriod is Kubernetes' terminationGracePeriodSeconds default.
const defaultGracePeriod = 30 * time.Second

func checkNamespace(b *bundle) []error {
	var errs []error
	for _, o := range b.objects {
		ns := o.Meta.GetNamespace()
		if o.Kind == "Namespace" {
			if o.Meta.GetName() != deployNamespace {
				errs = append(errs, fmt.Errorf("%s: want namespace %q", o, deployNamespace))
			}
			continue
		}
		if ns != deployNamespace {
			errs = append(errs, fmt.Errorf("%s: in namespace %q, want %q", o, ns, deployNamespace))
		}
	}
	return errs
}

func checkResources(b *bundle) []error {
	var errs []error
	for _, pt := range b.podTemplates() {
		for _, cr := range pt.containers() {
			r := cr.c.Resources
			for _, name := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
				req, hasReq := r.Requests[name]
				lim, hasLim := r.Limits[name]
				switch {
				case !hasReq:
					errs = append(errs, fmt.Errorf("%s: no %s request", cr.where, name))
				case !hasLim:
					errs = append(errs, fmt.Errorf("%s: no %s limit", cr.where, name))
				case req.Cmp(lim) > 0:
					errs = append(errs, fmt.Errorf("%s: %s request %s is above its limit %s", cr.where, name, req.String(), lim.String()))
				case req.IsZero():
					errs = append(errs, fmt.Errorf("%s: %s request is zero", cr.where, name))
				}
			}
			// Extended resources (GPUs) cannot be overcommitted: the API
			// server refuses a request that differs from the limit.
			for name, lim := range r.Limits {
				if !strings.Contains(string(name), "/") {
					continue
				}
				if req, ok := r.Requests[name]; ok && req.Cmp(lim) != 0 {
					errs = append(errs, fmt.Errorf("%s: %s request %s differs from its limit %s", cr.where, name, req.String(), lim.String()))
				}
			}
		}
	}
	return errs
}

func checkProbes(b *bundle) []error {
	var errs []error
	for _, pt := range b.podTemplates() {
		if !pt.longRunning {
			continue
		}
		for _, cr := range pt.containers() {
			c := cr.c
			if c.ReadinessProbe == nil {
				errs = append(errs, fmt.Errorf("%s: no readiness probe", cr.where))
			}
			if c.LivenessProbe == nil {
				errs = append(errs, fmt.Errorf("%s: no liveness probe", cr.where))
			}
			if _, ok := tandemImage(c.Image); !ok {
				continue
			}
			for kind, p := range map[string]*corev1.Probe{"readiness": c.ReadinessProbe, "liveness": c.LivenessProbe, "startup": c.StartupProbe} {
				if p == nil {
					continue
				}
				if p.HTTPGet == nil || p.HTTPGet.Path != "/healthz" {
					errs = append(errs, fmt.Errorf("%s: %s probe must be an HTTP GET of /healthz", cr.where, kind))
					continue
				}
				if !hasPort(c, p.HTTPGet.Port.String()) {
					errs = append(errs, fmt.Errorf("%s: %s probe port %s is not a port of the container", cr.where, kind, p.HTTPGet.Port.String()))
				}
			}
		}
	}
	return errs
}

// hasPort reports whether c declares port (a name or a number).
func hasPort(c *corev1.Container, port string) bool {
	for _, p := range c.Ports {
		if p.Name == port || strconv.Itoa(int(p.ContainerPort)) == port {
			return true
		}
	}
	return false
}

// restrictedVolumeTypes are the volume sources the restricted Pod Security
// profile allows.
func restrictedVolume(v corev1.Volume) bool {
	s := v.VolumeSource
	return s.ConfigMap != nil || s.CSI != nil || s.DownwardAPI != nil || s.EmptyDir != nil ||
		s.Ephemeral != nil || s.PersistentVolumeClaim != nil || s.Projected != nil || s.Secret != nil
}

// checkSecurityContext holds every pod to the restricted Pod Security
// profile, plus a read-only root filesystem with writable scratch volumes.
func checkSecurityContext(b *bundle) []error {
	var errs []error
	for _, pt := range b.podTemplates() {
		ps := pt.spec.SecurityContext
		if ps == nil {
			ps = &corev1.PodSecurityContext{}
		}
		if pt.spec.HostNetwork || pt.spec.HostPID || pt.spec.HostIPC {
			errs = append(errs, fmt.Errorf("%s: host namespaces are not allowed", pt.owner))
		}
		if pt.spec.AutomountServiceAccountToken == nil || *pt.spec.AutomountServiceAccountToken {
			errs = append(errs, fmt.Errorf("%s: automountServiceAccountToken must be false (no Tandem process calls the API)", pt.owner))
		}
		vols := make(map[string]corev1.Volume)
		for _, v := range pt.spec.Volumes {
			vols[v.Name] = v
			if !restrictedVolume(v) {
				errs = append(errs, fmt.Errorf("%s: volume %s: type not allowed by the restricted profile", pt.owner, v.Name))
			}
		}
		for _, cr := range pt.containers() {
			c := cr.c
			cs := c.SecurityContext
			if cs == nil {
				errs = append(errs, fmt.Errorf("%s: no securityContext", cr.where))
				continue
			}
			nonRoot := (cs.RunAsNonRoot != nil && *cs.RunAsNonRoot) || (cs.RunAsNonRoot == nil && ps.RunAsNonRoot != nil && *ps.RunAsNonRoot)
			if !nonRoot {
				errs = append(errs, fmt.Errorf("%s: runAsNonRoot must be true", cr.where))
			}
			for _, uid := range []*int64{ps.RunAsUser, cs.RunAsUser} {
				if uid != nil && *uid == 0 {
					errs = append(errs, fmt.Errorf("%s: runAsUser 0", cr.where))
				}
			}
			seccomp := cs.SeccompProfile
			if seccomp == nil {
				seccomp = ps.SeccompProfile
			}
			if seccomp == nil || seccomp.Type != corev1.SeccompProfileTypeRuntimeDefault {
				errs = append(errs, fmt.Errorf("%s: seccompProfile must be RuntimeDefault", cr.where))
			}
			if cs.AllowPrivilegeEscalation == nil || *cs.AllowPrivilegeEscalation {
				errs = append(errs, fmt.Errorf("%s: allowPrivilegeEscalation must be false", cr.where))
			}
			if cs.Privileged != nil && *cs.Privileged {
				errs = append(errs, fmt.Errorf("%s: privileged", cr.where))
			}
			if cs.Capabilities == nil || !dropsAll(cs.Capabilities.Drop) {
				errs = append(errs, fmt.Errorf("%s: capabilities must drop ALL", cr.where))
			} else if len(cs.Capabilities.Add) > 0 {
				errs = append(errs, fmt.Errorf("%s: adds capabilities %v", cr.where, cs.Capabilities.Add))
			}
			if cs.ReadOnlyRootFilesystem == nil || !*cs.ReadOnlyRootFilesystem {
				errs = append(errs, fmt.Errorf("%s: readOnlyRootFilesystem must be true", cr.where))
			}
			for _, p := range c.Ports {
				if p.HostPort != 0 {
					errs = append(errs, fmt.Errorf("%s: hostPort %d", cr.where, p.HostPort))
				}
			}
			if _, ok := tandemImage(c.Image); ok {
				// Go and the CUDA driver write temporary files; the root
				// filesystem is read-only.
				if !writableMount(c, vols, "/tmp") {
					errs = append(errs, fmt.Errorf("%s: /tmp must be a writable emptyDir (the root filesystem is read-only)", cr.where))
				}
			}
		}
	}
	return errs
}

func dropsAll(caps []corev1.Capability) bool {
	for _, c := range caps {
		if c == "ALL" {
			return true
		}
	}
	return false
}

// writableMount reports whether dir is a writable mount of an emptyDir or a
// PersistentVolumeClaim in c.
func writableMount(c *corev1.Container, vols map[string]corev1.Volume, dir string) bool {
	for _, m := range c.VolumeMounts {
		if m.MountPath != dir || m.ReadOnly {
			continue
		}
		v, ok := vols[m.Name]
		if ok && (v.EmptyDir != nil || v.PersistentVolumeClaim != nil || v.Ephemeral != nil) {
			return true
		}
	}
	return false
}

// binaryEnv lists the TANDEM_* variables that a binary reads itself, beside
// the pipeline.Config ones (cmd/*/main.go, cmd/producer/serve.go).
var binaryEnv = map[string][]string{
	"producer": {"TANDEM_HTTP_ADDR", "TANDEM_API_TOKENS", "TANDEM_API_REQUIRE_AUTH", pipeline.StreamReplicasEnv, artifact.EnvStore},
	"scheduler": {"TANDEM_ADMIN_ADDR", "TANDEM_SCHEDULE", "TANDEM_EMBEDDED_NATS", pipeline.StreamReplicasEnv, artifact.EnvStore,
		"TANDEM_INTERACTIONS", "TANDEM_RECS_REBUILD", "TANDEM_RECS_SHARDS", "TANDEM_RECS_WINDOW", "TANDEM_RECS_POLL",
		"TANDEM_RECS_CONCURRENCY", "TANDEM_RECS_WEIGHTS"},
	"worker": {"TANDEM_ADMIN_ADDR", "TANDEM_LOG_LEVEL", "TANDEM_DEVICE", "TANDEM_GPU_PRECISION", "TANDEM_EXIT_WHEN_IDLE", pipeline.StreamReplicasEnv, artifact.EnvStore},
}

// imageBinary maps Tandem's images to the binary each runs.
var imageBinary = map[string]string{
	"tandem-producer":    "producer",
	"tandem-scheduler":   "scheduler",
	"tandem-worker":      "worker",
	"tandem-worker-cuda": "worker",
}

// pipelineEnv returns the TANDEM_* variables pipeline.Config reads, from the
// first column of its own help table, so a variable added there is known
// here at once.
func pipelineEnv() map[string]bool {
	out := make(map[string]bool)
	for _, line := range strings.Split(pipeline.EnvHelp(), "\n") {
		if f := strings.Fields(line); len(f) > 0 && strings.HasPrefix(f[0], "TANDEM_") {
			out[f[0]] = true
		}
	}
	return out
}

// tandemContainer is a container running one of Tandem's binaries, with its
// environment resolved and parsed by the binary's own configuration code.
type tandemContainer struct {
	containerRef
	pt     podTemplate
	binary string
	env    map[string]envValue
	cfg    pipeline.Config
	cfgErr error
}

func (b *bundle) tandemContainers() ([]tandemContainer, []error) {
	var out []tandemContainer
	var errs []error
	for _, pt := range b.podTemplates() {
		for _, cr := range pt.containers() {
			img, ok := tandemImage(cr.c.Image)
			if !ok {
				continue
			}
			bin, ok := imageBinary[img]
			if !ok {
				errs = append(errs, fmt.Errorf("%s: image %s is not one of Tandem's images", cr.where, cr.c.Image))
				continue
			}
			env, err := b.env(cr.c)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", cr.where, err))
				continue
			}
			tc := tandemContainer{containerRef: cr, pt: pt, binary: bin, env: env, cfg: pipeline.DefaultConfig()}
			lookup := func(k string) (string, bool) { v, ok := env[k]; return v.value, ok }
			if err := tc.cfg.ApplyEnv(lookup); err != nil {
				tc.cfgErr = err
			} else {
				tc.cfgErr = tc.cfg.Validate()
			}
			out = append(out, tc)
		}
	}
	return out, errs
}

var validDevice = regexp.MustCompile(`^(cpu|cuda:[0-9]+)$`)

// checkTandemConfig runs each Tandem container's environment through the
// binary's own configuration code, as the process would at start.
func checkTandemConfig(b *bundle) []error {
	tcs, errs := b.tandemContainers()
	known := pipelineEnv()
	for _, tc := range tcs {
		if tc.cfgErr != nil {
			errs = append(errs, fmt.Errorf("%s: the %s would refuse its configuration: %w", tc.where, tc.binary, tc.cfgErr))
		}
		own := make(map[string]bool)
		for _, k := range binaryEnv[tc.binary] {
			own[k] = true
		}
		for k, v := range tc.env {
			if strings.HasPrefix(k, "TANDEM_") && !known[k] && !own[k] {
				errs = append(errs, fmt.Errorf("%s: %s (%s) is read by no setting of the %s", tc.where, k, v.from, tc.binary))
			}
		}
		if v, ok := tc.env["TANDEM_DEVICE"]; ok && !validDevice.MatchString(v.value) {
			errs = append(errs, fmt.Errorf("%s: TANDEM_DEVICE %q: want cpu or cuda:N", tc.where, v.value))
		}
		if v, ok := tc.env["TANDEM_LOG_LEVEL"]; ok {
			var l slog.Level
			if err := l.UnmarshalText([]byte(v.value)); err != nil {
				errs = append(errs, fmt.Errorf("%s: TANDEM_LOG_LEVEL: %w", tc.where, err))
			}
		}
		// The listen addresses must be reachable from outside the pod and
		// match a declared port, or probes and scrapes find nothing.
		for _, k := range []string{"TANDEM_ADMIN_ADDR", "TANDEM_HTTP_ADDR"} {
			v, ok := tc.env[k]
			if !ok || !own[k] {
				continue
			}
			host, port, err := net.SplitHostPort(v.value)
			switch {
			case err != nil:
				errs = append(errs, fmt.Errorf("%s: %s %q: %w", tc.where, k, v.value, err))
			case host != "" && host != "0.0.0.0" && host != "::":
				errs = append(errs, fmt.Errorf("%s: %s %q listens on %s only; probes and Prometheus come from outside the pod", tc.where, k, v.value, host))
			case !hasPort(tc.c, port):
				errs = append(errs, fmt.Errorf("%s: %s port %s is not a declared container port", tc.where, k, port))
			}
		}
		if tc.binary == "worker" || tc.binary == "scheduler" {
			if _, ok := tc.env["TANDEM_ADMIN_ADDR"]; !ok {
				errs = append(errs, fmt.Errorf("%s: TANDEM_ADMIN_ADDR unset: the default listens on 127.0.0.1, out of reach of probes", tc.where))
			}
		}
		if tc.binary == "producer" && len(tc.c.Args) > 0 && tc.c.Args[0] == "serve" {
			if _, ok := tc.env["TANDEM_HTTP_ADDR"]; !ok {
				errs = append(errs, fmt.Errorf("%s: TANDEM_HTTP_ADDR unset: the default listens on 127.0.0.1", tc.where))
			}
		}
		vols := make(map[string]corev1.Volume)
		for _, v := range tc.pt.spec.Volumes {
			vols[v.Name] = v
		}
		if !writableMount(tc.c, vols, tc.cfg.DataDir) {
			errs = append(errs, fmt.Errorf("%s: TANDEM_DATA_DIR %s is not a writable volume mount", tc.where, tc.cfg.DataDir))
		}
		// Workers read and write job files in the data root; the producer
		// serves loss curves from it. Both need the shared volume there.
		if (tc.binary == "worker" || tc.binary == "producer") && !writableMount(tc.c, vols, tc.cfg.DataRoot) {
			errs = append(errs, fmt.Errorf("%s: TANDEM_DATA_ROOT %s is not a writable volume mount (the shared volume)", tc.where, tc.cfg.DataRoot))
		}
		if tc.cfgErr == nil {
			errs = append(errs, checkServiceURLs(b, tc)...)
		}
		if v, ok := tc.env["TANDEM_SCHEDULE"]; ok {
			errs = append(errs, checkScheduleFile(b, tc, v.value)...)
		}
		if !isFalse(tc.pt.spec.EnableServiceLinks) {
			errs = append(errs, fmt.Errorf("%s: enableServiceLinks must be false: service variables (TANDEM_REDIS_PORT, ...) land in Tandem's TANDEM_* space", tc.pt.owner))
		}
	}
	return errs
}

// checkServiceURLs: the Redis and NATS a container dials are Services of
// the bundle, on ports those Services expose.
func checkServiceURLs(b *bundle, tc tandemContainer) []error {
	targets := []string{tc.cfg.RedisURL}
	if tc.cfg.NATSURL != "" {
		targets = append(targets, strings.Split(tc.cfg.NATSURL, ",")...)
	}
	var errs []error
	for _, raw := range targets {
		u, err := url.Parse(strings.TrimSpace(raw))
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", tc.where, err))
			continue
		}
		name, ns, ok := strings.Cut(strings.TrimSuffix(strings.TrimSuffix(u.Hostname(), ".cluster.local"), ".svc"), ".")
		if !ok || ns != deployNamespace {
			errs = append(errs, fmt.Errorf("%s: %s://%s: want a Service as NAME.%s.svc", tc.where, u.Scheme, u.Host, deployNamespace))
			continue
		}
		svc, ok := named[*corev1.Service](b, name)
		if !ok {
			errs = append(errs, fmt.Errorf("%s: %s://%s: no Service %s in the bundle", tc.where, u.Scheme, u.Host, name))
			continue
		}
		found := false
		for _, p := range svc.Spec.Ports {
			found = found || strconv.Itoa(int(p.Port)) == u.Port()
		}
		if !found {
			errs = append(errs, fmt.Errorf("%s: %s://%s: Service %s has no port %s", tc.where, u.Scheme, u.Host, name, u.Port()))
		}
	}
	return errs
}

// checkScheduleFile finds the ConfigMap mounted at the schedule's path and
// parses the file with the scheduler's own parser.
func checkScheduleFile(b *bundle, tc tandemContainer, file string) []error {
	for _, m := range tc.c.VolumeMounts {
		dir := strings.TrimSuffix(m.MountPath, "/") + "/"
		if !strings.HasPrefix(file, dir) {
			continue
		}
		key := strings.TrimPrefix(file, dir)
		for _, v := range tc.pt.spec.Volumes {
			if v.Name != m.Name || v.ConfigMap == nil {
				continue
			}
			cm, ok := named[*corev1.ConfigMap](b, v.ConfigMap.Name)
			if !ok {
				return []error{fmt.Errorf("%s: schedule ConfigMap %s is not in the bundle", tc.where, v.ConfigMap.Name)}
			}
			data, ok := cm.Data[key]
			if !ok {
				return []error{fmt.Errorf("%s: ConfigMap %s has no key %s for TANDEM_SCHEDULE", tc.where, cm.Name, key)}
			}
			if _, err := pipeline.ParseSchedule(cm.Name+"/"+key, []byte(data)); err != nil {
				return []error{fmt.Errorf("%s: %w", tc.where, err)}
			}
			return nil
		}
	}
	return []error{fmt.Errorf("%s: TANDEM_SCHEDULE %s is on no ConfigMap mount", tc.where, file)}
}

// checkGracePeriod keeps every worker's terminationGracePeriodSeconds above
// its TANDEM_SHUTDOWN_TIMEOUT plus the checkpoint flush, so the kubelet
// never kills a worker that is still handing jobs back.
func checkGracePeriod(b *bundle) []error {
	tcs, errs := b.tandemContainers()
	for _, tc := range tcs {
		_, set := tc.env["TANDEM_SHUTDOWN_TIMEOUT"]
		if tc.binary != "worker" && !set {
			continue
		}
		grace := defaultGracePeriod
		if g := tc.pt.spec.TerminationGracePeriodSeconds; g != nil {
			grace = time.Duration(*g) * time.Second
		}
		if need := tc.cfg.ShutdownTimeout + checkpointFlushMargin; grace < need {
			errs = append(errs, fmt.Errorf("%s: terminationGracePeriodSeconds %v is below TANDEM_SHUTDOWN_TIMEOUT %v + %v for the checkpoint flush",
				tc.pt.owner, grace, tc.cfg.ShutdownTimeout, checkpointFlushMargin))
		}
	}
	return errs
}

const gpuResource corev1.ResourceName = "nvidia.com/gpu"

// gpuNodeLabel is the label GPU feature discovery puts on GPU nodes.
const gpuNodeLabel = "nvidia.com/gpu.present"

// checkGPU ties GPU requests, the CUDA image, TANDEM_DEVICE and GPU-node
// scheduling together: any one of them without the others is a pod that
// cannot start or a GPU that sits idle.
func checkGPU(b *bundle) []error {
	var errs []error
	for _, pt := range b.podTemplates() {
		podGPU := false
		for _, cr := range pt.containers() {
			lim := cr.c.Resources.Limits[gpuResource]
			gpu := !lim.IsZero()
			podGPU = podGPU || gpu
			img, isTandem := tandemImage(cr.c.Image)
			if !isTandem || imageBinary[img] != "worker" {
				if gpu {
					errs = append(errs, fmt.Errorf("%s: requests a GPU but is no Tandem worker", cr.where))
				}
				continue
			}
			env, err := b.env(cr.c)
			if err != nil {
				continue // reported by checkTandemConfig
			}
			device := "cpu"
			if v, ok := env["TANDEM_DEVICE"]; ok {
				device = v.value
			}
			cuda := strings.HasPrefix(device, "cuda:")
			switch {
			case gpu && !cuda:
				errs = append(errs, fmt.Errorf("%s: requests %s but TANDEM_DEVICE is %q", cr.where, gpuResource, device))
			case cuda && !gpu:
				errs = append(errs, fmt.Errorf("%s: TANDEM_DEVICE %s without a %s limit", cr.where, device, gpuResource))
			case cuda && img != "tandem-worker-cuda":
				errs = append(errs, fmt.Errorf("%s: TANDEM_DEVICE %s needs the tandem-worker-cuda image, not %s", cr.where, device, img))
			case !cuda && img == "tandem-worker-cuda":
				errs = append(errs, fmt.Errorf("%s: the CUDA image on TANDEM_DEVICE %s wastes a GPU image on a CPU pod", cr.where, device))
			}
			if gpu {
				n, _ := lim.AsInt64()
				if idx, err := strconv.Atoi(strings.TrimPrefix(device, "cuda:")); err == nil && int64(idx) >= n {
					errs = append(errs, fmt.Errorf("%s: TANDEM_DEVICE %s but only %d GPU(s) in the limit", cr.where, device, n))
				}
			}
		}
		if !podGPU {
			continue
		}
		tolerated := false
		for _, tol := range pt.spec.Tolerations {
			if tol.Key == string(gpuResource) && (tol.Effect == "" || tol.Effect == corev1.TaintEffectNoSchedule) &&
				(tol.Operator == corev1.TolerationOpExists || tol.Operator == corev1.TolerationOpEqual) {
				tolerated = true
			}
		}
		if !tolerated {
			errs = append(errs, fmt.Errorf("%s: requests GPUs but does not tolerate the %s:NoSchedule taint of GPU nodes", pt.owner, gpuResource))
		}
		if pt.spec.NodeSelector[gpuNodeLabel] != "true" && !requiresNodeLabel(pt.spec.Affinity, gpuNodeLabel) {
			errs = append(errs, fmt.Errorf("%s: requests GPUs but selects no GPU nodes (%s=true)", pt.owner, gpuNodeLabel))
		}
	}
	return errs
}

func requiresNodeLabel(a *corev1.Affinity, key string) bool {
	if a == nil || a.NodeAffinity == nil || a.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution == nil {
		return false
	}
	for _, term := range a.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms {
		for _, e := range term.MatchExpressions {
			if e.Key == key {
				return true
			}
		}
	}
	return false
}

// quantity parses s or returns the zero quantity; for values checked
// elsewhere.
func quantity(s string) resource.Quantity {
	q, err := resource.ParseQuantity(s)
	if err != nil {
		return resource.Quantity{}
	}
	return q
}

func isFalse(p *bool) bool { return p != nil && !*p }
