package k8s

import (
	"fmt"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// workload is a Deployment or StatefulSet: something with a selector, a pod
// template and a replica count.
type workload struct {
	kind, name string
	selector   *metav1.LabelSelector
	template   *corev1.PodTemplateSpec
}

func (b *bundle) workloads() []workload {
	var out []workload
	for _, d := range all[*appsv1.Deployment](b) {
		out = append(out, workload{"Deployment", d.Name, d.Spec.Selector, &d.Spec.Template})
	}
	for _, s := range all[*appsv1.StatefulSet](b) {
		out = append(out, workload{"StatefulSet", s.Name, s.Spec.Selector, &s.Spec.Template})
	}
	return out
}

// labelSelects applies a full LabelSelector (match labels and expressions)
// to a set of pod labels.
func labelSelects(sel *metav1.LabelSelector, podLabels map[string]string) (bool, error) {
	if sel == nil || (len(sel.MatchLabels) == 0 && len(sel.MatchExpressions) == 0) {
		return false, nil
	}
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		return false, err
	}
	return s.Matches(labels.Set(podLabels)), nil
}

// checkSelectors: each workload's selector matches its own template (the API
// server refuses one that does not), and selects no other workload's pods.
func checkSelectors(b *bundle) []error {
	var errs []error
	ws := b.workloads()
	for _, w := range ws {
		ok, err := labelSelects(w.selector, w.template.Labels)
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("%s/%s: selector: %w", w.kind, w.name, err))
		case !ok:
			errs = append(errs, fmt.Errorf("%s/%s: selector %v does not match its template labels %v", w.kind, w.name, w.selector, w.template.Labels))
		}
		for _, other := range ws {
			if other.name == w.name && other.kind == w.kind {
				continue
			}
			if ok, _ := labelSelects(w.selector, other.template.Labels); ok {
				errs = append(errs, fmt.Errorf("%s/%s: selector also matches the pods of %s/%s", w.kind, w.name, other.kind, other.name))
			}
		}
	}
	for _, svc := range all[*corev1.Service](b) {
		var matched []workload
		for _, w := range ws {
			if selects(svc.Spec.Selector, w.template.Labels) {
				matched = append(matched, w)
			}
		}
		if len(matched) == 0 {
			errs = append(errs, fmt.Errorf("Service %s: selector %v matches no workload", svc.Name, svc.Spec.Selector))
			continue
		}
		for _, p := range svc.Spec.Ports {
			if p.TargetPort.StrVal == "" {
				continue
			}
			for _, w := range matched {
				found := false
				for i := range w.template.Spec.Containers {
					found = found || hasPort(&w.template.Spec.Containers[i], p.TargetPort.StrVal)
				}
				if !found {
					errs = append(errs, fmt.Errorf("Service %s: targetPort %s is not a port of %s/%s", svc.Name, p.TargetPort.StrVal, w.kind, w.name))
				}
			}
		}
	}
	for _, s := range all[*appsv1.StatefulSet](b) {
		svc, ok := named[*corev1.Service](b, s.Spec.ServiceName)
		if !ok || svc.Spec.ClusterIP != corev1.ClusterIPNone {
			errs = append(errs, fmt.Errorf("StatefulSet/%s: serviceName %q is not a headless Service of the bundle", s.Name, s.Spec.ServiceName))
		}
	}
	return errs
}

// externalClaims may be mounted by bundles that do not create them: the
// tools run beside an overlay that does.
var externalClaims = map[string]bool{"tandem-shared": true}

