package generation

import (
	"sync"

	"github.com/tandem-ai/tandem/gpu"
	"github.com/tandem-ai/tandem/model"
)

// The worker's GPU, when it has one (worker --device cuda:N): models the
// ModelStore loads get a copy on it that generation decodes with, and
// fine-tuning trains there. nil means the CPU.
var (
	accelMu  sync.RWMutex
	accelDev *gpu.Device
)

// SetAccelerator makes the worker's jobs run on d (nil: the CPU). Set it
// before jobs run; models already loaded stay where they are.
func SetAccelerator(d *gpu.Device) {
	accelMu.Lock()
	defer accelMu.Unlock()
	accelDev = d
}

// Accelerator is the GPU set by SetAccelerator, or nil.
func Accelerator() *gpu.Device {
	accelMu.RLock()
	defer accelMu.RUnlock()
	return accelDev
}

// attachDevice puts a copy of l's parameters on d and returns the
// decoders l's engine decodes there with.
func (l *LoadedModel) attachDevice(d *gpu.Device) (model.DecoderFactory, error) {
	gm, err := d.NewModel(l.Model)
	if err != nil {
		return nil, err
	}
	l.gpu = gm
	return gm.DecoderFactory(), nil
}

// retire is l leaving the store: its engine frees the GPU copy once the
// sequences running on it end; sequences submitted afterwards decode on
// the CPU.
func (l *LoadedModel) retire() {
	gm := l.gpu
	l.Engine.Retire(func() {
		if gm != nil {
			gm.Close()
		}
	})
}
