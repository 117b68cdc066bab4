// Package model is Tandem's language model: a GPT-2 style transformer that
// the workers use to generate text (bulk batches and interactive sessions)
// and to fine-tune on accepted generations and user feedback.
//
// # Shape of the package
//
// It follows karpathy/llm.c. All parameters live in one contiguous
// []float32 (Model.Params, layout in weights.go and Config.ParamTensors),
// gradients in a second buffer of the same layout (Model.Grads), and the
// whole forward and backward pass is a short, explicit sequence of kernel
// calls (gpt2.go) against the Kernels interface (kernels.go). CPU() is the
// backend here; the CUDA backend in gpu/ implements the same list, so the
// model code is written once.
//
//	config.go         Config (Hugging Face config.json), limits, validation
//	weights.go        parameter layout, GPT-2 initialisation, LoadDir/SaveDir
//	safetensors.go    bounded safetensors reader (F32/F16/BF16) and F32 writer
//	tokenizer.go      GPT-2 BPE (r50k_base) through tiktoken-go, offline
//	kernels.go        the kernel list and its conventions
//	cpu_kernels*.go   the CPU kernels and their goroutine pool
//	sgemm_*.go        matrix products: OpenBLAS via cgo, gonum without cgo
//	internal/vec      AVX2 assembly for exp, row maxima and few-row products
//	                  (a package of its own: Go forbids assembly beside cgo)
//	gpt2.go           Forward, Backward, loss; activations kept per (B, T)
//	kvcache.go        incremental decoding with a preallocated KV cache
//	optim.go          AdamW, gradient clipping, cosine schedule
//	train.go          Trainer: one optimizer step over micro-batches
//	generate.go, sample.go, eval*.go, bleu.go, rouge.go
//	                  generation, sampling and evaluation on top of the above
//
// # Model directories
//
// A model on disk is a Hugging Face GPT-2 directory: config.json and
// model.safetensors, interchangeable with transformers' GPT2LMHeadModel.
// Linear weights keep Conv1D's (in, out) orientation in memory too, so
// loading is a copy and no product needs a transposed copy of a weight.
// The language-model head is tied to the token embedding.
//
// # Performance
//
// Every matrix product goes through Sgemm, row-major with transposes and
// strides expressed as flags, so attention heads are read in place from
// the interleaved qkv buffer. Products with at most 16 rows (decode steps)
// use internal/vec's kernels, which stream the weights once instead of
// packing them and are batch-invariant; single rows in attention use SGEMV.
// The softmaxes and GELU evaluate exp through vec as well: Go does not
// vectorise, and the loss alone takes two exps per logit. OpenBLAS is pinned to one thread and the
// package's own pool (one goroutine per core) splits large products and
// runs attention heads and element-wise kernels in parallel; two thread
// teams on the same cores would only get in each other's way. Activations
// are allocated once per (B, T) and reused; Backward keeps one layer's
// worth of gradient scratch; the loss never materialises probabilities;
// decoding allocates no buffers per step.
//
// # Correctness
//
// reference_test.go builds the same network as a gorgonia graph in float64
// and checks logits, loss and the gradient of every parameter against
// gorgonia's autodiff. Each kernel also has a finite-difference gradient
// check, decoding with the KV cache is checked against full forward passes,
// and AdamW against a step computed by hand.
//
// # Concurrency
//
// Forward, Backward, ZeroGrad and optimizer steps mutate the Model and
// must not overlap. Decode only reads parameters: several goroutines may
// decode with one Model at once, each with its own KVCache.
package model
