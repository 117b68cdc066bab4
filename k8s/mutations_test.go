package k8s

import (
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestChecksCatchMistakes breaks a correct render in one way at a time and
// expects the matching check to say so: a check that passes everything
// proves nothing.
func TestChecksCatchMistakes(t *testing.T) {
	deployment := func(b *bundle, name string) *appsv1.Deployment {
		d, ok := named[*appsv1.Deployment](b, name)
		if !ok {
			t.Fatalf("%s: no Deployment %s", b.target, name)
		}
		return d
	}
	configMap := func(b *bundle, prefix string) *corev1.ConfigMap {
		for _, cm := range all[*corev1.ConfigMap](b) {
			if strings.HasPrefix(cm.Name, prefix+"-") || cm.Name == prefix {
				return cm
			}
		}
		t.Fatalf("%s: no ConfigMap %s", b.target, prefix)
		return nil
	}
	setEnv := func(c *corev1.Container, name string, v corev1.EnvVar) {
		for i := range c.Env {
			if c.Env[i].Name == name {
				c.Env[i] = v
				return
			}
		}
		c.Env = append(c.Env, v)
	}
	cases := []struct {
		name   string
		target string
		check  func(*bundle) []error
		mutate func(*bundle)
		want   string
	}{
		{"container without limits", "overlays/prod", checkResources, func(b *bundle) {
			deployment(b, "tandem-worker-cpu").Spec.Template.Spec.Containers[0].Resources.Limits = nil
		}, "no cpu limit"},
		{"password inline in a URL", "overlays/dev", checkSecretsByReference, func(b *bundle) {
			c := &deployment(b, "tandem-producer").Spec.Template.Spec.Containers[0]
			setEnv(c, "TANDEM_REDIS_URL", corev1.EnvVar{Name: "TANDEM_REDIS_URL", Value: "redis://:hunter2@tandem-redis.tandem.svc:6379/0"})
		}, "password in a URL"},
		{"password as a literal env value", "overlays/dev", checkSecretsByReference, func(b *bundle) {
			c := &deployment(b, "tandem-worker-cpu").Spec.Template.Spec.Containers[0]
			setEnv(c, "TANDEM_NATS_PASSWORD", corev1.EnvVar{Name: "TANDEM_NATS_PASSWORD", Value: "hunter2"})
		}, "looks like a credential"},
		{"password in a ConfigMap", "overlays/dev", checkSecretsByReference, func(b *bundle) {
			configMap(b, "tandem-config").Data["NATS_PASSWORD"] = "hunter2"
		}, "credentials belong in Secrets"},
		{"password in a config file", "overlays/prod", checkSecretsByReference, func(b *bundle) {
			cm := configMap(b, "tandem-nats")
			cm.Data["auth.conf"] = strings.Replace(cm.Data["auth.conf"], "$NATS_PASSWORD_WORKER", "hunter2", 1)
		}, "is set to a value"},
		{"real value in a shipped Secret", "overlays/dev", checkSecretData, func(b *bundle) {
			s, _ := named[*corev1.Secret](b, "tandem-redis")
			s.Data["password"] = []byte("hunter2")
		}, "other than the placeholder"},
		{"undocumented Secret", "overlays/prod", checkSecretsByReference, func(b *bundle) {
			c := &deployment(b, "tandem-scheduler").Spec.Template.Spec.Containers[0]
			c.Env[0].ValueFrom.SecretKeyRef.Name = "my-redis"
		}, "neither shipped nor one of the documented"},
		{"grace below the GPU worker's shutdown timeout", "overlays/prod", checkGracePeriod, func(b *bundle) {
			g := int64(60)
			deployment(b, "tandem-worker-gpu").Spec.Template.Spec.TerminationGracePeriodSeconds = &g
		}, "below TANDEM_SHUTDOWN_TIMEOUT"},
		{"shutdown timeout raised in the ConfigMap", "overlays/prod", checkGracePeriod, func(b *bundle) {
			configMap(b, "tandem-worker-cpu").Data["TANDEM_SHUTDOWN_TIMEOUT"] = "5m"
		}, "below TANDEM_SHUTDOWN_TIMEOUT 5m0s"},
		{"GPU worker without the toleration", "overlays/prod", checkGPU, func(b *bundle) {
			deployment(b, "tandem-worker-gpu").Spec.Template.Spec.Tolerations = nil
		}, "does not tolerate"},
		{"GPU worker without a GPU", "overlays/prod", checkGPU, func(b *bundle) {
			r := &deployment(b, "tandem-worker-gpu").Spec.Template.Spec.Containers[0].Resources
			delete(r.Limits, gpuResource)
			delete(r.Requests, gpuResource)
		}, "without a nvidia.com/gpu limit"},
		{"CPU image on the GPU pool", "overlays/prod", checkGPU, func(b *bundle) {
			c := &deployment(b, "tandem-worker-gpu").Spec.Template.Spec.Containers[0]
			c.Image = strings.Replace(c.Image, "tandem-worker-cuda", "tandem-worker", 1)
		}, "needs the tandem-worker-cuda image"},
		{"selector that misses its pods", "overlays/dev", checkSelectors, func(b *bundle) {
			deployment(b, "tandem-scheduler").Spec.Template.Labels["app.kubernetes.io/component"] = "sched"
		}, "does not match its template labels"},
		{"trigger on a queue the worker lacks", "overlays/prod", checkKEDA, func(b *bundle) {
			so, _ := named[*scaledObject](b, "tandem-worker-gpu")
			so.Spec.Triggers[0].Metadata["listName"] = "asynq:{bulk}:pending"
		}, `queue "bulk" is not in the worker's TANDEM_QUEUES`},
		{"queue without a trigger", "overlays/prod", checkKEDA, func(b *bundle) {
			configMap(b, "tandem-worker-cpu").Data["TANDEM_QUEUES"] = "interactive=6,default=3,finetune=1,bulk=1"
		}, `no trigger watches asynq:{bulk}:pending`},
		{"ScaledObject on a missing Deployment", "overlays/prod", checkKEDA, func(b *bundle) {
			so, _ := named[*scaledObject](b, "tandem-worker-cpu")
			so.Spec.ScaleTargetRef.Name = "tandem-workers"
		}, "is not in the bundle"},
		{"replica count under KEDA", "overlays/prod", checkKEDA, func(b *bundle) {
			n := int32(2)
			deployment(b, "tandem-worker-cpu").Spec.Replicas = &n
		}, "sets replicas"},
		{"trigger on another Redis database", "overlays/prod", checkKEDA, func(b *bundle) {
			so, _ := named[*scaledObject](b, "tandem-worker-cpu")
			so.Spec.Triggers[0].Metadata["databaseIndex"] = "3"
		}, "databaseIndex 3"},
		{"misspelt scaler parameter", "overlays/prod", checkKEDA, func(b *bundle) {
			so, _ := named[*scaledObject](b, "tandem-worker-cpu")
			so.Spec.Triggers[0].Metadata["listLenght"] = "5"
		}, "unknown redis scaler parameter"},
		{"image tag drift", "overlays/prod", checkImages, func(b *bundle) {
			c := &deployment(b, "tandem-worker-gpu").Spec.Template.Spec.Containers[0]
			c.Image = strings.Replace(c.Image, ":0.1.0", ":0.0.9", 1)
		}, "want ghcr.io"},
		{"unpinned third-party image", "overlays/dev", checkImages, func(b *bundle) {
			statefulByComponent(b, "redis").Spec.Template.Spec.Containers[0].Image = "redis"
		}, "not pinned"},
		{"privilege escalation", "overlays/dev", checkSecurityContext, func(b *bundle) {
			yes := true
			deployment(b, "tandem-producer").Spec.Template.Spec.Containers[0].SecurityContext.AllowPrivilegeEscalation = &yes
		}, "allowPrivilegeEscalation must be false"},
		{"writable root filesystem", "overlays/dev", checkSecurityContext, func(b *bundle) {
			no := false
			statefulByComponent(b, "nats").Spec.Template.Spec.Containers[0].SecurityContext.ReadOnlyRootFilesystem = &no
		}, "readOnlyRootFilesystem must be true"},
		{"no /tmp volume", "overlays/dev", checkSecurityContext, func(b *bundle) {
			c := &deployment(b, "tandem-worker-cpu").Spec.Template.Spec.Containers[0]
			c.VolumeMounts = c.VolumeMounts[1:]
		}, "/tmp must be a writable emptyDir"},
		{"queues the worker would refuse", "overlays/dev", checkTandemConfig, func(b *bundle) {
			configMap(b, "tandem-worker-cpu").Data["TANDEM_QUEUES"] = "interactive"
		}, "would refuse its configuration"},
		{"misspelt TANDEM variable", "overlays/dev", checkTandemConfig, func(b *bundle) {
			configMap(b, "tandem-worker-cpu").Data["TANDEM_QUEUE"] = "default=1"
		}, "TANDEM_QUEUE (ConfigMap"},
		{"admin server on loopback", "overlays/dev", checkTandemConfig, func(b *bundle) {
			c := &deployment(b, "tandem-worker-cpu").Spec.Template.Spec.Containers[0]
			setEnv(c, "TANDEM_ADMIN_ADDR", corev1.EnvVar{Name: "TANDEM_ADMIN_ADDR", Value: "127.0.0.1:9101"})
		}, "listens on 127.0.0.1 only"},
		{"GOMEMLIMIT above a shrunk limit", "overlays/dev", checkGoMemLimit, func(b *bundle) {
			c := &deployment(b, "tandem-scheduler").Spec.Template.Spec.Containers[0]
			setEnv(c, "GOMEMLIMIT", corev1.EnvVar{Name: "GOMEMLIMIT", Value: "640MiB"})
		}, "GOMEMLIMIT 640MiB is above 90% of the memory limit 128Mi"},
		{"GOMEMLIMIT Go cannot read", "overlays/prod", checkGoMemLimit, func(b *bundle) {
			c := &deployment(b, "tandem-scheduler").Spec.Template.Spec.Containers[0]
			setEnv(c, "GOMEMLIMIT", corev1.EnvVar{Name: "GOMEMLIMIT", Value: "640Mi"})
		}, `GOMEMLIMIT: "640Mi" is not a size`},
		{"Redis that evicts", "overlays/dev", checkRedis, func(b *bundle) {
			cm := configMap(b, "tandem-redis")
			cm.Data["redis.conf"] = strings.Replace(cm.Data["redis.conf"], "noeviction", "allkeys-lru", 1)
		}, `maxmemory-policy is "allkeys-lru"`},
		{"NATS replicas without routes", "overlays/prod", checkNATS, func(b *bundle) {
			n := int32(5)
			statefulByComponent(b, "nats").Spec.Replicas = &n
		}, "5 replicas but the cluster routes name pods [0 1 2]"},
		{"NATS config the server refuses", "overlays/dev", checkNATS, func(b *bundle) {
			cm := configMap(b, "tandem-nats")
			cm.Data["nats.conf"] = strings.Replace(cm.Data["nats.conf"], "lame_duck_duration: 30s", "lame_duck_duration: 5s", 1)
		}, "nats-server refuses"},
		{"NATS grace shorter than lame-duck mode", "overlays/prod", checkNATS, func(b *bundle) {
			g := int64(30)
			statefulByComponent(b, "nats").Spec.Template.Spec.TerminationGracePeriodSeconds = &g
		}, "does not outlast lame-duck mode"},
		{"NATS user the server lacks", "overlays/prod", checkNATS, func(b *bundle) {
			c := &deployment(b, "tandem-producer").Spec.Template.Spec.Containers[0]
			setEnv(c, "TANDEM_NATS_USER", corev1.EnvVar{Name: "TANDEM_NATS_USER", Value: "pipeline"})
		}, `as "pipeline", a user the NATS config does not define`},
		{"worker logged in as the producer", "overlays/prod", checkNATS, func(b *bundle) {
			c := &deployment(b, "tandem-worker-gpu").Spec.Template.Spec.Containers[0]
			setEnv(c, "TANDEM_NATS_USER", corev1.EnvVar{Name: "TANDEM_NATS_USER", Value: "producer"})
		}, `the worker logs in to NATS as "producer"`},
		{"NATS role with a wider permission", "overlays/dev", checkNATS, func(b *bundle) {
			cm := configMap(b, "tandem-nats")
			cm.Data["auth.conf"] = strings.Replace(cm.Data["auth.conf"], `"_INBOX_worker.>"`, `"_INBOX_worker.>", "tandem.gen.*.tokens"`, 1)
		}, "NATS user worker: subscribe allow is"},
		{"NATS with the periodic fsync", "overlays/prod", checkNATS, func(b *bundle) {
			cm := configMap(b, "tandem-nats")
			cm.Data["nats.conf"] = strings.Replace(cm.Data["nats.conf"], "sync_interval: always", "sync_interval: 2m", 1)
		}, "not every write (sync_interval: always)"},
		{"NATS user outside the roles", "overlays/prod", checkNATS, func(b *bundle) {
			cm := configMap(b, "tandem-nats")
			cm.Data["auth.conf"] = strings.Replace(cm.Data["auth.conf"], "  users: [\n", "  users: [\n    { user: tandem, password: $NATS_PASSWORD_WORKER }\n", 1)
		}, `NATS user "tandem" is not one of Tandem's roles`},
		{"Redis address with no Service", "overlays/dev", checkTandemConfig, func(b *bundle) {
			configMap(b, "tandem-config").Data["REDIS_ADDR"] = "redis.tandem.svc:6379"
		}, "no Service redis in the bundle"},
		{"NetworkPolicy open to all", "overlays/dev", checkNetworkPolicies, func(b *bundle) {
			np, _ := named[*networkingv1.NetworkPolicy](b, "tandem-redis")
			np.Spec.Ingress = append(np.Spec.Ingress, networkingv1.NetworkPolicyIngressRule{})
		}, "admits every source"},
		{"producer without a NetworkPolicy", "overlays/dev", checkNetworkPolicies, func(b *bundle) {
			b.objects = slices.DeleteFunc(b.objects, func(o *object) bool {
				np, ok := o.Obj.(*networkingv1.NetworkPolicy)
				return ok && np.Name == "tandem-producer"
			})
		}, "Deployment/tandem-producer: no NetworkPolicy restricts who reaches it"},
		{"workers admitted to the producer", "overlays/prod", checkNetworkPolicies, func(b *bundle) {
			np, _ := named[*networkingv1.NetworkPolicy](b, "tandem-producer-from-ingress")
			np.Spec.Ingress[0].From = append(np.Spec.Ingress[0].From, networkingv1.NetworkPolicyPeer{PodSelector: &metav1.LabelSelector{MatchLabels: partOf}})
		}, "to the producer; only the ingress controller and Prometheus reach it"},
		{"producer serving an open API", "overlays/prod", checkAPIAuth, func(b *bundle) {
			c := &deployment(b, "tandem-producer").Spec.Template.Spec.Containers[0]
			c.Env = slices.DeleteFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == "TANDEM_API_REQUIRE_AUTH" })
		}, "TANDEM_API_REQUIRE_AUTH is not"},
		{"API tokens outside a Secret", "overlays/prod", checkAPIAuth, func(b *bundle) {
			c := &deployment(b, "tandem-producer").Spec.Template.Spec.Containers[0]
			setEnv(c, "TANDEM_API_TOKENS", corev1.EnvVar{Name: "TANDEM_API_TOKENS", Value: "/var/lib/tandem/tokens"})
		}, "is not a file of a Secret volume"},
		{"example API tokens the producer refuses", "overlays/dev", checkAPIAuth, func(b *bundle) {
			s, _ := named[*corev1.Secret](b, "tandem-api-tokens")
			s.Data["tokens"] = []byte(examplePlaceholder + " operator everything")
		}, "the producer would not load its tokens"},
		{"client pod without the admitted label", "overlays/dev", checkNetworkPolicies, func(b *bundle) {
			delete(deployment(b, "tandem-worker-cpu").Spec.Template.Labels, "app.kubernetes.io/part-of")
		}, "lacks the label"},
		{"no liveness probe", "overlays/dev", checkProbes, func(b *bundle) {
			deployment(b, "tandem-scheduler").Spec.Template.Spec.Containers[0].LivenessProbe = nil
		}, "no liveness probe"},
		{"workload without a PodDisruptionBudget", "overlays/prod", checkDisruptionBudgets, func(b *bundle) {
			var kept []*object
			for _, o := range b.objects {
				if p, ok := o.Obj.(*policyv1.PodDisruptionBudget); ok && p.Name == "tandem-worker-gpu" {
					continue
				}
				kept = append(kept, o)
			}
			b.objects = kept
		}, "covered by 0 PodDisruptionBudgets"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := load(t, tc.target)
			if errs := tc.check(b); len(errs) > 0 {
				t.Fatalf("fails before the mutation: %v", errs)
			}
			tc.mutate(b)
			errs := tc.check(b)
			for _, err := range errs {
				if strings.Contains(err.Error(), tc.want) {
					return
				}
			}
			t.Errorf("want an error containing %q, got %v", tc.want, errs)
		})
	}
}

