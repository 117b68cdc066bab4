package model

// Hooks for accelerators that keep a model in their own memory (the CUDA
// backend in gpu/ is one). The Kernels interface takes host slices, which
// suits the CPU; a GPU that copied every tensor in and out per kernel
// would be slower than the CPU. Instead such a backend holds the
// parameters, gradients, optimizer state, activations and KV caches on the
// device and plugs in at these two seams: decoding (Generate) and
// optimizer steps (Trainer).

// Decoder is what Generate decodes with: a KV cache and the model behind
// it. The CPU one is a KVCache with its Model (Model.Decode); gpu.Decoder
// is the device one. When a Decoder also implements io.Closer, Generate
// closes it when done.
type Decoder interface {
	// Decode appends tokens[b] to sequence b and returns each non-empty
	// row's logits after its last new token, with Model.Decode's contract.
	Decode(tokens [][]int32) ([][]float32, error)
	// ResetRow empties sequence b so its slot can take a new prompt.
	ResetRow(b int)
}

// RowCopier is a Decoder that can copy one sequence's cache to another
// slot, so the choices of one prompt share a single prefill.
type RowCopier interface {
	CopyRow(dst, src int)
}

// DecoderFactory makes a Decoder for `batch` sequences of up to maxLen
// tokens each.
type DecoderFactory func(batch, maxLen int) (Decoder, error)

// kvDecoder is the host Decoder: a KVCache decoded by its Model.
type kvDecoder struct {
	m *Model
	c *KVCache
}

func (d kvDecoder) Decode(tokens [][]int32) ([][]float32, error) { return d.m.Decode(d.c, tokens) }
func (d kvDecoder) ResetRow(b int)                               { d.c.ResetRow(b) }
func (d kvDecoder) CopyRow(dst, src int)                         { d.c.CopyRow(dst, src) }

// TrainBackend runs a Trainer's steps on a device that keeps its own copy
// of the parameters, gradients and AdamW moments (gpu.Trainer). With
// Trainer.Backend set, Trainer.Step and Trainer.Eval run there, and
// Model.Params, Opt.M and Opt.V are stale until Trainer.SyncHost: call it
// before saving a checkpoint or the model.
type TrainBackend interface {
	// Step is Trainer.Step's arithmetic (accumulation over the batches,
	// clipping to t.MaxGradNorm, skipping a non-finite step, AdamW with
	// t.LR(t.Opt.Steps)), advancing t.Opt.Steps.
	Step(t *Trainer, batches []Batch) (StepResult, error)
	// Eval is Model.Eval on the backend's parameters.
	Eval(b Batch) (float32, error)
	// SyncHost copies the backend's parameters into t.Model.Params and its
	// moments into t.Opt.M and t.Opt.V.
	SyncHost(t *Trainer) error
}

// ScoringBackend is a TrainBackend that can also score weights other than
// the ones it trains: a fine-tuning run uses it to evaluate and decode its
// best epoch's weights on the device at the end (gpu.Trainer implements
// it). Without it, that final scoring runs on the host.
type ScoringBackend interface {
	TrainBackend
	// LoadParams replaces the backend's parameters with params (len =
	// NumParams); the moments are left as they are. Call SyncHost first
	// when the trained state must be kept: afterwards SyncHost would copy
	// params to the host instead.
	LoadParams(params []float32) error
	// DecoderFactory makes Decoders over the backend's current parameters,
	// for GenerateOptions.NewDecoder.
	DecoderFactory() DecoderFactory
}
