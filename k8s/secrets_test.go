package k8s

import (
	"bytes"
	"fmt"
	"os"
	"regexp"
	"strings"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"

	"github.com/tandem-ai/tandem/auth"
	"github.com/tandem-ai/tandem/pipeline"
)

// examplePlaceholder is the only secret value the repository may hold:
// components/example-secrets uses it, and docs/DEPLOY.md says to replace it.
const examplePlaceholder = "REPLACE-ME-example-placeholder"

// externalSecrets are created in the cluster by hand (docs/DEPLOY.md), never
// shipped: name -> the keys the manifests may read from it.
var externalSecrets = map[string][]string{
	"tandem-redis":      {"password"},
	"tandem-nats":       pipeline.NATSRoles(), // one password per role
	"tandem-api-tokens": {"tokens"},           // the producer's token file
	"tandem-tls":        {"tls.crt", "tls.key"},
}

// sensitiveName matches names of settings that hold a credential.
var sensitiveName = regexp.MustCompile(`(?i)(password|passwd|secret|token|api_?key|auth$|requirepass)`)

// urlPassword finds a password inside a URL: scheme://user:PASSWORD@host.
var urlPassword = regexp.MustCompile(`[a-zA-Z][a-zA-Z0-9+.-]*://[^/@\s:]*:([^@/\s]+)@`)

// wholeRef is a value that is only a reference: $(VAR) (Kubernetes) or $VAR
// (NATS configuration).
var wholeRef = regexp.MustCompile(`^\$\(?([A-Za-z_][A-Za-z0-9_]*)\)?$`)

// configPassword finds "password: value" style settings in config files.
var configPassword = regexp.MustCompile(`(?i)\b(password|pass|requirepass|masterauth|token)\b\s*[:=]?\s*([^\s,}\]]+)`)

// checkSecretsByReference: credentials reach containers only by
// secretKeyRef, and any place that embeds one (a URL, a flag, a config file)
// holds a reference, never a value.
func checkSecretsByReference(b *bundle) []error {
	var errs []error
	for _, pt := range b.podTemplates() {
		for _, cr := range pt.containers() {
			c := cr.c
			fromSecret := make(map[string]bool)
			for _, e := range c.Env {
				if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
					fromSecret[e.Name] = true
					errs = append(errs, checkSecretRef(b, cr.where+" env "+e.Name, e.ValueFrom.SecretKeyRef.Name, e.ValueFrom.SecretKeyRef.Key)...)
					continue
				}
				if _, _, inSecret := secretFile(c, pt.spec.Volumes, e.Value); sensitiveName.MatchString(e.Name) && !inSecret && e.Value != "true" && e.Value != "false" {
					errs = append(errs, fmt.Errorf("%s: env %s looks like a credential but is neither from a secretKeyRef nor a file of a Secret volume", cr.where, e.Name))
				}
				if m := urlPassword.FindStringSubmatch(e.Value); m != nil {
					ref := wholeRef.FindStringSubmatch(m[1])
					if ref == nil || !fromSecret[ref[1]] {
						errs = append(errs, fmt.Errorf("%s: env %s has a password in a URL; use $(VAR) of a secretKeyRef variable defined before it", cr.where, e.Name))
					}
				}
			}
			// A flag that takes a credential must take a $(VAR) reference.
			args := append(append([]string(nil), c.Command...), c.Args...)
			for i, a := range args {
				flag, val, hasVal := strings.Cut(a, "=")
				if !strings.HasPrefix(flag, "-") || !sensitiveName.MatchString(flag) {
					continue
				}
				if !hasVal {
					if i+1 >= len(args) {
						continue
					}
					val = args[i+1]
				}
				if ref := wholeRef.FindStringSubmatch(val); ref == nil || !fromSecret[ref[1]] {
					errs = append(errs, fmt.Errorf("%s: argument %s takes a credential; pass $(VAR) of a secretKeyRef variable", cr.where, flag))
				}
			}
			for _, ef := range c.EnvFrom {
				if ef.SecretRef != nil {
					errs = append(errs, fmt.Errorf("%s: envFrom Secret %s: name each key with secretKeyRef", cr.where, ef.SecretRef.Name))
				}
			}
		}
		for _, v := range pt.spec.Volumes {
			if v.Secret != nil {
				errs = append(errs, checkSecretRef(b, pt.owner+" volume "+v.Name, v.Secret.SecretName, "")...)
			}
		}
	}
	for _, cm := range all[*corev1.ConfigMap](b) {
		for k, v := range cm.Data {
			if sensitiveName.MatchString(k) {
				errs = append(errs, fmt.Errorf("ConfigMap %s: key %s looks like a credential; credentials belong in Secrets", cm.Name, k))
			}
			if m := urlPassword.FindStringSubmatch(v); m != nil && wholeRef.FindStringSubmatch(m[1]) == nil {
				errs = append(errs, fmt.Errorf("ConfigMap %s: key %s has a password in a URL", cm.Name, k))
			}
			for n, line := range strings.Split(v, "\n") {
				if strings.HasPrefix(strings.TrimSpace(line), "#") {
					continue
				}
				for _, m := range configPassword.FindAllStringSubmatch(line, -1) {
					if wholeRef.FindStringSubmatch(m[2]) == nil {
						errs = append(errs, fmt.Errorf("ConfigMap %s: key %s line %d: %s is set to a value; reference an environment variable from a Secret", cm.Name, k, n+1, m[1]))
					}
				}
			}
		}
	}
	for _, ta := range all[*triggerAuthentication](b) {
		for _, ref := range ta.Spec.SecretTargetRef {
			errs = append(errs, checkSecretRef(b, "TriggerAuthentication "+ta.Name, ref.Name, ref.Key)...)
		}
	}
	for _, ing := range all[*networkingv1.Ingress](b) {
		for _, tls := range ing.Spec.TLS {
			errs = append(errs, checkSecretRef(b, "Ingress "+ing.Name+" tls", tls.SecretName, "tls.crt")...)
		}
		if s, ok := ing.Annotations["nginx.ingress.kubernetes.io/auth-secret"]; ok {
			errs = append(errs, checkSecretRef(b, "Ingress "+ing.Name+" auth", s, "auth")...)
		}
	}
	return errs
}