// checkReferences: every ConfigMap, claim, service account and scale target
// named by an object exists in the same bundle.
func checkReferences(b *bundle) []error {
	var errs []error
	for _, pt := range b.podTemplates() {
		if sa := pt.spec.ServiceAccountName; sa != "" {
			if _, ok := named[*corev1.ServiceAccount](b, sa); !ok {
				errs = append(errs, fmt.Errorf("%s: service account %s is not in the bundle", pt.owner, sa))
			}
		}
		for _, v := range pt.spec.Volumes {
			if v.ConfigMap != nil {
				if _, ok := named[*corev1.ConfigMap](b, v.ConfigMap.Name); !ok {
					errs = append(errs, fmt.Errorf("%s: volume %s: ConfigMap %s is not in the bundle", pt.owner, v.Name, v.ConfigMap.Name))
				}
			}
			if v.PersistentVolumeClaim != nil {
				claim := v.PersistentVolumeClaim.ClaimName
				if _, ok := named[*corev1.PersistentVolumeClaim](b, claim); !ok && !externalClaims[claim] {
					errs = append(errs, fmt.Errorf("%s: volume %s: claim %s is not in the bundle", pt.owner, v.Name, v.PersistentVolumeClaim.ClaimName))
				}
			}
		}
		for _, cr := range pt.containers() {
			names := make(map[string]bool)
			for _, v := range pt.spec.Volumes {
				names[v.Name] = true
			}
			if name, ok := strings.CutPrefix(pt.owner, "StatefulSet/"); ok {
				if s, ok := named[*appsv1.StatefulSet](b, name); ok {
					for _, vct := range s.Spec.VolumeClaimTemplates {
						names[vct.Name] = true
					}
				}
			}
			for _, m := range cr.c.VolumeMounts {
				if !names[m.Name] {
					errs = append(errs, fmt.Errorf("%s: mounts volume %s, which the pod does not have", cr.where, m.Name))
				}
			}
			if _, err := b.env(cr.c); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", cr.where, err))
			}
		}
	}
	deployments := make(map[string]bool)
	for _, d := range all[*appsv1.Deployment](b) {
		deployments[d.Name] = true
	}
	for _, h := range all[*autoscalingv2.HorizontalPodAutoscaler](b) {
		if h.Spec.ScaleTargetRef.Kind != "Deployment" || !deployments[h.Spec.ScaleTargetRef.Name] {
			errs = append(errs, fmt.Errorf("HorizontalPodAutoscaler %s: target %s/%s is not a Deployment of the bundle", h.Name, h.Spec.ScaleTargetRef.Kind, h.Spec.ScaleTargetRef.Name))
		}
	}
	for _, ing := range all[*networkingv1.Ingress](b) {
		for _, r := range ing.Spec.Rules {
			if r.HTTP == nil {
				continue
			}
			for _, p := range r.HTTP.Paths {
				be := p.Backend.Service
				if be == nil {
					continue
				}
				svc, ok := named[*corev1.Service](b, be.Name)
				if !ok {
					errs = append(errs, fmt.Errorf("Ingress %s: backend Service %s is not in the bundle", ing.Name, be.Name))
					continue
				}
				found := false
				for _, sp := range svc.Spec.Ports {
					found = found || (be.Port.Name != "" && sp.Name == be.Port.Name) || (be.Port.Number != 0 && sp.Port == be.Port.Number)
				}
				if !found {
					errs = append(errs, fmt.Errorf("Ingress %s: Service %s has no port %v", ing.Name, be.Name, be.Port))
				}
			}
		}
	}
	return errs
}

// checkDisruptionBudgets: every workload is covered by exactly one budget,
// and every budget covers a workload.
func checkDisruptionBudgets(b *bundle) []error {
	var errs []error
	pdbs := all[*policyv1.PodDisruptionBudget](b)
	for _, w := range b.workloads() {
		n := 0
		for _, p := range pdbs {
			if ok, _ := labelSelects(p.Spec.Selector, w.template.Labels); ok {
				n++
			}
		}
		if n != 1 {
			errs = append(errs, fmt.Errorf("%s/%s: covered by %d PodDisruptionBudgets, want 1", w.kind, w.name, n))
		}
	}
	for _, p := range pdbs {
		covered := false
		for _, w := range b.workloads() {
			if ok, _ := labelSelects(p.Spec.Selector, w.template.Labels); ok {
				covered = true
			}
		}
		if !covered {
			errs = append(errs, fmt.Errorf("PodDisruptionBudget %s: selects no workload", p.Name))
		}
		if (p.Spec.MinAvailable == nil) == (p.Spec.MaxUnavailable == nil) {
			errs = append(errs, fmt.Errorf("PodDisruptionBudget %s: set exactly one of minAvailable and maxUnavailable", p.Name))
		}
	}
	return errs
}

// partOf is the label the NetworkPolicies admit Redis and NATS clients by.
var partOf = map[string]string{"app.kubernetes.io/part-of": "tandem"}

// externalPeer is a pod outside Tandem's that a NetworkPolicy admits, as a
// default install of its chart places and labels it.
type externalPeer struct{ namespace, podLabel, podValue string }

var (
	// kedaOperator reads the asynq lists from Redis.
	kedaOperator = externalPeer{"keda", "app", "keda-operator"}
	// ingressController and prometheus are all that reach the producer
	// (components/ingress, components/monitoring): no Tandem process calls it.
	ingressController = externalPeer{"ingress-nginx", "app.kubernetes.io/name", "ingress-nginx"}
	prometheus        = externalPeer{"monitoring", "app.kubernetes.io/name", "prometheus"}
)

