// Package gpu is Tandem's CUDA backend: the transformer of package model
// run on an NVIDIA GPU through gorgonia.org/cu (the CUDA driver API).
//
// # Why not a model.Kernels
//
// model.Kernels takes host []float32 slices, which suits the CPU. A GPU
// behind that interface would copy every tensor to the device and back for
// every kernel, and lose to the CPU. Instead this package keeps a model
// resident on the device: Model holds the parameters, gradients and the
// activations of the last forward pass; Trainer adds the AdamW moments;
// Decoder a KV cache. Each is one device allocation, sized once and reused,
// so a step of a fixed shape allocates nothing. Forward and Backward are
// the kernel sequence of model/gpt2.go, each kernel a CUDA kernel of
// kernels/*.cu; host memory is touched only by the tokens going in and the
// losses, logits, tokens or gradients asked for.
//
// The model package meets it at two seams: model.GenerateOptions.NewDecoder
// (Model.DecoderFactory) and model.Trainer.Backend (Trainer). The worker
// (worker --device cuda:N) sets both through package jobs. Trainer is also
// a model.ScoringBackend, so a fine-tuning run scores its best weights
// (test loss, GenEval) on the device as well.
//
// # Kernels
//
// kernels/*.cu are compiled by `make ptx` (nvcc from Debian's CUDA 11.8) to
// PTX for compute_80 and compute_90, committed under ptx/ and embedded; Open
// JIT-compiles the PTX for the device (cu.LoadDataEx) and looks up every
// kernel. The list: token and position embeddings (forward, backward),
// LayerNorm (forward, backward), matrix products (TF32 tensor cores through
// wmma, or exact FP32; split-K for skinny shapes), causal attention fused
// in the manner of FlashAttention (online softmax, no TxT matrix, forward
// and backward), GELU, residual adds, softmax cross-entropy (forward,
// backward), AdamW, sums of squares for clipping, decode attention over the
// KV cache, and greedy argmax. kernels/emu runs every kernel on the CPU
// against a float64 reference (scripts/cuda-emu.sh), since build machines
// have no GPU.
//
// # Devices, streams, errors
//
// A Device is one GPU: its primary context, one non-blocking stream that
// every kernel and copy is ordered on, and workspaces shared by the models
// on it. Public methods take the Device (a mutex, an OS thread, the context
// made current), so they are safe for concurrent use and run one at a
// time. Launch failures and faults name the kernel; a fault found at a
// later synchronisation names the last kernel launched, and
// Options.SyncEachKernel pins it down. After a fault the CUDA context is
// unusable, so every later call returns the first error.
//
// # Builds
//
// The backend is compiled with the build tag cuda (make cuda-build); without
// it Open returns ErrNotBuilt and nothing links CUDA. A cuda build does not
// depend on libcuda.so.1 at load time: the driver is bound when the process
// starts (cudrv_lazy.c), so on a machine without one Open returns an error
// wrapping ErrNoDriver and the caller carries on with the CPU.
package gpu
