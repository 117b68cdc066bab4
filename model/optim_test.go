package model

import (
	"math"
	"testing"
)

func TestAdamWMatchesHandComputedSteps(t *testing.T) {
	m := newTiny(t, 21)
	m.ZeroGrad()
	pt := m.Config.ParamTensors()
	// One decayed matrix element and one undecayed bias element.
	wi := pt[0].Offset + 7 // wte
	var bi int
	for _, p := range pt {
		if p.Name == "h.0.attn.c_attn.bias" {
			bi = p.Offset + 2
		}
	}
	m.Params[wi], m.Params[bi] = 0.5, -0.25
	o := NewAdamW(1e-3, 0.1)
	o.Beta1, o.Beta2, o.Eps = 0.9, 0.95, 1e-6
	grads := []float64{0.2, -0.4}
	p := []float64{0.5, -0.25}
	mm, vv := []float64{0, 0}, []float64{0, 0}
	lrs := []float32{1e-3, 5e-4}
	for step := 1; step <= 2; step++ {
		m.Grads[wi], m.Grads[bi] = float32(grads[0]), float32(grads[1])
		o.Step(m, lrs[step-1])
		lr := float64(lrs[step-1])
		for j, decay := range []float64{0.1, 0} {
			g := grads[j]
			mm[j] = 0.9*mm[j] + 0.1*g
			vv[j] = 0.95*vv[j] + 0.05*g*g
			mhat := mm[j] / (1 - math.Pow(0.9, float64(step)))
			vhat := vv[j] / (1 - math.Pow(0.95, float64(step)))
			p[j] = p[j] - lr*(mhat/(math.Sqrt(vhat)+1e-6)+decay*p[j])
		}
		for j, idx := range []int{wi, bi} {
			if got := float64(m.Params[idx]); math.Abs(got-p[j]) > 1e-7 {
				t.Fatalf("step %d param %d: %.9g, want %.9g", step, j, got, p[j])
			}
		}
	}
	if o.Steps != 2 || o.State().Step != 2 {
		t.Fatalf("Steps = %d", o.Steps)
	}
	// A parameter with zero gradient still decays if it is a matrix.
	other := pt[0].Offset + 8
	before := m.Params[other]
	m.Grads[other] = 0
	o.Step(m, 1e-3)
	if m.Params[other] == before && before != 0 {
		t.Fatal("weight decay not applied to a matrix")
	}

	// Restoring the state resumes identically.
	o2 := NewAdamW(1e-3, 0.1)
	o2.Beta1, o2.Beta2, o2.Eps = 0.9, 0.95, 1e-6
	st := o.State()
	if err := o2.SetState(AdamWState{M: append([]float32(nil), st.M...), V: append([]float32(nil), st.V...), Step: st.Step}, len(m.Params)); err != nil {
		t.Fatal(err)
	}
	m2 := m.Clone()
	m2.Grads = append([]float32(nil), m.Grads...)
	o.Step(m, 1e-3)
	o2.Step(m2, 1e-3)
	for i := range m.Params {
		if m.Params[i] != m2.Params[i] {
			t.Fatalf("resumed optimizer diverged at %d", i)
		}
	}
	if err := o2.SetState(AdamWState{M: make([]float32, 3)}, len(m.Params)); err == nil {
		t.Fatal("SetState accepted a wrong-sized state")
	}
}

func TestAdamWValidate(t *testing.T) {
	for _, o := range []*AdamW{
		{LR: -1, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8},
		{LR: 1e-3, Beta1: 1, Beta2: 0.999, Eps: 1e-8},
		{LR: 1e-3, Beta1: 0.9, Beta2: 0.999, Eps: 0},
		{LR: float32(math.NaN()), Beta1: 0.9, Beta2: 0.999, Eps: 1e-8},
	} {
		if o.Validate() == nil {
			t.Errorf("%+v validated", *o)
		}
	}
	if err := NewAdamW(3e-4, 0.01).Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestClipGradNorm(t *testing.T) {
	m := newTiny(t, 22)
	m.ZeroGrad()
	m.Grads[0], m.Grads[1] = 3, 4
	if n := ClipGradNorm(m, 10); n != 5 || m.Grads[0] != 3 {
		t.Fatalf("no clip expected: norm %g grads %g", n, m.Grads[0])
	}
	if n := ClipGradNorm(m, 1); n != 5 {
		t.Fatalf("norm %g, want 5", n)
	}
	if got := math.Hypot(float64(m.Grads[0]), float64(m.Grads[1])); math.Abs(got-1) > 1e-5 {
		t.Fatalf("clipped norm %g, want 1", got)
	}
	m.Grads[2] = float32(math.Inf(1))
	if n := ClipGradNorm(m, 1); !math.IsInf(float64(n), 1) {
		t.Fatalf("infinite gradient reported as %g", n)
	}
}

func TestCosineSchedule(t *testing.T) {
	cases := []struct {
		step int
		want float32
	}{
		{0, 0.1}, {4, 0.5}, {9, 1}, {10, 1}, {60, 0.55}, {110, 0.1}, {500, 0.1},
	}
	for _, c := range cases {
		if got := CosineSchedule(c.step, 10, 110, 1, 0.1); math.Abs(float64(got-c.want)) > 1e-6 {
			t.Errorf("step %d: %g, want %g", c.step, got, c.want)
		}
	}
}

func TestTrainerSkipsNonFiniteStep(t *testing.T) {
	m := newTiny(t, 23)
	for i := range m.Params[:10] {
		m.Params[i] = float32(math.NaN())
	}
	before := append([]float32(nil), m.Params...)
	tr := &Trainer{Model: m, Opt: NewAdamW(1e-3, 0)}
	tok := []int32{0, 1, 2, 3}
	res, err := tr.Step(Batch{Tokens: tok, Targets: tok, B: 1, T: 4})
	if err != nil {
		t.Fatal(err)
	}
	if !res.Skipped || res.Step != 0 {
		t.Fatalf("result %+v, want a skipped step", res)
	}
	for i := 10; i < len(before); i++ {
		if m.Params[i] != before[i] {
			t.Fatal("a skipped step changed the parameters")
		}
	}
	if _, err := tr.Step(); err != ErrNoBatches {
		t.Fatalf("no batches: %v", err)
	}
}
