// Command gpubench measures the CUDA backend (package gpu) at GPT-2 124M
// shapes: a training step (forward, backward, clipping, AdamW, through
// model.Trainer with the GPU Trainer as its Backend) and batched greedy
// generation with the device KV cache, at FP32 and TF32.
// bench/torch_gpu.py measures PyTorch the same way, and
// scripts/gpu-check.sh runs both and prints the ratios.
//
// Without a GPU (or in a binary built without -tags cuda) it measures the
// CPU backend instead, at the shapes given (gpu-check passes smaller ones),
// so the same script yields figures on every machine.
//
// Usage:
//
//	gpubench [-backend auto|gpu|cpu] [flags]   JSON on standard output
//	gpubench -gen-data DIR                     write the parity tests' data
package main

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/tandem-ai/tandem/gpu"
	"github.com/tandem-ai/tandem/model"
)

// options are the benchmark's shapes.
type options struct {
	device            int
	parts, precisions []string
	trainBatch, ctx   int
	steps, warmup     int
	genBatches        []int
	prompt, newTokens int
	layers            int // 0: GPT-2 small's 12
	embd, heads       int // 0: GPT-2 small's 768 and 12
	vocab             int // 0: GPT-2's 50257
	workerBatch       int
	syncEachKernel    bool
	backend           string
	cfg               model.Config
}

