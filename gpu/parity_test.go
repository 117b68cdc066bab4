//go:build cuda

package gpu

// Parity of the CUDA backend with the CPU one (model.CPU(), itself checked
// against a float64 gorgonia reference in package model): logits, loss
// and the gradient of every parameter tensor, optimizer steps, and
// decoding. On a machine without a GPU the CPU side runs and the GPU side
// is skipped with the reason (scripts/gpu-check.sh builds this test binary
// and runs it on a GPU machine).
//
// Errors are measured per tensor as max|gpu - cpu| / max|cpu|. Tolerances:
//
//	FP32: 2e-4 for logits, gradients and parameters after AdamW steps,
//	      1e-5 (relative) for the loss; greedy generation token-identical.
//	TF32: 3e-2 and 2e-3; greedy tokens are reported, not required equal
//	      (10-bit mantissas move near-ties).
//
// Set TANDEM_GPU_SYNC=1 to synchronise after every kernel, so a fault
// names its kernel; TANDEM_GPU_CHECK_DATA=DIR to load the checkpoint that
// scripts/gpu-check.sh writes (DIR/tiny) instead of a fresh random model.

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/tandem-ai/tandem/model"
)

type tolerance struct{ values, loss float64 }

var tolerances = map[Precision]tolerance{FP32: {2e-4, 1e-5}, TF32: {3e-2, 2e-3}}

// Configurations that reach every attention kernel variant (head sizes
// 32, 64, 48 padded to 64, and 128), odd vocabularies (unaligned logits
// rows) and sequence lengths that end inside a tile.
var parityCases = []struct {
	name string
	cfg  model.Config
	B, T int
}{
	{"hs32", model.Config{NLayer: 2, NHead: 4, NEmbd: 128, NPositions: 96, VocabSize: 1003, LayerNormEpsilon: 1e-5}, 3, 67},
	{"hs64", model.Config{NLayer: 2, NHead: 2, NEmbd: 128, NPositions: 160, VocabSize: 517, LayerNormEpsilon: 1e-5}, 2, 150},
	{"hs48", model.Config{NLayer: 1, NHead: 2, NEmbd: 96, NPositions: 80, VocabSize: 257, LayerNormEpsilon: 1e-5}, 2, 70},
	{"hs128", model.Config{NLayer: 1, NHead: 2, NEmbd: 256, NPositions: 96, VocabSize: 300, LayerNormEpsilon: 1e-5}, 2, 80},
	{"long", model.Config{NLayer: 1, NHead: 2, NEmbd: 128, NPositions: 1024, VocabSize: 61, LayerNormEpsilon: 1e-5}, 1, 1000},
}

var (
	devMu   sync.Mutex
	devices = map[Precision]*Device{}
	devErr  error
)

// device opens (once per precision) GPU 0, or skips the test with the
// reason when this machine has none.
func device(t *testing.T, prec Precision) *Device {
	t.Helper()
	devMu.Lock()
	defer devMu.Unlock()
	if devErr != nil {
		t.Skipf("GPU side skipped: %v", devErr)
	}
	if d := devices[prec]; d != nil {
		return d
	}
	d, err := Open(0, Options{Precision: prec, SyncEachKernel: os.Getenv("TANDEM_GPU_SYNC") != ""})
	if err != nil {
		if errors.Is(err, ErrNoDriver) {
			devErr = err
			t.Skipf("GPU side skipped: %v", err)
		}
		t.Fatalf("Open: %v", err)
	}
	t.Logf("device: %s", d)
	devices[prec] = d
	return d
}

func TestMain(m *testing.M) {
	code := m.Run()
	for _, d := range devices {
		d.Close()
	}
	os.Exit(code)
}

// maxRelErr is max|got-want| / max|want| (want's scale, at least 1e-6).
func maxRelErr(got, want []float32) float64 {
	var diff, scale float64
	for i := range want {
		diff = math.Max(diff, math.Abs(float64(got[i])-float64(want[i])))
		scale = math.Max(scale, math.Abs(float64(want[i])))
	}
	return diff / math.Max(scale, 1e-6)
}

