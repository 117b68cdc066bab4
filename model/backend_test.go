package model

import (
	"context"
	"errors"
	"fmt"
	"testing"
)

// closingDecoder is the host decoder behind a DecoderFactory, counting
// Close calls: what an accelerator's factory looks like to Generate.
type closingDecoder struct {
	kvDecoder
	closed *int
}

func (d closingDecoder) Close() error { *d.closed++; return nil }

func TestGenerateUsesDecoderFactory(t *testing.T) {
	m := newTiny(t, 3)
	zero := int64(0)
	reqs := []Request{
		{Prompt: []int32{1, 2, 3}, Params: SamplingParams{MaxTokens: 6, Temperature: 0, Seed: &zero}},
		{Prompt: []int32{4}, Params: SamplingParams{MaxTokens: 4, Temperature: 0, Seed: &zero}},
		{Prompt: []int32{5, 6}, Params: SamplingParams{MaxTokens: 5, Temperature: 0, Seed: &zero}},
	}
	want, err := Generate(context.Background(), m, nil, reqs, GenerateOptions{MaxRows: 2})
	if err != nil {
		t.Fatal(err)
	}
	closed, made := 0, 0
	factory := func(batch, maxLen int) (Decoder, error) {
		made++
		c, err := m.NewKVCache(batch, maxLen)
		if err != nil {
			return nil, err
		}
		return closingDecoder{kvDecoder{m, c}, &closed}, nil
	}
	got, err := Generate(context.Background(), m, nil, reqs, GenerateOptions{MaxRows: 2, NewDecoder: factory})
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("with the factory: %v\nwithout: %v", got, want)
	}
	if made != 1 || closed != 1 {
		t.Errorf("factory called %d times, decoder closed %d times; want 1 and 1", made, closed)
	}
	boom := errors.New("no device memory")
	if _, err := Generate(context.Background(), m, nil, reqs, GenerateOptions{NewDecoder: func(int, int) (Decoder, error) { return nil, boom }}); !errors.Is(err, boom) {
		t.Errorf("factory error: got %v", err)
	}
}

// hostBackend is a TrainBackend that trains a separate copy of the model
// on the CPU kernels, as a device backend keeps its own copy.
type hostBackend struct {
	inner *Trainer
	syncs int
}

func (b *hostBackend) Step(t *Trainer, batches []Batch) (StepResult, error) {
	b.inner.Opt.Steps = t.Opt.Steps
	r, err := b.inner.Step(batches...)
	t.Opt.Steps = b.inner.Opt.Steps
	return r, err
}
func (b *hostBackend) Eval(batch Batch) (float32, error) { return b.inner.Model.Eval(batch) }
func (b *hostBackend) SyncHost(t *Trainer) error {
	b.syncs++
	copy(t.Model.Params, b.inner.Model.Params)
	t.Opt.M = append([]float32(nil), b.inner.Opt.M...)
	t.Opt.V = append([]float32(nil), b.inner.Opt.V...)
	return nil
}

func TestTrainerBackend(t *testing.T) {
	ref := newTiny(t, 5)
	host := ref.Clone()
	batch := Batch{Tokens: []int32{1, 2, 3, 4, 5, 6}, Targets: []int32{2, 3, 4, 5, 6, -1}, B: 2, T: 3}
	cpu := &Trainer{Model: ref, Opt: NewAdamW(1e-2, 0.1), MaxGradNorm: 1, Warmup: 2}
	inner := &Trainer{Model: host.Clone(), Opt: NewAdamW(1e-2, 0.1), MaxGradNorm: 1, Warmup: 2}
	b := &hostBackend{inner: inner}
	tr := &Trainer{Model: host, Opt: NewAdamW(1e-2, 0.1), MaxGradNorm: 1, Warmup: 2, Backend: b}
	for s := 0; s < 3; s++ {
		want, err := cpu.Step(batch)
		if err != nil {
			t.Fatal(err)
		}
		got, err := tr.Step(batch)
		if err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Errorf("step %d: backend %+v, cpu %+v", s, got, want)
		}
	}
	if fmt.Sprint(host.Params[:8]) == fmt.Sprint(ref.Params[:8]) {
		t.Error("the host parameters changed before SyncHost")
	}
	if err := tr.SyncHost(); err != nil || b.syncs != 1 {
		t.Fatalf("SyncHost: %v (%d syncs)", err, b.syncs)
	}
	if fmt.Sprint(host.Params) != fmt.Sprint(ref.Params) {
		t.Error("after SyncHost the host parameters differ from the CPU-trained ones")
	}
	l1, err1 := tr.Eval(batch)
	l2, err2 := cpu.Eval(batch)
	if err1 != nil || err2 != nil || l1 != l2 {
		t.Errorf("Eval: backend %v (%v), cpu %v (%v)", l1, err1, l2, err2)
	}
	if err := (&Trainer{Model: host}).SyncHost(); err != nil {
		t.Errorf("SyncHost without a backend: %v", err)
	}
}
