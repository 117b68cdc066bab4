// Package k8s holds Tandem's Kubernetes deployment: a kustomize base
// (k8s/base), overlays for a development and a production cluster
// (k8s/overlays/dev, k8s/overlays/prod) and optional components
// (k8s/components: image names and tag, the GPU worker pool, KEDA
// autoscaling, the HPA fallback, Prometheus monitoring, an Ingress, example
// secrets, a fine-tune ScaledJob), example overlays (k8s/examples) and a
// file-copy pod (k8s/tools). docs/DEPLOY.md walks through them.
//
// The package has no Go API. Its tests render every overlay with kustomize's
// Go library, decode each object strictly into the Kubernetes API types (or
// small local structs for KEDA and Prometheus-operator resources), and check
// the rules a reviewer would otherwise check by eye: resources, probes, the
// restricted security context, secrets by reference only, API auth on the
// producer, who may reach Redis, NATS and the producer, GPU scheduling,
// grace periods against the worker's shutdown timeout, KEDA triggers against
// the worker's real queues, one source for image names and tags, and the
// Dockerfiles under build/docker. `go test ./k8s/` runs them; no cluster
// and no Docker engine are needed.
package k8s