// batchOf makes random tokens and targets, with every seventh target
// ignored (-1), as prompts and padding are in fine-tuning.
func batchOf(cfg model.Config, B, T int, seed uint64) model.Batch {
	rng := rand.New(rand.NewPCG(seed, 7))
	b := model.Batch{Tokens: make([]int32, B*T), Targets: make([]int32, B*T), B: B, T: T}
	for i := range b.Tokens {
		b.Tokens[i] = int32(rng.IntN(cfg.VocabSize))
		b.Targets[i] = int32(rng.IntN(cfg.VocabSize))
		if i%7 == 3 {
			b.Targets[i] = -1
		}
	}
	return b
}

// newModel is a random model of cfg, or the checkpoint of
// TANDEM_GPU_CHECK_DATA when the case asks for it and the variable is set.
func newModel(t *testing.T, cfg model.Config, seed int64) *model.Model {
	t.Helper()
	m, err := model.New(cfg, seed)
	if err != nil {
		t.Fatal(err)
	}
	// Non-trivial LayerNorm gains and biases, so their gradients and the
	// paths through them are exercised too.
	rng := rand.New(rand.NewPCG(uint64(seed), 3))
	for _, pt := range cfg.ParamTensors() {
		if !pt.Decay {
			for i := range m.Params[pt.Offset : pt.Offset+pt.Size] {
				m.Params[pt.Offset+i] += float32(rng.NormFloat64() * 0.1)
			}
		}
	}
	return m
}

// checkpointModel loads DIR/tiny from TANDEM_GPU_CHECK_DATA, if set.
func checkpointModel(t *testing.T) *model.Model {
	dir := os.Getenv("TANDEM_GPU_CHECK_DATA")
	if dir == "" {
		return nil
	}
	m, err := model.LoadDir(filepath.Join(dir, "tiny"))
	if err != nil {
		t.Fatalf("loading the gpu-check checkpoint: %v", err)
	}
	return m
}

type paritySetup struct {
	name string
	cfg  model.Config
	m    *model.Model
	b    model.Batch
}

func paritySetups(t *testing.T) []paritySetup {
	var out []paritySetup
	for i, c := range parityCases {
		out = append(out, paritySetup{c.name, c.cfg, newModel(t, c.cfg, int64(100+i)), batchOf(c.cfg, c.B, c.T, uint64(i))})
	}
	if m := checkpointModel(t); m != nil {
		b := batchOf(m.Config, 2, 64, 99)
		// The tokens scripts/gpu-check.sh wrote beside the checkpoint.
		raw, err := os.ReadFile(filepath.Join(os.Getenv("TANDEM_GPU_CHECK_DATA"), "tokens.bin"))
		if err != nil || len(raw) != 4*len(b.Tokens) {
			t.Fatalf("tokens.bin: %d bytes, %v; want %d", len(raw), err, 4*len(b.Tokens))
		}
		for i := range b.Tokens {
			b.Tokens[i] = int32(binary.LittleEndian.Uint32(raw[4*i:]))
		}
		out = append(out, paritySetup{"checkpoint", m.Config, m, b})
	}
	return out
}

