package k8s

import (
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Small local types for the custom resources Tandem ships, holding the
// fields these manifests may use. They decode strictly like the built-in
// types, so a misspelt or misplaced field fails here instead of being
// pruned silently by the API server. Fields follow KEDA v2 (keda.sh/v1alpha1)
// and the Prometheus operator (monitoring.coreos.com/v1).

type scaledObject struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              scaledObjectSpec `json:"spec"`
}

type scaledObjectSpec struct {
	ScaleTargetRef   scaleTargetRef `json:"scaleTargetRef"`
	PollingInterval  *int32         `json:"pollingInterval,omitempty"`
	CooldownPeriod   *int32         `json:"cooldownPeriod,omitempty"`
	IdleReplicaCount *int32         `json:"idleReplicaCount,omitempty"`
	MinReplicaCount  *int32         `json:"minReplicaCount,omitempty"`
	MaxReplicaCount  *int32         `json:"maxReplicaCount,omitempty"`
	Fallback         *kedaFallback  `json:"fallback,omitempty"`
	Advanced         *kedaAdvanced  `json:"advanced,omitempty"`
	Triggers         []kedaTrigger  `json:"triggers"`
}

type scaleTargetRef struct {
	APIVersion             string `json:"apiVersion,omitempty"`
	Kind                   string `json:"kind,omitempty"`
	Name                   string `json:"name"`
	EnvSourceContainerName string `json:"envSourceContainerName,omitempty"`
}

type kedaFallback struct {
	FailureThreshold int32 `json:"failureThreshold"`
	Replicas         int32 `json:"replicas"`
}

type kedaAdvanced struct {
	HorizontalPodAutoscalerConfig *kedaHPAConfig `json:"horizontalPodAutoscalerConfig,omitempty"`
	RestoreToOriginalReplicaCount bool           `json:"restoreToOriginalReplicaCount,omitempty"`
}

type kedaHPAConfig struct {
	Name     string                                         `json:"name,omitempty"`
	Behavior *autoscalingv2.HorizontalPodAutoscalerBehavior `json:"behavior,omitempty"`
}

type kedaTrigger struct {
	Type              string                         `json:"type"`
	Name              string                         `json:"name,omitempty"`
	MetricType        autoscalingv2.MetricTargetType `json:"metricType,omitempty"`
	UseCachedMetrics  bool                           `json:"useCachedMetrics,omitempty"`
	Metadata          map[string]string              `json:"metadata"`
	AuthenticationRef *kedaAuthRef                   `json:"authenticationRef,omitempty"`
}

type kedaAuthRef struct {
	Name string `json:"name"`
	Kind string `json:"kind,omitempty"`
}

type scaledJob struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              scaledJobSpec `json:"spec"`
}

type scaledJobSpec struct {
	JobTargetRef               batchv1.JobSpec      `json:"jobTargetRef"`
	PollingInterval            *int32               `json:"pollingInterval,omitempty"`
	SuccessfulJobsHistoryLimit *int32               `json:"successfulJobsHistoryLimit,omitempty"`
	FailedJobsHistoryLimit     *int32               `json:"failedJobsHistoryLimit,omitempty"`
	MinReplicaCount            *int32               `json:"minReplicaCount,omitempty"`
	MaxReplicaCount            *int32               `json:"maxReplicaCount,omitempty"`
	ScalingStrategy            *kedaScalingStrategy `json:"scalingStrategy,omitempty"`
	Triggers                   []kedaTrigger        `json:"triggers"`
}

type kedaScalingStrategy struct {
	Strategy string `json:"strategy,omitempty"`
}

type triggerAuthentication struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              triggerAuthenticationSpec `json:"spec"`
}

type triggerAuthenticationSpec struct {
	SecretTargetRef []kedaSecretTarget `json:"secretTargetRef,omitempty"`
}

type kedaSecretTarget struct {
	Parameter string `json:"parameter"`
	Name      string `json:"name"`
	Key       string `json:"key"`
}

type serviceMonitor struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              serviceMonitorSpec `json:"spec"`
}

type serviceMonitorSpec struct {
	JobLabel          string                  `json:"jobLabel,omitempty"`
	Selector          metav1.LabelSelector    `json:"selector"`
	NamespaceSelector *monitorNamespaceSelect `json:"namespaceSelector,omitempty"`
	Endpoints         []monitorEndpoint       `json:"endpoints"`
}

type monitorNamespaceSelect struct {
	Any        bool     `json:"any,omitempty"`
	MatchNames []string `json:"matchNames,omitempty"`
}

type monitorEndpoint struct {
	Port          string `json:"port"`
	Path          string `json:"path,omitempty"`
	Interval      string `json:"interval,omitempty"`
	ScrapeTimeout string `json:"scrapeTimeout,omitempty"`
	Scheme        string `json:"scheme,omitempty"`
	HonorLabels   bool   `json:"honorLabels,omitempty"`
}
