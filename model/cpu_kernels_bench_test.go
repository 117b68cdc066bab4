package model

import (
	"fmt"
	"testing"
)

// Benchmarks of the hot paths. They report throughput so runs on
// different machines (and against the PyTorch / numpy peers in bench/) can
// be compared as ratios.

func BenchmarkSgemm(b *testing.B) {
	for _, n := range []int{256, 1024, 2048} {
		b.Run(fmt.Sprintf("n=%d", n), func(b *testing.B) {
			rng := newTestRand(1)
			A, B, C := randSlice(rng, n*n, 1), randSlice(rng, n*n, 1), make([]float32, n*n)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				Sgemm(false, false, n, n, n, 1, A, n, B, n, 0, C, n)
			}
			b.ReportMetric(2*float64(n)*float64(n)*float64(n)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
		})
	}
}

// benchConfigs are a small model and GPT-2 small (124M).
var benchConfigs = []struct {
	name string
	cfg  Config
}{
	{"d4c256", Config{NLayer: 4, NHead: 4, NEmbd: 256, NPositions: 1024, VocabSize: 50257, LayerNormEpsilon: 1e-5}},
	{"gpt2", GPT2Small()},
}

func BenchmarkTrainStep(b *testing.B) {
	for _, bc := range benchConfigs {
		for _, shape := range [][2]int{{4, 64}, {8, 256}} {
			B, T := shape[0], shape[1]
			b.Run(fmt.Sprintf("%s/B=%d/T=%d", bc.name, B, T), func(b *testing.B) {
				m, err := New(bc.cfg, 1)
				if err != nil {
					b.Fatal(err)
				}
				rng := newTestRand(2)
				batch := Batch{Tokens: randTokens(rng, B*T, bc.cfg.VocabSize), Targets: randTokens(rng, B*T, bc.cfg.VocabSize), B: B, T: T}
				tr := &Trainer{Model: m, Opt: NewAdamW(1e-4, 0.01), MaxGradNorm: 1}
				if _, err := tr.Step(batch); err != nil { // allocate everything once
					b.Fatal(err)
				}
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					if _, err := tr.Step(batch); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(B*T*b.N)/b.Elapsed().Seconds(), "tok/s")
			})
		}
	}
}

func BenchmarkDecode(b *testing.B) {
	for _, bc := range benchConfigs {
		for _, batch := range []int{1, 8} {
			b.Run(fmt.Sprintf("%s/batch=%d", bc.name, batch), func(b *testing.B) {
				m, err := New(bc.cfg, 1)
				if err != nil {
					b.Fatal(err)
				}
				const prompt, maxLen = 32, 256
				c, err := m.NewKVCache(batch, maxLen)
				if err != nil {
					b.Fatal(err)
				}
				rng := newTestRand(3)
				feed := make([][]int32, batch)
				step := make([][]int32, batch)
				for i := range feed {
					feed[i] = randTokens(rng, prompt, bc.cfg.VocabSize)
					step[i] = []int32{int32(i)}
				}
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					if c.Len(0) >= maxLen-1 || i == 0 {
						b.StopTimer()
						c.Reset()
						if _, err := m.Decode(c, feed); err != nil {
							b.Fatal(err)
						}
						b.StartTimer()
					}
					if _, err := m.Decode(c, step); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(batch*b.N)/b.Elapsed().Seconds(), "tok/s")
			})
		}
	}
}