// TestParityForwardBackward: logits, loss and every gradient tensor.
func TestParityForwardBackward(t *testing.T) {
	for _, s := range paritySetups(t) {
		// CPU reference first: it runs on every machine.
		cpuLoss, err := s.m.Forward(s.b.Tokens, s.b.B, s.b.T, s.b.Targets)
		if err != nil {
			t.Fatal(err)
		}
		cpuLogits := append([]float32(nil), s.m.Logits()...)
		s.m.ZeroGrad()
		if err := s.m.Backward(); err != nil {
			t.Fatal(err)
		}
		cpuGrads := append([]float32(nil), s.m.Grads...)
		for _, prec := range []Precision{FP32, TF32} {
			t.Run(s.name+"/"+prec.String(), func(t *testing.T) {
				d := device(t, prec)
				tol := tolerances[prec]
				gm, err := d.NewModel(s.m)
				if err != nil {
					t.Fatal(err)
				}
				defer gm.Close()
				loss, err := gm.Forward(s.b.Tokens, s.b.B, s.b.T, s.b.Targets)
				if err != nil {
					t.Fatal(err)
				}
				if rel := math.Abs(float64(loss-cpuLoss)) / math.Abs(float64(cpuLoss)); rel > tol.loss {
					t.Errorf("loss: gpu %.7f cpu %.7f (relative error %.2g > %.2g)", loss, cpuLoss, rel, tol.loss)
				}
				logits := make([]float32, len(cpuLogits))
				if err := gm.Logits(logits); err != nil {
					t.Fatal(err)
				}
				if e := maxRelErr(logits, cpuLogits); e > tol.values {
					t.Errorf("logits: error %.2g > %.2g", e, tol.values)
				}
				if err := gm.ZeroGrad(); err != nil {
					t.Fatal(err)
				}
				if err := gm.Backward(); err != nil {
					t.Fatal(err)
				}
				grads := make([]float32, len(cpuGrads))
				if err := gm.DownloadGrads(grads); err != nil {
					t.Fatal(err)
				}
				worst, worstName := 0.0, ""
				for _, pt := range s.cfg.ParamTensors() {
					e := maxRelErr(grads[pt.Offset:pt.Offset+pt.Size], cpuGrads[pt.Offset:pt.Offset+pt.Size])
					if e > tol.values {
						t.Errorf("gradient of %s: error %.2g > %.2g", pt.Name, e, tol.values)
					}
					if e > worst {
						worst, worstName = e, pt.Name
					}
				}
				t.Logf("loss %.6f (cpu %.6f); logits error %.2g; worst gradient error %.2g (%s)",
					loss, cpuLoss, maxRelErr(logits, cpuLogits), worst, worstName)
				if err := gm.Logits(logits); err == nil {
					t.Error("Logits after Backward succeeded; the buffer holds their gradient then")
				}
			})
		}
	}
}

