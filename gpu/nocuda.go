//go:build !cuda

package gpu

import "github.com/tandem-ai/tandem/model"

// Built reports whether this binary has the CUDA backend.
const Built = false

// Device is a GPU. In this build (no cuda tag) Open always fails with
// ErrNotBuilt, so no Device exists and its methods are never reached.
type Device struct{}

// Open fails with ErrNotBuilt: this binary was built without -tags cuda.
func Open(ordinal int, opts Options) (*Device, error) { return nil, ErrNotBuilt }

// Close does nothing.
func (d *Device) Close() error { return nil }

// String names the device.
func (d *Device) String() string { return "cuda (not built)" }

// Precision is the precision of the matrix products.
func (d *Device) Precision() Precision { return FP32 }

// NewModel fails with ErrNotBuilt.
func (d *Device) NewModel(m *model.Model) (*Model, error) { return nil, ErrNotBuilt }

// NewTrainBackend fails with ErrNotBuilt.
func (d *Device) NewTrainBackend(m *model.Model) (*Trainer, error) { return nil, ErrNotBuilt }

// Model is a model resident on a Device.
type Model struct{}

// Close does nothing.
func (gm *Model) Close() error { return nil }

// DecoderFactory returns a factory that fails with ErrNotBuilt.
func (gm *Model) DecoderFactory() model.DecoderFactory {
	return func(int, int) (model.Decoder, error) { return nil, ErrNotBuilt }
}

// Trainer is a training backend on a Device.
type Trainer struct{}

var _ model.ScoringBackend = (*Trainer)(nil)

// Step fails with ErrNotBuilt.
func (tr *Trainer) Step(*model.Trainer, []model.Batch) (model.StepResult, error) {
	return model.StepResult{}, ErrNotBuilt
}

// Eval fails with ErrNotBuilt.
func (tr *Trainer) Eval(model.Batch) (float32, error) { return 0, ErrNotBuilt }

// SyncHost fails with ErrNotBuilt.
func (tr *Trainer) SyncHost(*model.Trainer) error { return ErrNotBuilt }

// LoadParams fails with ErrNotBuilt.
func (tr *Trainer) LoadParams([]float32) error { return ErrNotBuilt }

// DecoderFactory returns a factory that fails with ErrNotBuilt.
func (tr *Trainer) DecoderFactory() model.DecoderFactory { return new(Model).DecoderFactory() }

// Close does nothing.
func (tr *Trainer) Close() error { return nil }