// secretFile reports which Secret and key the file at path is, when it lies
// in a Secret volume mounted in c.
func secretFile(c *corev1.Container, vols []corev1.Volume, path string) (secret, key string, ok bool) {
	for _, m := range c.VolumeMounts {
		name, found := strings.CutPrefix(path, strings.TrimSuffix(m.MountPath, "/")+"/")
		if !found || m.SubPath != "" {
			continue
		}
		for _, v := range vols {
			if v.Name != m.Name || v.Secret == nil {
				continue
			}
			if len(v.Secret.Items) == 0 {
				return v.Secret.SecretName, name, true
			}
			for _, it := range v.Secret.Items {
				if it.Path == name {
					return v.Secret.SecretName, it.Key, true
				}
			}
		}
	}
	return "", "", false
}

// checkSecretRef: a Secret is either in the bundle (with the key) or one of
// externalSecrets, which docs/DEPLOY.md must say how to create.
func checkSecretRef(b *bundle, where, name, key string) []error {
	if s, ok := named[*corev1.Secret](b, name); ok {
		_, inData := s.Data[key]
		_, inString := s.StringData[key]
		if key != "" && !inData && !inString {
			return []error{fmt.Errorf("%s: Secret %s has no key %s", where, name, key)}
		}
		return nil
	}
	keys, ok := externalSecrets[name]
	if !ok {
		return []error{fmt.Errorf("%s: Secret %s is neither shipped nor one of the documented external Secrets", where, name)}
	}
	if key != "" && !contains(keys, key) {
		return []error{fmt.Errorf("%s: Secret %s: key %s is not among its documented keys %v", where, name, key, keys)}
	}
	doc, err := os.ReadFile("../docs/DEPLOY.md")
	if err != nil {
		return []error{fmt.Errorf("%s: Secret %s: %w", where, name, err)}
	}
	if !strings.Contains(string(doc), "secret generic "+name) && !strings.Contains(string(doc), "secret tls "+name) {
		return []error{fmt.Errorf("%s: Secret %s: docs/DEPLOY.md does not show how to create it (kubectl create secret ... %s)", where, name, name)}
	}
	return nil
}

// checkSecretData: the only Secrets shipped are the example ones, and they
// hold nothing but the documented placeholder.
func checkSecretData(b *bundle) []error {
	var errs []error
	for _, s := range all[*corev1.Secret](b) {
		if len(s.Data)+len(s.StringData) == 0 {
			errs = append(errs, fmt.Errorf("Secret %s: empty", s.Name))
		}
		for k, v := range s.Data {
			if !placeholderOnly(string(v)) {
				errs = append(errs, fmt.Errorf("Secret %s: key %s holds something other than the placeholder %q; real secrets never go in the repository", s.Name, k, examplePlaceholder))
			}
		}
		for k, v := range s.StringData {
			if !placeholderOnly(v) {
				errs = append(errs, fmt.Errorf("Secret %s: key %s holds something other than the placeholder %q", s.Name, k, examplePlaceholder))
			}
		}
	}
	return errs
}

// placeholderOnly: v is the placeholder, or a token file whose every token
// is (the example API tokens).
func placeholderOnly(v string) bool {
	lines := 0
	for _, line := range strings.Split(v, "\n") {
		if f := strings.Fields(line); len(f) > 0 {
			if f[0] != examplePlaceholder {
				return false
			}
			lines++
		}
	}
	return lines > 0
}

// checkAPIAuth: every `producer serve` requires API auth, with its token
// file from a Secret, so no deployment serves the open API that is the
// laptop default; a shipped token Secret is a token file the producer loads.
func checkAPIAuth(b *bundle) []error {
	tcs, errs := b.tandemContainers()
	for _, tc := range tcs {
		if tc.binary != "producer" || len(tc.c.Args) == 0 || tc.c.Args[0] != "serve" {
			continue
		}
		if tc.env["TANDEM_API_REQUIRE_AUTH"].value != "true" {
			errs = append(errs, fmt.Errorf("%s: TANDEM_API_REQUIRE_AUTH is not \"true\": without its token file the producer would serve an open API", tc.where))
		}
		path := tc.env["TANDEM_API_TOKENS"].value
		secret, key, ok := secretFile(tc.c, tc.pt.spec.Volumes, path)
		if !ok {
			errs = append(errs, fmt.Errorf("%s: TANDEM_API_TOKENS %q is not a file of a Secret volume the container mounts", tc.where, path))
			continue
		}
		errs = append(errs, checkSecretRef(b, tc.where+" TANDEM_API_TOKENS", secret, key)...)
		if s, ok := named[*corev1.Secret](b, secret); ok {
			data, inData := s.Data[key]
			if !inData {
				data = []byte(s.StringData[key])
			}
			if _, err := auth.ParseTokens(bytes.NewReader(data), "Secret "+secret); err != nil {
				errs = append(errs, fmt.Errorf("%s: the producer would not load its tokens: %w", tc.where, err))
			}
		}
	}
	return errs
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
