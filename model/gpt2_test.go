package model

import (
	"math"
	"math/rand/v2"
	"strings"
	"testing"
)

func newTestRand(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, 99)) }

func coreTinyConfig() Config {
	return Config{NLayer: 2, NHead: 2, NEmbd: 16, NPositions: 32, VocabSize: 50, LayerNormEpsilon: 1e-5}
}

func newTiny(t *testing.T, seed int64) *Model {
	t.Helper()
	m, err := New(coreTinyConfig(), seed)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func randTokens(rng *rand.Rand, n, vocab int) []int32 {
	s := make([]int32, n)
	for i := range s {
		s[i] = int32(rng.IntN(vocab))
	}
	return s
}

func TestNewIsDeterministicAndGPT2Initialised(t *testing.T) {
	a, b := newTiny(t, 1), newTiny(t, 1)
	c := newTiny(t, 2)
	for i := range a.Params {
		if a.Params[i] != b.Params[i] {
			t.Fatal("same seed, different parameters")
		}
	}
	same := true
	for i := range a.Params {
		same = same && a.Params[i] == c.Params[i]
	}
	if same {
		t.Fatal("different seeds, same parameters")
	}
	for _, p := range a.Config.ParamTensors() {
		vals := a.Params[p.Offset : p.Offset+p.Size]
		switch {
		case strings.HasSuffix(p.Name, "ln_1.weight"), strings.HasSuffix(p.Name, "ln_2.weight"), p.Name == "ln_f.weight":
			for _, v := range vals {
				if v != 1 {
					t.Fatalf("%s: gain %g, want 1", p.Name, v)
				}
			}
		case strings.HasSuffix(p.Name, ".bias"):
			for _, v := range vals {
				if v != 0 {
					t.Fatalf("%s: bias %g, want 0", p.Name, v)
				}
			}
		}
	}
	if got, want := len(a.Params), a.Config.NumParams(); got != want {
		t.Fatalf("len(Params)=%d NumParams=%d", got, want)
	}
}

func TestForwardRejectsBadInput(t *testing.T) {
	m := newTiny(t, 1)
	ok := make([]int32, 2*4)
	cases := []struct {
		name          string
		tokens, tgt   []int32
		B, T          int
		wantSubstring string
	}{
		{"zero B", ok, nil, 0, 4, "positive"},
		{"T too long", make([]int32, 33), nil, 1, 33, "n_positions"},
		{"length", ok[:7], nil, 2, 4, "len(tokens)"},
		{"token range", []int32{0, 1, 2, 50, 0, 0, 0, 0}, nil, 2, 4, "tokens[3]"},
		{"negative token", []int32{-1, 1, 2, 3, 0, 0, 0, 0}, nil, 2, 4, "tokens[0]"},
		{"target range", ok, []int32{0, 0, 0, 0, 0, -2, 0, 0}, 2, 4, "targets[5]"},
		{"target length", ok, []int32{0}, 2, 4, "len(targets)"},
	}
	for _, c := range cases {
		if _, err := m.Forward(c.tokens, c.B, c.T, c.tgt); err == nil || !strings.Contains(err.Error(), c.wantSubstring) {
			t.Errorf("%s: err = %v, want mention of %q", c.name, err, c.wantSubstring)
		}
	}
	if err := m.Backward(); err == nil {
		t.Error("Backward without Forward succeeded")
	}
	if _, err := m.Forward(ok, 2, 4, nil); err != nil {
		t.Fatal(err)
	}
	if err := m.Backward(); err == nil {
		t.Error("Backward after a forward without targets succeeded")
	}
}

func TestLossAtInitIsNearLogVocab(t *testing.T) {
	m := newTiny(t, 3)
	rng := newTestRand(3)
	B, T := 3, 16
	loss, err := m.Forward(randTokens(rng, B*T, 50), B, T, randTokens(rng, B*T, 50))
	if err != nil {
		t.Fatal(err)
	}
	if want := math.Log(50); math.Abs(float64(loss)-want) > 0.2 {
		t.Fatalf("initial loss %g, want about ln(50) = %g", loss, want)
	}
}

func TestIgnoredTargetsAreMasked(t *testing.T) {
	m := newTiny(t, 4)
	rng := newTestRand(4)
	B, T := 1, 8
	tokens := randTokens(rng, B*T, 50)
	targets := randTokens(rng, B*T, 50)
	full, _ := m.Forward(tokens, B, T, targets)
	losses := append([]float32(nil), m.acts.losses...)
	masked := append([]int32(nil), targets...)
	for i := 0; i < 5; i++ {
		masked[i] = -1
	}
	got, err := m.Forward(tokens, B, T, masked)
	if err != nil {
		t.Fatal(err)
	}
	var want float64
	for _, l := range losses[5:] {
		want += float64(l)
	}
	want /= 3
	if math.Abs(float64(got)-want) > 1e-6 {
		t.Fatalf("masked loss %g, want mean of the last 3 = %g (full %g)", got, want, full)
	}
	// Everything masked: zero loss, zero gradient.
	for i := range masked {
		masked[i] = -1
	}
	if l, err := m.Forward(tokens, B, T, masked); err != nil || l != 0 {
		t.Fatalf("all-masked loss %g err %v", l, err)
	}
	m.ZeroGrad()
	if err := m.Backward(); err != nil {
		t.Fatal(err)
	}
	for _, g := range m.Grads {
		if g != 0 {
			t.Fatal("all-masked batch produced a gradient")
		}
	}
	// Logits are readable after Forward and gone after a real Backward,
	// which reuses their buffer.
	if _, err := m.Forward(tokens, B, T, targets); err != nil || len(m.Logits()) != B*T*50 {
		t.Fatalf("logits after forward: %v", err)
	}
	if err := m.Backward(); err != nil || m.Logits() != nil {
		t.Fatalf("logits after backward: %v", err)
	}
}

func TestGradientAccumulationMatchesOneBatch(t *testing.T) {
	m := newTiny(t, 5)
	rng := newTestRand(5)
	T := 6
	tok := randTokens(rng, 2*T, 50)
	tgt := randTokens(rng, 2*T, 50)
	if _, err := m.Forward(tok, 2, T, tgt); err != nil {
		t.Fatal(err)
	}
	m.ZeroGrad()
	if err := m.Backward(); err != nil {
		t.Fatal(err)
	}
	whole := append([]float32(nil), m.Grads...)
	m.ZeroGrad()
	for b := 0; b < 2; b++ {
		if _, err := m.Forward(tok[b*T:(b+1)*T], 1, T, tgt[b*T:(b+1)*T]); err != nil {
			t.Fatal(err)
		}
		if err := m.Backward(); err != nil {
			t.Fatal(err)
		}
	}
	for i := range whole {
		if math.Abs(float64(m.Grads[i]/2-whole[i])) > 1e-6+1e-4*math.Abs(float64(whole[i])) {
			t.Fatalf("grad[%d]: accumulated/2 = %g, one batch = %g", i, m.Grads[i]/2, whole[i])
		}
	}
}

// A whole-model finite-difference check, independent of the gorgonia
// reference, on a few coordinates of every parameter kind.
func TestModelGradientFiniteDifference(t *testing.T) {
	cfg := Config{NLayer: 1, NHead: 2, NEmbd: 8, NPositions: 8, VocabSize: 11, LayerNormEpsilon: 1e-5}
	m, err := New(cfg, 9)
	if err != nil {
		t.Fatal(err)
	}
	for i := range m.Params {
		m.Params[i] *= 3
	}
	rng := newTestRand(9)
	B, T := 2, 4
	tok, tgt := randTokens(rng, B*T, 11), randTokens(rng, B*T, 11)
	if _, err := m.Forward(tok, B, T, tgt); err != nil {
		t.Fatal(err)
	}
	m.ZeroGrad()
	if err := m.Backward(); err != nil {
		t.Fatal(err)
	}
	grads := append([]float32(nil), m.Grads...)
	loss := func() float64 {
		l, err := m.Forward(tok, B, T, tgt)
		if err != nil {
			t.Fatal(err)
		}
		return float64(l)
	}
	for _, p := range cfg.ParamTensors() {
		fdCheck(t, p.Name, m.Params[p.Offset:p.Offset+p.Size], grads[p.Offset:p.Offset+p.Size], loss, 1e-2, 6, 5e-4)
	}
}

func TestTrainingLossFallsOnRepeatingSequence(t *testing.T) {
	m := newTiny(t, 6)
	seq := []int32{3, 14, 15, 9, 26, 5, 35, 8, 9, 7}
	B, T := 4, 16
	tokens := make([]int32, B*T)
	targets := make([]int32, B*T)
	for b := 0; b < B; b++ {
		for t := 0; t < T; t++ {
			tokens[b*T+t] = seq[(b+t)%len(seq)]
			targets[b*T+t] = seq[(b+t+1)%len(seq)]
		}
	}
	tr := &Trainer{Model: m, Opt: NewAdamW(1e-2, 0.01), MaxGradNorm: 1, Warmup: 5, TotalSteps: 150, MinLR: 1e-3}
	var first, last StepResult
	for i := 0; i < 150; i++ {
		res, err := tr.Step(Batch{Tokens: tokens, Targets: targets, B: B, T: T})
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			first = res
		}
		last = res
	}
	if last.Step != 150 || last.Skipped {
		t.Fatalf("last step %+v", last)
	}
	if !(last.Loss < 0.1 && first.Loss > 3) {
		t.Fatalf("loss went from %g to %g; want from about ln(50) to below 0.1", first.Loss, last.Loss)
	}
}