// TestParityTrainSteps: two optimizer steps of two micro-batches each,
// with clipping, through model.Trainer on the CPU and with the GPU
// Trainer as its Backend; then the parameters and both moments.
func TestParityTrainSteps(t *testing.T) {
	c := parityCases[0]
	for _, prec := range []Precision{FP32, TF32} {
		// Adam's first steps move each parameter by about lr*sign(g): a
		// gradient entry near zero whose sign rounding flips moves the
		// other way, however close the two backends are. A large epsilon
		// makes the update a smooth function of the gradient, so the
		// parameters can be compared; the moments are compared as well.
		opt := func() *model.AdamW {
			o := model.NewAdamW(1e-3, 0.1)
			o.Eps = 1e-3
			return o
		}
		cpuModel := newModel(t, c.cfg, 7)
		cpu := &model.Trainer{Model: cpuModel, Opt: opt(), MaxGradNorm: 0.5, Warmup: 1}
		hostModel := cpuModel.Clone()
		gpuT := &model.Trainer{Model: hostModel, Opt: opt(), MaxGradNorm: 0.5, Warmup: 1}
		batches := []model.Batch{batchOf(c.cfg, 2, 40, 1), batchOf(c.cfg, 2, 40, 2)}
		var cpuRes [2]model.StepResult
		for s := range cpuRes {
			r, err := cpu.Step(batches...)
			if err != nil {
				t.Fatal(err)
			}
			cpuRes[s] = r
		}
		t.Run(prec.String(), func(t *testing.T) {
			d := device(t, prec)
			tol := tolerances[prec]
			backend, err := d.NewTrainBackend(hostModel)
			if err != nil {
				t.Fatal(err)
			}
			defer backend.Close()
			gpuT.Backend = backend
			for s := range cpuRes {
				r, err := gpuT.Step(batches...)
				if err != nil {
					t.Fatal(err)
				}
				want := cpuRes[s]
				if r.Step != want.Step || r.Skipped != want.Skipped || r.LR != want.LR {
					t.Errorf("step %d: %+v, cpu %+v", s, r, want)
				}
				if rel := math.Abs(float64(r.Loss-want.Loss)) / float64(want.Loss); rel > tol.loss {
					t.Errorf("step %d loss: gpu %.6f cpu %.6f", s, r.Loss, want.Loss)
				}
				if rel := math.Abs(float64(r.GradNorm-want.GradNorm)) / float64(want.GradNorm); rel > tol.values {
					t.Errorf("step %d gradient norm: gpu %.6f cpu %.6f", s, r.GradNorm, want.GradNorm)
				}
			}
			if err := gpuT.SyncHost(); err != nil {
				t.Fatal(err)
			}
			// AdamW normalises each update, so parameters are compared
			// by their change from the start.
			start := newModel(t, c.cfg, 7)
			delta := func(p []float32) []float32 {
				out := make([]float32, len(p))
				for i := range p {
					out[i] = p[i] - start.Params[i]
				}
				return out
			}
			for _, cmp := range []struct {
				what      string
				got, want []float32
			}{
				{"parameter change", delta(hostModel.Params), delta(cpuModel.Params)},
				{"first moment", gpuT.Opt.M, cpu.Opt.M},
				{"second moment", gpuT.Opt.V, cpu.Opt.V},
			} {
				if e := maxRelErr(cmp.got, cmp.want); e > tol.values {
					t.Errorf("%s after 2 steps: error %.2g > %.2g", cmp.what, e, tol.values)
				} else {
					t.Logf("%s after 2 steps: error %.2g", cmp.what, e)
				}
			}
			if l, err := gpuT.Eval(batches[0]); err != nil {
				t.Error(err)
			} else if cl, _ := cpu.Eval(batches[0]); math.Abs(float64(l-cl))/float64(cl) > tol.loss {
				t.Errorf("Eval after the steps: gpu %.6f cpu %.6f", l, cl)
			}
			// A fine-tune's final scoring (model.ScoringBackend): other
			// weights loaded into the trainer, then Eval and greedy
			// generation with them, against the CPU on those weights.
			if err := backend.LoadParams(start.Params); err != nil {
				t.Fatal(err)
			}
			if l, err := gpuT.Eval(batches[1]); err != nil {
				t.Error(err)
			} else if cl, _ := start.Eval(batches[1]); math.Abs(float64(l-cl))/float64(cl) > tol.loss {
				t.Errorf("Eval after LoadParams: gpu %.6f cpu %.6f", l, cl)
			}
			zero := int64(0)
			reqs := []model.Request{{Prompt: batches[1].Tokens[:9], Params: model.SamplingParams{MaxTokens: 12, Temperature: 0, Seed: &zero}}}
			want, err := model.Generate(context.Background(), start, nil, reqs, model.GenerateOptions{})
			if err != nil {
				t.Fatal(err)
			}
			got, err := model.Generate(context.Background(), start, nil, reqs, model.GenerateOptions{NewDecoder: backend.DecoderFactory()})
			if err != nil {
				t.Fatal(err)
			}
			if g, w := fmt.Sprint(got[0][0].Tokens), fmt.Sprint(want[0][0].Tokens); g != w {
				if prec == FP32 {
					t.Errorf("greedy generation after LoadParams: gpu %s, cpu %s", g, w)
				} else {
					t.Logf("greedy generation after LoadParams differs at TF32: gpu %s, cpu %s", g, w)
				}
			}
		})
	}
}