// TestStrictDecoding: a misspelt field is an error, in built-in kinds and in
// the local CRD types alike.
func TestStrictDecoding(t *testing.T) {
	for name, doc := range map[string]string{
		"built-in":        `{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"x"},"spec":{"replicas":1,"replica":2}}`,
		"case":            `{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"x"},"spec":{"Replicas":1}}`,
		"duplicate":       `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"x"},"data":{"a":"1"},"data":{"b":"2"}}`,
		"crd":             `{"apiVersion":"keda.sh/v1alpha1","kind":"ScaledObject","metadata":{"name":"x"},"spec":{"scaleTargetRef":{"name":"w"},"triggers":[],"minReplicas":1}}`,
		"unregistered":    `{"apiVersion":"batch/v1","kind":"CronJob","metadata":{"name":"x"}}`,
		"nested in a CRD": `{"apiVersion":"keda.sh/v1alpha1","kind":"ScaledJob","metadata":{"name":"x"},"spec":{"jobTargetRef":{"template":{"spec":{"containers":[{"name":"c","imagePullPolicy":"Always","imagee":"x"}]}}},"triggers":[]}}`,
	} {
		if _, err := decodeStrict([]byte(doc)); err == nil {
			t.Errorf("%s: decoded without an error", name)
		}
	}
}

