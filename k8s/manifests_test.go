package k8s

import (
	"testing"
)

// check is one rule over a rendered bundle; it returns every violation.
type check struct {
	name string
	fn   func(*bundle) []error
}

// checks run on every render target. Each is a plain function so that
// TestChecksCatchMistakes can feed it a deliberately broken bundle.
var checks = []check{
	{"namespace", checkNamespace},
	{"resources", checkResources},
	{"go-memory-limit", checkGoMemLimit},
	{"probes", checkProbes},
	{"security-context", checkSecurityContext},
	{"secrets-by-reference", checkSecretsByReference},
	{"secret-data", checkSecretData},
	{"api-auth", checkAPIAuth},
	{"tandem-config", checkTandemConfig},
	{"grace-period", checkGracePeriod},
	{"gpu", checkGPU},
	{"selectors", checkSelectors},
	{"references", checkReferences},
	{"disruption-budgets", checkDisruptionBudgets},
	{"network-policies", checkNetworkPolicies},
	{"keda", checkKEDA},
	{"images", checkImages},
	{"redis", checkRedis},
	{"nats", checkNATS},
	{"monitoring", checkMonitoring},
}

func TestManifests(t *testing.T) {
	for _, target := range renderTargets {
		t.Run(target, func(t *testing.T) {
			b := load(t, target)
			if len(b.objects) == 0 {
				t.Fatal("renders no objects")
			}
			for _, c := range checks {
				t.Run(c.name, func(t *testing.T) {
					for _, err := range c.fn(b) {
						t.Error(err)
					}
				})
			}
		})
	}
}
