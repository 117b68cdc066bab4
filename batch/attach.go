package batch

import (
	"context"
	"fmt"
	"log/slog"
	"os"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tandem-ai/tandem/artifact"
	"github.com/tandem-ai/tandem/generation"
	"github.com/tandem-ai/tandem/jobs"
	"github.com/tandem-ai/tandem/pipeline"
)

// OpenOptions configure Open.
type OpenOptions struct {
	// ArtifactStore is the artifact store spec (see artifact.Open); empty
	// reads TANDEM_ARTIFACT_STORE.
	ArtifactStore string
	// Bus carries progress and lifecycle events, and the NATS artifact
	// store's connection; nil runs without NATS.
	Bus    *pipeline.Bus
	Logger *slog.Logger
}

// Open connects a Service from the shared pipeline configuration: a Redis
// client (one pool for records and enqueuing) and the artifact store. Close
// the Service to release them; the Bus stays the caller's.
func Open(ctx context.Context, cfg pipeline.Config, o OpenOptions) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	logger := o.Logger
	if logger == nil {
		logger = slog.Default()
	}
	spec := o.ArtifactStore
	if spec == "" {
		spec = os.Getenv(artifact.EnvStore)
	}
	aopts := artifact.Options{Spec: spec, DataDir: cfg.DataDir}
	if o.Bus != nil {
		aopts.JS = o.Bus.JS
	}
	arts, err := artifact.Open(ctx, aopts)
	if err != nil {
		return nil, err
	}
	reg := pipeline.NewRegistry()
	Register(reg, nil)
	client, err := pipeline.NewClient(cfg, pipeline.WithRegistry(reg))
	if err != nil {
		arts.Close()
		return nil, err
	}
	s := NewService(NewStore(client.Redis()), arts, client, o.Bus, logger)
	s.closers = append(s.closers, arts.Close, client.Close)
	return s, nil
}

// Attach registers the batch kinds on a worker's reg, run by a Runner
// (Redis records, the artifact store, which it advertises to producers
// until detached, enqueuing, d's models and bus) with the webhooks of
// TANDEM_WEBHOOK_URLS and TANDEM_WEBHOOK_SECRET. It reports bad settings
// (webhooks, TANDEM_MODEL_CACHE_BYTES, the artifact store) as errors so a
// worker fails at start rather than at its first batch. Call it after
// d.Bus is set and before the worker starts; detach releases what it
// opened.
func Attach(ctx context.Context, reg *pipeline.Registry, d *jobs.Deps, cfg pipeline.Config, promReg prometheus.Registerer) (run *Runner, detach func(), err error) {
	if _, err := generation.ModelCacheBytesFromEnv(); err != nil {
		return nil, nil, err
	}
	wh, err := WebhookConfigFromEnv()
	if err != nil {
		return nil, nil, err
	}
	svc, err := Open(ctx, cfg, OpenOptions{Bus: d.Bus, Logger: d.Logger})
	if err != nil {
		return nil, nil, fmt.Errorf("batch: %w", err)
	}
	// Only a worker that takes chunks (the default queue, or the GPU
	// workers' one) speaks for the store batches will be read from.
	stopAdvertising := func() {}
	if cfg.Queues[pipeline.QueueDefault] > 0 || cfg.Queues[pipeline.QueueGPU] > 0 {
		if stopAdvertising, err = svc.advertiseStore(ctx); err != nil {
			_ = svc.Close()
			return nil, nil, err
		}
	}
	svc.Metrics = NewMetrics(promReg)
	if d.Models == nil {
		d.Models = generation.NewModelStore(jobs.OpenEnvDataRoot)
	}
	run = &Runner{Service: svc, Models: d.Models, Webhooks: wh}
	Register(reg, run)
	return run, func() { stopAdvertising(); _ = svc.Close() }, nil
}