// checkNetworkPolicies: Redis and NATS pods accept connections only from
// Tandem's pods (and KEDA's operator, for Redis), the producer only from the
// ingress controller and Prometheus on its API port, every pod that needs
// Redis or NATS carries the admitted label, and no rule admits the world.
func checkNetworkPolicies(b *bundle) []error {
	var errs []error
	policies := all[*networkingv1.NetworkPolicy](b)
	for _, np := range policies {
		for i, rule := range np.Spec.Ingress {
			if len(rule.From) == 0 {
				errs = append(errs, fmt.Errorf("NetworkPolicy %s: ingress rule %d admits every source", np.Name, i))
			}
			if len(rule.Ports) == 0 {
				errs = append(errs, fmt.Errorf("NetworkPolicy %s: ingress rule %d admits every port", np.Name, i))
			}
			for _, peer := range rule.From {
				if !allowedPeer(peer, np) {
					errs = append(errs, fmt.Errorf("NetworkPolicy %s: ingress rule %d admits a peer other than Tandem's pods: %+v", np.Name, i, peer))
				}
			}
		}
	}
	for _, w := range b.workloads() {
		if w.template.Labels["app.kubernetes.io/component"] == "producer" {
			errs = append(errs, checkProducerPolicies(policies, w)...)
		}
	}
	for _, component := range []string{"redis", "nats", "producer"} {
		for _, w := range b.workloads() {
			if w.template.Labels["app.kubernetes.io/component"] != component {
				continue
			}
			guarded := false
			for _, np := range policies {
				if ok, _ := labelSelects(&np.Spec.PodSelector, w.template.Labels); ok && hasPolicyType(np, networkingv1.PolicyTypeIngress) {
					guarded = true
				}
			}
			if !guarded {
				errs = append(errs, fmt.Errorf("%s/%s: no NetworkPolicy restricts who reaches it", w.kind, w.name))
			}
		}
	}
	for _, pt := range b.podTemplates() {
		for _, cr := range pt.containers() {
			env, err := b.env(cr.c)
			if err != nil {
				continue
			}
			_, redis := env["TANDEM_REDIS_URL"]
			_, nats := env["TANDEM_NATS_URL"]
			if (redis || nats) && !selects(partOf, pt.labels) {
				errs = append(errs, fmt.Errorf("%s: talks to Redis/NATS but lacks the label %v the NetworkPolicies admit", cr.where, partOf))
			}
		}
	}
	return errs
}

func hasPolicyType(np *networkingv1.NetworkPolicy, t networkingv1.PolicyType) bool {
	for _, pt := range np.Spec.PolicyTypes {
		if pt == t {
			return true
		}
	}
	return false
}

// checkProducerPolicies: what may reach the producer w is the ingress
// controller and Prometheus, on its API port only.
func checkProducerPolicies(policies []*networkingv1.NetworkPolicy, w workload) []error {
	var errs []error
	for _, np := range policies {
		if ok, _ := labelSelects(&np.Spec.PodSelector, w.template.Labels); !ok {
			continue
		}
		for i, rule := range np.Spec.Ingress {
			for _, peer := range rule.From {
				if !isPeer(peer, ingressController) && !isPeer(peer, prometheus) {
					errs = append(errs, fmt.Errorf("NetworkPolicy %s: ingress rule %d admits %+v to the producer; only the ingress controller and Prometheus reach it", np.Name, i, peer))
				}
			}
			for _, p := range rule.Ports {
				if p.Port == nil || (p.Port.String() != "http" && p.Port.IntValue() != apiPort(w)) {
					errs = append(errs, fmt.Errorf("NetworkPolicy %s: ingress rule %d admits the producer's port %v; only the API port %d", np.Name, i, p.Port, apiPort(w)))
				}
			}
		}
	}
	return errs
}

// apiPort is the container port named http of w, 0 if none.
func apiPort(w workload) int {
	for _, c := range w.template.Spec.Containers {
		for _, p := range c.Ports {
			if p.Name == "http" {
				return int(p.ContainerPort)
			}
		}
	}
	return 0
}

// isPeer reports whether peer is exactly the pods of e.
func isPeer(peer networkingv1.NetworkPolicyPeer, e externalPeer) bool {
	return peer.IPBlock == nil && peer.PodSelector != nil && peer.NamespaceSelector != nil &&
		fmt.Sprint(peer.NamespaceSelector.MatchLabels) == fmt.Sprint(map[string]string{"kubernetes.io/metadata.name": e.namespace}) &&
		len(peer.NamespaceSelector.MatchExpressions) == 0 && len(peer.PodSelector.MatchExpressions) == 0 &&
		fmt.Sprint(peer.PodSelector.MatchLabels) == fmt.Sprint(map[string]string{e.podLabel: e.podValue})
}

// allowedPeer: Tandem's pods in the same namespace, the guarded pods
// themselves (NATS routes), or one of the external peers.
func allowedPeer(peer networkingv1.NetworkPolicyPeer, np *networkingv1.NetworkPolicy) bool {
	if peer.IPBlock != nil || peer.PodSelector == nil {
		return false
	}
	if peer.NamespaceSelector != nil {
		return isPeer(peer, kedaOperator) || isPeer(peer, ingressController) || isPeer(peer, prometheus)
	}
	if len(peer.PodSelector.MatchExpressions) > 0 {
		return false
	}
	ml := peer.PodSelector.MatchLabels
	if ml["app.kubernetes.io/part-of"] == "tandem" {
		return true
	}
	return len(ml) > 0 && fmt.Sprint(ml) == fmt.Sprint(np.Spec.PodSelector.MatchLabels)
}
