package k8s

import (
	"encoding/json"
	"errors"
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	sigsjson "sigs.k8s.io/json"
)

// object is one rendered Kubernetes object, decoded into its Go type.
type object struct {
	APIVersion, Kind string
	Meta             metav1.Object
	// Obj is a pointer to the typed object: *appsv1.Deployment,
	// *scaledObject, ...
	Obj any
}

func (o *object) String() string { return o.Kind + "/" + o.Meta.GetName() }

// bundle is everything one kustomization renders.
type bundle struct {
	target  string
	objects []*object
}

// kinds maps apiVersion/kind to a constructor of the Go type it decodes
// into. A kind missing here fails the tests: add its type rather than let
// an object go unchecked.
var kinds = map[string]func() any{
	"v1/Namespace":                            func() any { return &corev1.Namespace{} },
	"v1/ServiceAccount":                       func() any { return &corev1.ServiceAccount{} },
	"v1/ConfigMap":                            func() any { return &corev1.ConfigMap{} },
	"v1/Secret":                               func() any { return &corev1.Secret{} },
	"v1/Service":                              func() any { return &corev1.Service{} },
	"v1/PersistentVolumeClaim":                func() any { return &corev1.PersistentVolumeClaim{} },
	"v1/Pod":                                  func() any { return &corev1.Pod{} },
	"apps/v1/Deployment":                      func() any { return &appsv1.Deployment{} },
	"apps/v1/StatefulSet":                     func() any { return &appsv1.StatefulSet{} },
	"policy/v1/PodDisruptionBudget":           func() any { return &policyv1.PodDisruptionBudget{} },
	"networking.k8s.io/v1/NetworkPolicy":      func() any { return &networkingv1.NetworkPolicy{} },
	"networking.k8s.io/v1/Ingress":            func() any { return &networkingv1.Ingress{} },
	"autoscaling/v2/HorizontalPodAutoscaler":  func() any { return &autoscalingv2.HorizontalPodAutoscaler{} },
	"keda.sh/v1alpha1/ScaledObject":           func() any { return &scaledObject{} },
	"keda.sh/v1alpha1/ScaledJob":              func() any { return &scaledJob{} },
	"keda.sh/v1alpha1/TriggerAuthentication":  func() any { return &triggerAuthentication{} },
	"monitoring.coreos.com/v1/ServiceMonitor": func() any { return &serviceMonitor{} },
}

// builtinAPIGroups are served by every cluster; other groups need CRDs.
var builtinAPIGroups = map[string]bool{
	"v1": true, "apps/v1": true, "policy/v1": true, "networking.k8s.io/v1": true,
	"autoscaling/v2": true, "batch/v1": true,
}

// decodeStrict decodes one JSON object into its registered type. Unknown
// and duplicate fields are errors, and field names are case-sensitive, as in
// the API server's strict field validation.
func decodeStrict(data []byte) (*object, error) {
	var tm metav1.TypeMeta
	if err := json.Unmarshal(data, &tm); err != nil {
		return nil, fmt.Errorf("not a JSON object: %w", err)
	}
	newObj, ok := kinds[tm.APIVersion+"/"+tm.Kind]
	if !ok {
		return nil, fmt.Errorf("%s %s: no Go type registered (add one to kinds in decode_test.go)", tm.APIVersion, tm.Kind)
	}
	obj := newObj()
	strictErrs, err := sigsjson.UnmarshalStrict(data, obj, sigsjson.DisallowUnknownFields, sigsjson.DisallowDuplicateFields)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", tm.APIVersion, tm.Kind, err)
	}
	meta, ok := obj.(metav1.Object)
	if !ok {
		return nil, fmt.Errorf("%s %s: type %T has no ObjectMeta", tm.APIVersion, tm.Kind, obj)
	}
	if len(strictErrs) > 0 {
		return nil, fmt.Errorf("%s %s: %w", tm.Kind, meta.GetName(), errors.Join(strictErrs...))
	}
	return &object{APIVersion: tm.APIVersion, Kind: tm.Kind, Meta: meta, Obj: obj}, nil
}

// decodeBundle decodes every document and checks the metadata the API
// server would refuse: names and label keys and values.
func decodeBundle(target string, docs [][]byte) (*bundle, error) {
	b := &bundle{target: target}
	var errs []error
	for i, d := range docs {
		o, err := decodeStrict(d)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: object %d: %w", target, i, err))
			continue
		}
		errs = append(errs, checkMeta(o)...)
		b.objects = append(b.objects, o)
	}
	return b, errors.Join(errs...)
}

func checkMeta(o *object) []error {
	var errs []error
	for _, msg := range validation.IsDNS1123Subdomain(o.Meta.GetName()) {
		errs = append(errs, fmt.Errorf("%s: name: %s", o, msg))
	}
	for k, v := range o.Meta.GetLabels() {
		for _, msg := range validation.IsQualifiedName(k) {
			errs = append(errs, fmt.Errorf("%s: label key %q: %s", o, k, msg))
		}
		for _, msg := range validation.IsValidLabelValue(v) {
			errs = append(errs, fmt.Errorf("%s: label %s value %q: %s", o, k, v, msg))
		}
	}
	return errs
}

// all returns the bundle's objects of Go type T, in order.
func all[T any](b *bundle) []T {
	var out []T
	for _, o := range b.objects {
		if v, ok := o.Obj.(T); ok {
			out = append(out, v)
		}
	}
	return out
}

// named returns the object of Go type T called name, or the zero T.
func named[T metav1.Object](b *bundle, name string) (T, bool) {
	for _, v := range all[T](b) {
		if v.GetName() == name {
			return v, true
		}
	}
	var zero T
	return zero, false
}
