package k8s

import (
	"fmt"
	"path"
	"regexp"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// podTemplate is a pod spec some object will run: a Deployment's or
// StatefulSet's template, a ScaledJob's Job template, or a bare Pod.
type podTemplate struct {
	owner  string // "Deployment/tandem-worker-cpu"
	labels map[string]string
	spec   *corev1.PodSpec
	// longRunning pods are kept up by a controller forever, and so need
	// liveness and readiness probes; Job and tool pods end by themselves.
	longRunning bool
}

func (b *bundle) podTemplates() []podTemplate {
	var out []podTemplate
	for _, d := range all[*appsv1.Deployment](b) {
		out = append(out, podTemplate{"Deployment/" + d.Name, d.Spec.Template.Labels, &d.Spec.Template.Spec, true})
	}
	for _, s := range all[*appsv1.StatefulSet](b) {
		out = append(out, podTemplate{"StatefulSet/" + s.Name, s.Spec.Template.Labels, &s.Spec.Template.Spec, true})
	}
	for _, j := range all[*scaledJob](b) {
		out = append(out, podTemplate{"ScaledJob/" + j.Name, j.Spec.JobTargetRef.Template.Labels, &j.Spec.JobTargetRef.Template.Spec, false})
	}
	for _, p := range all[*corev1.Pod](b) {
		out = append(out, podTemplate{"Pod/" + p.Name, p.Labels, &p.Spec, false})
	}
	return out
}

// containers returns init and regular containers, each with a printable
// path for errors.
func (pt podTemplate) containers() []containerRef {
	var out []containerRef
	for i := range pt.spec.InitContainers {
		out = append(out, containerRef{pt.owner + " initContainer " + pt.spec.InitContainers[i].Name, &pt.spec.InitContainers[i]})
	}
	for i := range pt.spec.Containers {
		out = append(out, containerRef{pt.owner + " container " + pt.spec.Containers[i].Name, &pt.spec.Containers[i]})
	}
	return out
}

type containerRef struct {
	where string
	c     *corev1.Container
}

// tandemImage reports whether image is one of Tandem's own, and its name
// without registry and tag: "ghcr.io/x/tandem-worker:1" -> "tandem-worker".
func tandemImage(image string) (string, bool) {
	name := image
	if i := strings.Index(name, "@"); i >= 0 {
		name = name[:i]
	}
	base := path.Base(name)
	if i := strings.Index(base, ":"); i >= 0 {
		base = base[:i]
	}
	return base, strings.HasPrefix(base, "tandem-")
}

// envValue is one resolved environment variable.
type envValue struct {
	value  string                    // literal value, $(VAR) references expanded
	secret *corev1.SecretKeySelector // set when the value comes from a Secret
	raw    string                    // the value as written, before expansion
	from   string                    // where it came from, for messages
}

var envRef = regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)

// secretStandIn replaces a Secret's value when an environment is resolved:
// the tests never see real secrets, and a URL built around it still parses.
const secretStandIn = "secret-from-k8s"

// env resolves a container's environment the way the kubelet does: envFrom
// first (in order), then env entries, each $(VAR) expanded from the
// variables defined before it. ConfigMaps come from the bundle; Secret
// values become secretStandIn. A missing ConfigMap or key is an error.
func (b *bundle) env(c *corev1.Container) (map[string]envValue, error) {
	out := make(map[string]envValue)
	for _, ef := range c.EnvFrom {
		switch {
		case ef.ConfigMapRef != nil:
			cm, ok := named[*corev1.ConfigMap](b, ef.ConfigMapRef.Name)
			if !ok {
				if ef.ConfigMapRef.Optional != nil && *ef.ConfigMapRef.Optional {
					continue
				}
				return nil, fmt.Errorf("envFrom: ConfigMap %q is not in the bundle", ef.ConfigMapRef.Name)
			}
			for k, v := range cm.Data {
				out[ef.Prefix+k] = envValue{value: v, raw: v, from: "ConfigMap " + cm.Name}
			}
		case ef.SecretRef != nil:
			return nil, fmt.Errorf("envFrom: Secret %q: take single keys with secretKeyRef, so every variable from a Secret is named in the manifest", ef.SecretRef.Name)
		}
	}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
			expanded := envRef.ReplaceAllStringFunc(e.Value, func(ref string) string {
				name := envRef.FindStringSubmatch(ref)[1]
				if v, ok := out[name]; ok {
					return v.value
				}
				return ref // the kubelet leaves unknown references as written
			})
			out[e.Name] = envValue{value: expanded, raw: e.Value, from: "env"}
		case e.ValueFrom.SecretKeyRef != nil:
			out[e.Name] = envValue{value: secretStandIn, secret: e.ValueFrom.SecretKeyRef, from: "Secret " + e.ValueFrom.SecretKeyRef.Name}
		case e.ValueFrom.ConfigMapKeyRef != nil:
			ref := e.ValueFrom.ConfigMapKeyRef
			cm, ok := named[*corev1.ConfigMap](b, ref.Name)
			if !ok {
				return nil, fmt.Errorf("env %s: ConfigMap %q is not in the bundle", e.Name, ref.Name)
			}
			v, ok := cm.Data[ref.Key]
			if !ok {
				return nil, fmt.Errorf("env %s: ConfigMap %q has no key %q", e.Name, ref.Name, ref.Key)
			}
			out[e.Name] = envValue{value: v, raw: v, from: "ConfigMap " + cm.Name}
		default:
			out[e.Name] = envValue{from: "fieldRef"} // downward API: known only at run time
		}
	}
	return out, nil
}

// selects reports whether a label selector (as a map) selects pods with
// the given labels. An empty selector selects nothing here: every selector
// in these manifests is meant to be specific.
func selects(selector, podLabels map[string]string) bool {
	if len(selector) == 0 {
		return false
	}
	return labels.SelectorFromSet(selector).Matches(labels.Set(podLabels))
}