func main() {
	var o options
	var parts, precs, batches string
	genData := flag.String("gen-data", "", "write the parity tests' data (a tiny checkpoint and tokens) into this directory and exit")
	flag.StringVar(&o.backend, "backend", "auto", "auto (the GPU when one opens, else the CPU), gpu or cpu")
	flag.IntVar(&o.device, "device", 0, "GPU ordinal")
	flag.StringVar(&parts, "parts", "train,gen", "comma-separated: train, gen")
	flag.StringVar(&precs, "precisions", "fp32,tf32", "GPU matrix-product precisions to measure (the CPU is fp32)")
	flag.IntVar(&o.trainBatch, "train-batch", 8, "training batch (rows)")
	flag.IntVar(&o.ctx, "ctx", 1024, "training context length")
	flag.IntVar(&o.steps, "steps", 5, "timed training steps")
	flag.IntVar(&o.warmup, "warmup", 2, "untimed steps (and generation runs) first")
	flag.StringVar(&batches, "gen-batches", "1,8,64", "generation batch sizes")
	flag.IntVar(&o.prompt, "prompt", 32, "prompt tokens per row")
	flag.IntVar(&o.newTokens, "new", 128, "generated tokens per row")
	flag.IntVar(&o.layers, "layers", 0, "layers (0: GPT-2 small's 12)")
	flag.IntVar(&o.embd, "embd", 0, "width (0: GPT-2 small's 768; smaller only for smoke runs)")
	flag.IntVar(&o.heads, "heads", 0, "attention heads (0: GPT-2 small's 12)")
	flag.IntVar(&o.vocab, "vocab", 0, "vocabulary (0: GPT-2's 50257)")
	flag.IntVar(&o.workerBatch, "worker-batch", 8, "batch of the worker path (model.Generate with host sampling); 0 skips it")
	flag.BoolVar(&o.syncEachKernel, "sync-each-kernel", false, "synchronise after every kernel (names a faulting kernel)")
	flag.Parse()
	if *genData != "" {
		if err := writeData(*genData); err != nil {
			fail(err)
		}
		return
	}
	o.parts, o.precisions = splitList(parts), splitList(precs)
	for _, s := range splitList(batches) {
		n, err := strconv.Atoi(s)
		if err != nil || n <= 0 {
			fail(fmt.Errorf("-gen-batches: %q", s))
		}
		o.genBatches = append(o.genBatches, n)
	}
	o.cfg = model.GPT2Small()
	for _, f := range []struct {
		dst *int
		v   int
	}{{&o.cfg.NLayer, o.layers}, {&o.cfg.NEmbd, o.embd}, {&o.cfg.NHead, o.heads}, {&o.cfg.VocabSize, o.vocab}} {
		if f.v > 0 {
			*f.dst = f.v
		}
	}
	o.cfg.NPositions = max(o.cfg.NPositions, o.ctx, o.prompt+o.newTokens)

	res := map[string]any{"config": o.cfg, "params": o.cfg.NumParams(), "go": runtime.Version(), "cuda_built": gpu.Built}
	var err error
	switch o.backend {
	case "gpu":
		err = benchGPU(o, res)
	case "auto":
		if err = benchGPU(o, res); err != nil {
			fmt.Fprintf(os.Stderr, "gpubench: no GPU (%v); measuring the CPU backend\n", err)
			res["gpu_error"] = err.Error()
			err = benchCPU(o, res)
		}
	case "cpu":
		err = benchCPU(o, res)
	default:
		err = fmt.Errorf("-backend %q: want auto, gpu or cpu", o.backend)
	}
	if err != nil {
		fail(err)
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", " ")
	if err := enc.Encode(res); err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "gpubench:", err)
	os.Exit(1)
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func has(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func randomTokens(rng *rand.Rand, n, vocab int) []int32 {
	t := make([]int32, n)
	for i := range t {
		t[i] = int32(rng.IntN(vocab))
	}
	return t
}

func trainBatch(o options) model.Batch {
	rng := rand.New(rand.NewPCG(2, 2))
	n := o.trainBatch * o.ctx
	return model.Batch{Tokens: randomTokens(rng, n, o.cfg.VocabSize), Targets: randomTokens(rng, n, o.cfg.VocabSize), B: o.trainBatch, T: o.ctx}
}

func prompts(o options, batch int) [][]int32 {
	rng := rand.New(rand.NewPCG(1, uint64(batch)))
	p := make([][]int32, batch)
	for i := range p {
		p[i] = randomTokens(rng, o.prompt, o.cfg.VocabSize)
	}
	return p
}

// timeSteps runs warmup untimed steps, then `steps` timed ones.
func timeSteps(tr *model.Trainer, b model.Batch, warmup, steps int) (time.Duration, model.StepResult, error) {
	var last model.StepResult
	var err error
	for range warmup {
		if last, err = tr.Step(b); err != nil {
			return 0, last, err
		}
	}
	t0 := time.Now()
	for range steps {
		if last, err = tr.Step(b); err != nil {
			return 0, last, err
		}
	}
	return time.Since(t0), last, nil
}

func trainResult(prec string, o options, d time.Duration, last model.StepResult) map[string]any {
	return map[string]any{
		"precision": prec, "batch": o.trainBatch, "context": o.ctx, "steps": o.steps,
		"seconds": d.Seconds(), "tokens_per_s": float64(o.trainBatch*o.ctx*o.steps) / d.Seconds(), "loss": last.Loss,
	}
}

func genResult(prec string, o options, batch int, d time.Duration) map[string]any {
	return map[string]any{
		"precision": prec, "batch": batch, "prompt_tokens": o.prompt, "new_tokens": o.newTokens,
		"seconds": d.Seconds(), "tokens_per_s": float64(batch*o.newTokens) / d.Seconds(),
	}
}

// generateWorkerPath times model.Generate as the worker runs it: greedy
// requests, host sampling, decoding through dec (nil: the CPU KV cache).
func generateWorkerPath(m *model.Model, o options, dec model.DecoderFactory) (time.Duration, error) {
	ps := prompts(o, o.workerBatch)
	reqs := make([]model.Request, len(ps))
	for i, p := range ps {
		reqs[i] = model.Request{Prompt: p, Params: model.SamplingParams{MaxTokens: o.newTokens, IgnoreEOS: true}}
	}
	run := func() (time.Duration, error) {
		t0 := time.Now()
		out, err := model.Generate(context.Background(), m, nil, reqs, model.GenerateOptions{MaxRows: o.workerBatch, NewDecoder: dec})
		if err != nil {
			return 0, err
		}
		for i, c := range out {
			if len(c[0].Tokens) != o.newTokens {
				return 0, fmt.Errorf("worker path: row %d made %d tokens, want %d", i, len(c[0].Tokens), o.newTokens)
			}
		}
		return time.Since(t0), nil
	}
	if _, err := run(); err != nil {
		return 0, err
	}
	return run()
}

// benchCPU measures the CPU backend at o's shapes.
func benchCPU(o options, res map[string]any) error {
	res["backend"] = "cpu"
	res["device"] = fmt.Sprintf("cpu (%d threads, %s)", runtime.GOMAXPROCS(0), model.BLASName)
	m, err := model.New(o.cfg, 1)
	if err != nil {
		return err
	}
	if has(o.parts, "train") {
		fmt.Fprintln(os.Stderr, "gpubench: cpu training")
		tr := &model.Trainer{Model: m.Clone(), Opt: model.NewAdamW(3e-4, 0.1), MaxGradNorm: 1}
		d, last, err := timeSteps(tr, trainBatch(o), o.warmup, o.steps)
		if err != nil {
			return err
		}
		res["train"] = []any{trainResult("fp32", o, d, last)}
	}
	if has(o.parts, "gen") {
		var gens []any
		for _, batch := range o.genBatches {
			fmt.Fprintf(os.Stderr, "gpubench: cpu generation, batch %d\n", batch)
			oo := o
			oo.workerBatch = batch
			d, err := generateWorkerPath(m, oo, nil)
			if err != nil {
				return err
			}
			gens = append(gens, genResult("fp32", o, batch, d))
		}
		res["gen"] = gens
	}
	return nil
}

// writeData writes what the parity tests load when TANDEM_GPU_CHECK_DATA
// is set: DIR/tiny (a random model in the Hugging Face layout) and
// DIR/tokens.bin (2x64 little-endian int32 tokens).
func writeData(dir string) error {
	cfg := model.Config{NLayer: 2, NHead: 4, NEmbd: 128, NPositions: 128, VocabSize: 1003, LayerNormEpsilon: 1e-5}
	m, err := model.New(cfg, 42)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := m.SaveDir(filepath.Join(dir, "tiny")); err != nil {
		return err
	}
	rng := rand.New(rand.NewPCG(4, 2))
	toks := randomTokens(rng, 2*64, cfg.VocabSize)
	buf := make([]byte, 4*len(toks))
	for i, t := range toks {
		binary.LittleEndian.PutUint32(buf[4*i:], uint32(t))
	}
	return os.WriteFile(filepath.Join(dir, "tokens.bin"), buf, 0o644)
}
