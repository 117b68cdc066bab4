//go:build cuda

package main

import (
	"fmt"
	"os"
	"time"

	"github.com/tandem-ai/tandem/gpu"
	"github.com/tandem-ai/tandem/model"
)

// benchGPU measures the CUDA backend at each precision of o.
func benchGPU(o options, res map[string]any) error {
	m, err := model.New(o.cfg, 1)
	if err != nil {
		return err
	}
	var trains, gens, workers []any
	for _, ps := range o.precisions {
		prec, err := gpu.ParsePrecision(ps)
		if err != nil {
			return err
		}
		t0 := time.Now()
		dev, err := gpu.Open(o.device, gpu.Options{Precision: prec, SyncEachKernel: o.syncEachKernel})
		if err != nil {
			return err
		}
		res["backend"] = "cuda"
		res["device"] = dev.String()
		res["open_seconds_"+ps] = time.Since(t0).Seconds() // the first Open JIT-compiles the PTX
		if err := benchDevice(dev, m, o, ps, &trains, &gens, &workers); err != nil {
			dev.Close()
			return fmt.Errorf("%s: %w", ps, err)
		}
		if err := dev.Close(); err != nil {
			return err
		}
	}
	res["train"], res["gen"], res["gen_worker"] = trains, gens, workers
	return nil
}

func benchDevice(dev *gpu.Device, m *model.Model, o options, prec string, trains, gens, workers *[]any) error {
	if has(o.parts, "train") {
		fmt.Fprintf(os.Stderr, "gpubench: %s training, batch %d x %d\n", prec, o.trainBatch, o.ctx)
		backend, err := dev.NewTrainBackend(m)
		if err != nil {
			return err
		}
		tr := &model.Trainer{Model: m.Clone(), Opt: model.NewAdamW(3e-4, 0.1), MaxGradNorm: 1, Backend: backend}
		d, last, err := timeSteps(tr, trainBatch(o), o.warmup, o.steps)
		backend.Close()
		if err != nil {
			return err
		}
		*trains = append(*trains, trainResult(prec, o, d, last))
	}
	if !has(o.parts, "gen") {
		return nil
	}
	gm, err := dev.NewModel(m)
	if err != nil {
		return err
	}
	defer gm.Close()
	for _, batch := range o.genBatches {
		fmt.Fprintf(os.Stderr, "gpubench: %s generation, batch %d\n", prec, batch)
		d, err := greedy(gm, o, batch)
		if err != nil {
			return err
		}
		*gens = append(*gens, genResult(prec, o, batch, d))
	}
	if o.workerBatch > 0 {
		fmt.Fprintf(os.Stderr, "gpubench: %s generation through model.Generate, batch %d\n", prec, o.workerBatch)
		d, err := generateWorkerPath(m, o, gm.DecoderFactory())
		if err != nil {
			return err
		}
		*workers = append(*workers, genResult(prec, o, o.workerBatch, d))
	}
	return nil
}

// greedy times batched greedy decoding on the device: the prompts in one
// prefill, then one token per row per step, the argmax taken on the GPU
// (as PyTorch's peer does).
func greedy(gm *gpu.Model, o options, batch int) (time.Duration, error) {
	dec, err := gm.NewDecoder(batch, o.prompt+o.newTokens)
	if err != nil {
		return 0, err
	}
	defer dec.Close()
	ps := prompts(o, batch)
	next := make([]int32, batch)
	feed := make([][]int32, batch)
	run := func(newTokens int) (time.Duration, error) {
		dec.Reset()
		t0 := time.Now()
		if err := dec.DecodeGreedy(ps, next); err != nil {
			return 0, err
		}
		for i := 1; i < newTokens; i++ {
			for b := range feed {
				feed[b] = next[b : b+1]
			}
			if err := dec.DecodeGreedy(feed, next); err != nil {
				return 0, err
			}
		}
		return time.Since(t0), nil
	}
	for range o.warmup {
		if _, err := run(4); err != nil {
			return 0, err
		}
	}
	return run(o.newTokens)
}