// TestParityDecode: the decoder's logits against full forward passes on
// the CPU, with ragged prompts, rows joining late, and prompts fed in
// several passes; DecodeGreedy against the argmax of Decode.
func TestParityDecode(t *testing.T) {
	c := parityCases[1]
	m := newModel(t, c.cfg, 11)
	rng := rand.New(rand.NewPCG(5, 5))
	prompts := [][]int32{make([]int32, 37), make([]int32, 5), nil, make([]int32, 64)}
	for _, p := range prompts {
		for i := range p {
			p[i] = int32(rng.IntN(c.cfg.VocabSize))
		}
	}
	// cpuLast is the CPU's logits after the last token of seq.
	cpuLast := func(seq []int32) []float32 {
		if _, err := m.Forward(seq, 1, len(seq), nil); err != nil {
			t.Fatal(err)
		}
		V := c.cfg.VocabSize
		return append([]float32(nil), m.Logits()[(len(seq)-1)*V:len(seq)*V]...)
	}
	for _, prec := range []Precision{FP32, TF32} {
		t.Run(prec.String(), func(t *testing.T) {
			d := device(t, prec)
			tol := tolerances[prec]
			gm, err := d.NewModel(m)
			if err != nil {
				t.Fatal(err)
			}
			defer gm.Close()
			dec, err := gm.NewDecoder(len(prompts), 100)
			if err != nil {
				t.Fatal(err)
			}
			defer dec.Close()
			dec.chunk = 16 // several passes per prefill
			seqs := make([][]int32, len(prompts))
			feed := prompts
			for step := 0; step < 6; step++ {
				out, err := dec.Decode(feed)
				if err != nil {
					t.Fatal(err)
				}
				next := make([][]int32, len(feed))
				for b, row := range feed {
					seqs[b] = append(seqs[b], row...)
					if len(row) == 0 {
						if out[b] != nil {
							t.Errorf("step %d row %d: logits for an empty row", step, b)
						}
						continue
					}
					if e := maxRelErr(out[b], cpuLast(seqs[b])); e > tol.values {
						t.Errorf("step %d row %d (%d tokens): logits error %.2g > %.2g", step, b, len(seqs[b]), e, tol.values)
					}
					next[b] = []int32{int32(argmax(out[b]))}
				}
				if step == 2 { // row 2 joins late with a prompt of its own
					next[2] = []int32{1, 2, 3, 4, 5, 6, 7, 8, 9}
				}
				feed = next
			}
			// DecodeGreedy on a fresh sequence set equals Decode's argmax.
			dec.Reset()
			want, err := dec.Decode(prompts)
			if err != nil {
				t.Fatal(err)
			}
			wantTok := make([]int, len(prompts))
			for b := range prompts {
				wantTok[b] = -1
				if want[b] != nil {
					wantTok[b] = argmax(want[b])
				}
			}
			dec.Reset()
			got := make([]int32, len(prompts))
			if err := dec.DecodeGreedy(prompts, got); err != nil {
				t.Fatal(err)
			}
			for b := range prompts {
				if int(got[b]) != wantTok[b] {
					t.Errorf("DecodeGreedy row %d: %d, argmax of Decode %d", b, got[b], wantTok[b])
				}
			}
			// Errors leave the cache as it was.
			before := dec.Len(0)
			if _, err := dec.Decode([][]int32{make([]int32, 200)}); err == nil {
				t.Error("decoding past maxLen succeeded")
			}
			if dec.Len(0) != before {
				t.Errorf("a failed Decode changed row 0's length from %d to %d", before, dec.Len(0))
			}
		})
	}
}

func argmax(x []float32) int {
	best := 0
	for i, v := range x {
		if v > x[best] {
			best = i
		}
	}
	return best
}

// TestParityGenerate: model.Generate with the GPU decoder against the CPU,
// greedy, several requests sharing the cache with continuous batching.
func TestParityGenerate(t *testing.T) {
	c := parityCases[0]
	m := newModel(t, c.cfg, 13)
	zero := int64(0)
	var reqs []model.Request
	for i, n := range []int{3, 17, 8, 30, 1} {
		p := make([]int32, n)
		for j := range p {
			p[j] = int32((i*31 + j*7) % c.cfg.VocabSize)
		}
		reqs = append(reqs, model.Request{Prompt: p, Params: model.SamplingParams{MaxTokens: 24, Temperature: 0, Seed: &zero}})
	}
	opts := model.GenerateOptions{MaxRows: 3} // five requests through three slots
	want, err := model.Generate(context.Background(), m, nil, reqs, opts)
	if err != nil {
		t.Fatal(err)
	}
	for _, prec := range []Precision{FP32, TF32} {
		t.Run(prec.String(), func(t *testing.T) {
			d := device(t, prec)
			gm, err := d.NewModel(m)
			if err != nil {
				t.Fatal(err)
			}
			defer gm.Close()
			o := opts
			o.NewDecoder = gm.DecoderFactory()
			got, err := model.Generate(context.Background(), m, nil, reqs, o)
			if err != nil {
				t.Fatal(err)
			}
			same, total := 0, 0
			for i := range reqs {
				g, w := got[i][0].Tokens, want[i][0].Tokens
				total += len(w)
				n := 0
				for n < len(g) && n < len(w) && g[n] == w[n] {
					n++
				}
				same += n
				if prec == FP32 && fmt.Sprint(g) != fmt.Sprint(w) {
					t.Errorf("request %d: gpu %v\ncpu %v", i, g, w)
				}
			}
			t.Logf("%s: %d of %d greedy tokens identical to the CPU's before the first difference", prec, same, total)
		})
	}
}