// TestDockerfileLintCatchesMistakes: each rule of lintDockerfile fires.
func TestDockerfileLintCatchesMistakes(t *testing.T) {
	good := `ARG GO_VERSION=1.26.8
FROM golang:${GO_VERSION}-bookworm AS build
ENV CGO_ENABLED=0
RUN go build -o /out/producer ./cmd/producer
FROM gcr.io/distroless/static-debian12:nonroot
LABEL org.opencontainers.image.title="tandem-producer" \
      org.opencontainers.image.description="d" \
      org.opencontainers.image.source="s" org.opencontainers.image.version="v"
COPY --from=build /out/producer /usr/local/bin/producer
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/producer"]
`
	if errs := lintDockerfile("tandem-producer", good); len(errs) > 0 {
		t.Fatalf("the good Dockerfile fails: %v", errs)
	}
	for name, c := range map[string]struct{ from, to, want string }{
		"root user":        {"USER 65532:65532", "USER 0", "is root"},
		"named user":       {"USER 65532:65532", "USER nobody", "numeric uid"},
		"no user":          {"USER 65532:65532\n", "", "no USER"},
		"ADD of a URL":     {"COPY --from=build", "ADD https://example.com/x /x\nCOPY --from=build", "ADD of a URL"},
		"shell entrypoint": {`ENTRYPOINT ["/usr/local/bin/producer"]`, "ENTRYPOINT /usr/local/bin/producer serve", "exec form"},
		"missing label":    {`org.opencontainers.image.version="v"`, "", "org.opencontainers.image.version"},
		"unpinned base":    {"gcr.io/distroless/static-debian12:nonroot", "gcr.io/distroless/static-debian12", "not pinned"},
		"unknown ARG":      {"${GO_VERSION}", "${GOVERSION}", "no ARG"},
		"single stage":     {"FROM gcr.io/distroless/static-debian12:nonroot\n", "", "one stage"},
		"cgo left on":      {"ENV CGO_ENABLED=0", "ENV CGO_ENABLED=1", "CGO_ENABLED=0"},
		"secret in ENV":    {"ENV CGO_ENABLED=0", "ENV CGO_ENABLED=0 REDIS_PASSWORD=x", "credentials never go"},
	} {
		bad := strings.Replace(good, c.from, c.to, 1)
		if bad == good {
			t.Fatalf("%s: the mutation changed nothing", name)
		}
		found := false
		for _, err := range lintDockerfile("tandem-producer", bad) {
			found = found || strings.Contains(err.Error(), c.want)
		}
		if !found {
			t.Errorf("%s: want an error containing %q, got %v", name, c.want, lintDockerfile("tandem-producer", bad))
		}
	}
}
