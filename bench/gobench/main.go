// Command gobench measures Tandem's model package on the three workloads
// bench/torch_gpt2.py measures on PyTorch and numpy, and prints the same
// JSON shape, so bench/run.sh can put them side by side:
//
//	gen    batched greedy generation with the KV cache at GPT-2 124M shapes
//	       (random weights): batch 8, 32-token prompts, 64 new tokens
//	train  forward + backward + AdamW at 6 layers, 6 heads, 384 wide,
//	       context 256, batch 8, vocabulary 50257
//	sgemm  model.Sgemm at 768x768x768 and 2304x768x768 (M x N x K)
//
// Usage: gobench [-parts gen,train,sgemm]
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"strings"
	"time"

	"github.com/tandem-ai/tandem/model"
)

func main() {
	parts := flag.String("parts", "gen,train,sgemm", "comma-separated: gen, train, sgemm")
	flag.Parse()
	res := map[string]any{"threads": runtime.GOMAXPROCS(0), "blas": model.BLASName}
	for _, p := range strings.Split(*parts, ",") {
		var (
			v   any
			err error
		)
		switch p {
		case "":
			continue
		case "gen":
			v, err = benchGen()
		case "train":
			v, err = benchTrain()
		case "sgemm":
			v = benchSgemm()
		default:
			err = fmt.Errorf("unknown part %q", p)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "gobench:", p+":", err)
			os.Exit(1)
		}
		key := p
		if p == "sgemm" {
			key = "sgemm_gflops"
		}
		res[key] = v
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", " ")
	if err := enc.Encode(res); err != nil {
		fmt.Fprintln(os.Stderr, "gobench:", err)
		os.Exit(1)
	}
}

func randomTokens(rng *rand.Rand, n, vocab int) []int32 {
	t := make([]int32, n)
	for i := range t {
		t[i] = int32(rng.IntN(vocab))
	}
	return t
}

func benchGen() (map[string]any, error) {
	const batch, prompt, newTok = 8, 32, 64
	cfg := model.GPT2Small()
	m, err := model.New(cfg, 1)
	if err != nil {
		return nil, err
	}
	rng := rand.New(rand.NewPCG(1, 1))
	reqs := make([]model.Request, batch)
	for i := range reqs {
		reqs[i] = model.Request{
			Prompt: randomTokens(rng, prompt, cfg.VocabSize),
			// Greedy, and no early end: every row makes exactly newTok tokens.
			Params: model.SamplingParams{MaxTokens: newTok, IgnoreEOS: true},
		}
	}
	run := func(maxTokens int) (time.Duration, error) {
		rs := make([]model.Request, len(reqs))
		copy(rs, reqs)
		for i := range rs {
			rs[i].Params.MaxTokens = maxTokens
		}
		t0 := time.Now()
		out, err := model.Generate(context.Background(), m, nil, rs, model.GenerateOptions{MaxRows: batch})
		if err != nil {
			return 0, err
		}
		for i, c := range out {
			if len(c[0].Tokens) != maxTokens {
				return 0, fmt.Errorf("row %d made %d tokens, want %d", i, len(c[0].Tokens), maxTokens)
			}
		}
		return time.Since(t0), nil
	}
	if _, err := run(2); err != nil { // warm-up: first-touch allocations, worker pool
		return nil, err
	}
	d, err := run(newTok)
	if err != nil {
		return nil, err
	}
	return map[string]any{
		"batch": batch, "prompt_tokens": prompt, "new_tokens": newTok,
		"seconds":      d.Seconds(),
		"tokens_per_s": float64(batch*newTok) / d.Seconds(),
		"params":       cfg.NumParams(),
	}, nil
}

func benchTrain() (map[string]any, error) {
	const batch, ctx, steps = 8, 256, 3
	cfg := model.Config{NLayer: 6, NHead: 6, NEmbd: 384, NPositions: ctx, VocabSize: 50257, LayerNormEpsilon: 1e-5}
	m, err := model.New(cfg, 1)
	if err != nil {
		return nil, err
	}
	rng := rand.New(rand.NewPCG(2, 2))
	b := model.Batch{
		Tokens:  randomTokens(rng, batch*ctx, cfg.VocabSize),
		Targets: randomTokens(rng, batch*ctx, cfg.VocabSize),
		B:       batch, T: ctx,
	}
	tr := &model.Trainer{Model: m, Opt: model.NewAdamW(3e-4, 0.1)}
	if _, err := tr.Step(b); err != nil { // warm-up: activations, optimizer state
		return nil, err
	}
	t0 := time.Now()
	var last model.StepResult
	for range steps {
		if last, err = tr.Step(b); err != nil {
			return nil, err
		}
	}
	d := time.Since(t0)
	return map[string]any{
		"batch": batch, "context": ctx, "steps": steps, "seconds": d.Seconds(),
		"tokens_per_s": float64(batch*ctx*steps) / d.Seconds(),
		"params":       cfg.NumParams(), "final_loss": last.Loss,
	}, nil
}

// benchSgemm reports the best of repeated runs over half a second per
// shape, as the numpy peer does.
func benchSgemm() map[string]any {
	out := map[string]any{}
	rng := rand.New(rand.NewPCG(3, 3))
	for _, s := range [][3]int{{768, 768, 768}, {2304, 768, 768}} {
		M, N, K := s[0], s[1], s[2]
		a, b, c := make([]float32, M*K), make([]float32, K*N), make([]float32, M*N)
		for i := range a {
			a[i] = float32(rng.NormFloat64())
		}
		for i := range b {
			b[i] = float32(rng.NormFloat64())
		}
		model.Sgemm(false, false, M, N, K, 1, a, K, b, N, 0, c, N) // warm-up
		best := time.Duration(1 << 62)
		for end := time.Now().Add(500 * time.Millisecond); time.Now().Before(end); {
			t0 := time.Now()
			model.Sgemm(false, false, M, N, K, 1, a, K, b, N, 0, c, N)
			best = min(best, time.Since(t0))
		}
		out[fmt.Sprintf("%dx%dx%d", M, N, K)] = 2 * float64(M) * float64(N) * float64(K) / best.Seconds() / 1e9
	}
	return out
}