// TestParamLayout needs no GPU: the AdamW ranges cover the buffer once,
// with weight decay exactly on the tensors model.ParamTensors marks.
func TestParamLayout(t *testing.T) {
	cfg := parityCases[0].cfg
	lay, err := newParamLayout(cfg)
	if err != nil {
		t.Fatal(err)
	}
	covered := make([]int8, cfg.NumParams()) // 1 decayed, 2 plain
	for kind, ranges := range [][][2]int64{lay.decayRanges, lay.plainRanges} {
		for _, r := range ranges {
			for i := r[0]; i < r[1]; i++ {
				if covered[i] != 0 {
					t.Fatalf("element %d in two ranges", i)
				}
				covered[i] = int8(kind + 1)
			}
		}
	}
	for _, pt := range cfg.ParamTensors() {
		want := int8(2)
		if pt.Decay {
			want = 1
		}
		for i := pt.Offset; i < pt.Offset+pt.Size; i++ {
			if covered[i] != want {
				t.Fatalf("%s element %d: range kind %d, want %d", pt.Name, i-pt.Offset, covered[i], want)
			}
		}
	}
	// The per-layer addresses land on the tensors ParamTensors names.
	for _, pt := range cfg.ParamTensors() {
		var l int
		var suffix string
		if n, _ := fmt.Sscanf(pt.Name, "h.%d.%s", &l, &suffix); n != 2 {
			continue
		}
		lp := lay.layer(0, l)
		addr := map[string]uint64{
			"ln_1.weight": uint64(lp.ln1w), "ln_1.bias": uint64(lp.ln1b), "attn.c_attn.weight": uint64(lp.qkvw),
			"attn.c_attn.bias": uint64(lp.qkvb), "attn.c_proj.weight": uint64(lp.attprojw), "attn.c_proj.bias": uint64(lp.attprojb),
			"ln_2.weight": uint64(lp.ln2w), "ln_2.bias": uint64(lp.ln2b), "mlp.c_fc.weight": uint64(lp.fcw),
			"mlp.c_fc.bias": uint64(lp.fcb), "mlp.c_proj.weight": uint64(lp.fcprojw), "mlp.c_proj.bias": uint64(lp.fcprojb),
		}[suffix]
		if addr != uint64(pt.Offset)*4 {
			t.Errorf("%s: layout puts it at byte %d, ParamTensors at %d", pt.Name, addr, pt.Offset*4)
		}
	}
}

// TestSplitK needs no GPU: products that already fill the GPU are not
// split, skinny ones are, within the workspace bound.
func TestSplitK(t *testing.T) {
	const sms = 132
	if s := splitK(64*18, 768, sms, 8192*2304); s != 1 {
		t.Errorf("large product split %d ways", s)
	}
	if s := splitK(18, 768, sms, 8*2304); s < 2 {
		t.Errorf("decode-sized product (18 tiles, K=768) split %d ways, want several", s)
	}
	if s := splitK(1, 100, sms, 10); s != 1 {
		t.Errorf("short K split %d ways", s)
	}
	if s := splitK(1, 1<<20, sms, maxSplitKFloats/2); s > 2 {
		t.Errorf("split %d ways past the workspace bound", s)
	}
}
