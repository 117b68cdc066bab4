package k8s

import (
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
)

// TestDevOverlay: one of everything, no GPU, and nothing that needs a CRD,
// so it applies to a bare kind or minikube cluster.
func TestDevOverlay(t *testing.T) {
	b := load(t, "overlays/dev")
	for _, o := range b.objects {
		if !builtinAPIGroups[o.APIVersion] {
			t.Errorf("%s (%s) needs a CRD; dev must apply to a bare cluster", o, o.APIVersion)
		}
	}
	for _, d := range all[*appsv1.Deployment](b) {
		if d.Spec.Replicas == nil || *d.Spec.Replicas != 1 {
			t.Errorf("Deployment %s: want 1 replica in dev", d.Name)
		}
	}
	for _, s := range all[*appsv1.StatefulSet](b) {
		if s.Spec.Replicas == nil || *s.Spec.Replicas != 1 {
			t.Errorf("StatefulSet %s: want 1 replica in dev", s.Name)
		}
	}
	for _, pt := range b.podTemplates() {
		for _, cr := range pt.containers() {
			if _, ok := cr.c.Resources.Limits[gpuResource]; ok {
				t.Errorf("%s: requests a GPU in dev", cr.where)
			}
			if mem := cr.c.Resources.Limits[corev1.ResourceMemory]; mem.Cmp(quantity("1Gi")) > 0 {
				t.Errorf("%s: memory limit %s; dev keeps every pod at 1Gi or less", cr.where, mem.String())
			}
		}
	}
	if len(all[*corev1.Secret](b)) == 0 {
		t.Error("dev ships no example Secrets; the pods would wait for tandem-redis and tandem-nats")
	}
}

// schedulerReloadPeak is the scheduler's peak resident memory during a
// live-model reload at 100k users x 20k items x 2M events, measured
// (docs/PERFORMANCE.md, "Live model memory"), rounded up.
const schedulerReloadPeak = "440Mi"

// TestProdOverlay: the GPU pool, the three-server NATS cluster, KEDA on
// both worker pools, monitoring, and no Secret shipped at all.
func TestProdOverlay(t *testing.T) {
	b := load(t, "overlays/prod")
	gpu := false
	for _, pt := range b.podTemplates() {
		for _, cr := range pt.containers() {
			if _, ok := cr.c.Resources.Limits[gpuResource]; ok {
				gpu = true
			}
		}
	}
	if !gpu {
		t.Error("prod has no GPU worker pool")
	}
	if s := statefulByComponent(b, "nats"); s == nil || s.Spec.Replicas == nil || *s.Spec.Replicas != 3 {
		t.Error("prod: want a 3-server NATS StatefulSet")
	}
	if s, ok := named[*appsv1.Deployment](b, "tandem-scheduler"); !ok || s.Spec.Replicas == nil || *s.Spec.Replicas < 2 {
		t.Error("prod: want at least 2 scheduler replicas (ticks dedupe by task id)")
	}
	if s, ok := named[*appsv1.Deployment](b, "tandem-scheduler"); ok {
		// The live model's measured peak at the product's scale: a nightly
		// reload holds two models (docs/PERFORMANCE.md).
		peak := quantity(schedulerReloadPeak)
		r := s.Spec.Template.Spec.Containers[0].Resources
		if req := r.Requests[corev1.ResourceMemory]; req.Cmp(peak) < 0 {
			t.Errorf("prod: scheduler memory request %s is below the live model's reload peak %s at 100k users x 20k items x 2M events", req.String(), schedulerReloadPeak)
		}
		if lim := r.Limits[corev1.ResourceMemory]; float64(lim.Value()) < 1.5*float64(peak.Value()) {
			t.Errorf("prod: scheduler memory limit %s leaves less than half again over the reload peak %s", lim.String(), schedulerReloadPeak)
		}
	}
	scaled := make(map[string]bool)
	for _, so := range all[*scaledObject](b) {
		scaled[so.Spec.ScaleTargetRef.Name] = true
	}
	for _, d := range all[*appsv1.Deployment](b) {
		if strings.HasPrefix(d.Name, "tandem-worker-") && !scaled[d.Name] {
			t.Errorf("prod: worker Deployment %s has no ScaledObject", d.Name)
		}
	}
	if len(all[*serviceMonitor](b)) == 0 {
		t.Error("prod has no ServiceMonitor")
	}
	if s := all[*corev1.Secret](b); len(s) > 0 {
		t.Errorf("prod ships %d Secret(s); production Secrets are created in the cluster (docs/DEPLOY.md)", len(s))
	}
}

// TestExampleFinetuneJobs: the ScaledJob example runs on GPU nodes and
// watches the finetune queue, the queue its pods take.
func TestExampleFinetuneJobs(t *testing.T) {
	b := load(t, "examples/prod-finetune-jobs")
	jobs := all[*scaledJob](b)
	if len(jobs) != 1 {
		t.Fatalf("want 1 ScaledJob, have %d", len(jobs))
	}
	env, err := b.env(&jobs[0].Spec.JobTargetRef.Template.Spec.Containers[0])
	if err != nil {
		t.Fatal(err)
	}
	if q := env["TANDEM_QUEUES"].value; q != "finetune=1" {
		t.Errorf("the fine-tune Job takes queues %q, want finetune=1", q)
	}
}
