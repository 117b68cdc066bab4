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

// attachDevice puts a copy of l's parameters on d; l's generation then
// decodes there.
func (l *LoadedModel) attachDevice(d *gpu.Device) error {
	gm, err := d.NewModel(l.Model)
	if err != nil {
		return err
	}
	l.gpu, l.decoders = gm, gm.DecoderFactory()
	return nil
}

// detachDevice frees l's GPU copy once no job holds l (it takes l's
// lock); a job that gets l afterwards decodes on the CPU.
func (l *LoadedModel) detachDevice() {
	if l.gpu == nil {
		return
	}
	go func() {
		l.Lock()
		defer l.Unlock()
		if l.gpu != nil {
			l.gpu.Close()
			l.gpu, l.decoders = nil, nil
		}
	}()
}

// Decoders is what generation with l decodes with: the GPU copy's
// decoders, or nil for the CPU KV cache. Call it holding l's lock.
func (l *LoadedModel) Decoders() model.DecoderFactory { return l.decoders }
