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
	jobs.RegisterAll(reg, &jobs.Deps{Logger: logger})
	client, err := pipeline.NewClient(cfg, pipeline.WithRegistry(reg))
	if err != nil {
		arts.Close()
		return nil, err
	}
	s := NewService(NewStore(client.Redis()), arts, client, o.Bus, logger)
	s.closers = append(s.closers, arts.Close, client.Close)
	return s, nil
}

// Attach gives a worker's Deps what the batch kinds need: a Runner (Redis
// records, the artifact store, which it advertises to producers until
// detached, and enqueuing) and the webhook configuration from
// TANDEM_WEBHOOK_URLS and TANDEM_WEBHOOK_SECRET. It reports bad
// settings (webhooks, TANDEM_MODEL_CACHE_BYTES, the artifact store) as
// errors so a worker fails at start rather than at its first batch. Call
// it after d.Bus is set; detach releases what it opened.
func Attach(ctx context.Context, d *jobs.Deps, cfg pipeline.Config, promReg prometheus.Registerer) (detach func(), err error) {
	if _, err := generation.ModelCacheBytesFromEnv(); err != nil {
		return nil, err
	}
	wh, err := jobs.WebhookConfigFromEnv()
	if err != nil {
		return nil, err
	}
	svc, err := Open(ctx, cfg, OpenOptions{Bus: d.Bus, Logger: d.Logger})
	if err != nil {
		return nil, fmt.Errorf("batch: %w", err)
	}
	stopAdvertising, err := svc.advertiseStore(ctx)
	if err != nil {
		_ = svc.Close()
		return nil, err
	}
	svc.Metrics = NewMetrics(promReg)
	if d.Models == nil {
		d.Models = generation.NewModelStore(jobs.OpenEnvDataRoot)
	}
	d.Batches = &Runner{Service: svc, Models: d.Models, Webhooks: wh}
	d.Webhooks = wh
	return func() { stopAdvertising(); _ = svc.Close() }, nil
}
