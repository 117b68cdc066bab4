package pipeline

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// StreamConfig turns the spec into JetStream's configuration: file storage,
// limits retention, discard old.
func (s StreamSpec) StreamConfig() jetstream.StreamConfig {
	replicas := s.Replicas
	if replicas < 1 {
		replicas = 1
	}
	maxMsgs := s.MaxMsgs
	if maxMsgs == 0 {
		maxMsgs = -1
	}
	return jetstream.StreamConfig{
		Name:        s.Name,
		Description: s.Description,
		Subjects:    append([]string(nil), s.Subjects...),
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardOld,
		MaxAge:      s.MaxAge,
		MaxBytes:    s.MaxBytes,
		MaxMsgs:     maxMsgs,
		MaxMsgSize:  s.MaxMsgSize,
		Duplicates:  s.Duplicates,
		Storage:     jetstream.FileStorage,
		Replicas:    replicas,
	}
}

// validate refuses specs that the server would reject with a vaguer message,
// or that would silently store too little or too much.
func (s StreamSpec) validate() error {
	if err := ValidateID(s.Name); err != nil {
		return fmt.Errorf("stream name: %w", err)
	}
	if len(s.Subjects) == 0 {
		return fmt.Errorf("stream %s: Subjects is empty", s.Name)
	}
	for _, subj := range s.Subjects {
		if err := validateSubject(subj, true); err != nil {
			return fmt.Errorf("stream %s: Subjects: %w", s.Name, err)
		}
	}
	switch {
	case s.MaxAge <= 0:
		return fmt.Errorf("stream %s: MaxAge must be > 0 (unbounded retention is not allowed)", s.Name)
	case s.MaxBytes <= 0:
		return fmt.Errorf("stream %s: MaxBytes must be > 0 (unbounded retention is not allowed)", s.Name)
	case s.MaxMsgSize <= 0:
		return fmt.Errorf("stream %s: MaxMsgSize must be > 0", s.Name)
	case s.Duplicates < 0 || s.Duplicates > s.MaxAge:
		return fmt.Errorf("stream %s: Duplicates %v must be within [0, MaxAge]", s.Name, s.Duplicates)
	case s.Replicas < 0 || s.Replicas > 5:
		return fmt.Errorf("stream %s: Replicas %d must be within [0, 5]", s.Name, s.Replicas)
	}
	return nil
}

// EnsureStreams creates or updates FEEDBACK, EVENTS and DEADLETTER. It is
// idempotent and safe to run from every replica at start-up.
//
// The replica count comes from TANDEM_NATS_STREAM_REPLICAS (default 1).
func (b *Bus) EnsureStreams(ctx context.Context) error {
	replicas, err := StreamReplicas()
	if err != nil {
		return fmt.Errorf("pipeline: %w", err)
	}
	specs := DefaultStreams()
	for i := range specs {
		specs[i].Replicas = replicas
	}
	return b.EnsureStreamSpecs(ctx, specs...)
}

// EnsureStreamSpecs creates or updates the given streams (for a cluster, pass
// DefaultStreams with Replicas set to 3).
func (b *Bus) EnsureStreamSpecs(ctx context.Context, specs ...StreamSpec) error {
	if b.isClosed() {
		return ErrBusClosed
	}
	var errs []error
	for _, s := range specs {
		if err := s.validate(); err != nil {
			errs = append(errs, fmt.Errorf("pipeline: %w", err))
			continue
		}
		if _, err := b.JS.CreateOrUpdateStream(ctx, s.StreamConfig()); err != nil {
			errs = append(errs, fmt.Errorf("pipeline: ensure stream %s: %w", s.Name, err))
		}
	}
	return errors.Join(errs...)
}
