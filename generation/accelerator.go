package generation

import (
	"github.com/tandem-ai/tandem/gpu"
	"github.com/tandem-ai/tandem/model"
)

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
