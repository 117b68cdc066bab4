package model

import (
	"math"
	"math/rand/v2"
	"strings"
	"testing"
)

// A model with every parameter zero predicts the uniform distribution, so
// its NLL is ln(V) exactly, whatever the text.
func TestPerplexityUniformModel(t *testing.T) {
	cfg := genTestConfig()
	cfg.VocabSize = 100
	m, err := New(cfg, 1)
	if err != nil {
		t.Fatal(err)
	}
	clear(m.Params)
	rng := rand.New(rand.NewPCG(2, 2))
	r, err := Perplexity(m, genRandomPrompt(rng, 95, 100), 10)
	if err != nil {
		t.Fatal(err)
	}
	if r.Tokens != 94 || math.Abs(r.NLL-math.Log(100)) > 1e-5 || math.Abs(r.Perplexity-100) > 1e-3 {
		t.Errorf("uniform model: %+v, want 94 tokens, NLL ln(100), perplexity 100", r)
	}
}

// refPerplexity recomputes the sliding-window NLL from raw logits: window
// starts stride apart, each prediction counted in the first window whose
// inputs reach it.
func refPerplexity(t *testing.T, m *Model, tokens []int32, stride int) float64 {
	t.Helper()
	np, V := m.Config.NPositions, m.Config.VocabSize
	n := len(tokens) - 1
	counted := make([]bool, n)
	var sum float64
	for begin := 0; begin < n; begin += stride {
		end := min(begin+np, n)
		if _, err := m.Forward(tokens[begin:end], 1, end-begin, nil); err != nil {
			t.Fatal(err)
		}
		lg := m.Logits()
		for p := begin; p < end; p++ {
			if counted[p] {
				continue
			}
			counted[p] = true
			row := lg[(p-begin)*V : (p-begin+1)*V]
			sum -= float64(row[tokens[p+1]]) - finiteLogSumExp(row)
		}
		if end == n {
			break
		}
	}
	return sum / float64(n)
}

func TestPerplexitySlidingWindow(t *testing.T) {
	m := genTestModel(t, 11)
	np := m.Config.NPositions
	rng := rand.New(rand.NewPCG(3, 3))
	long := genRandomPrompt(rng, 3*np+7, 50000)
	for _, stride := range []int{0, np, np / 2, 7} {
		r, err := Perplexity(m, long, stride)
		if err != nil {
			t.Fatal(err)
		}
		s := stride
		if s == 0 {
			s = np
		}
		want := refPerplexity(t, m, long, s)
		if r.Tokens != len(long)-1 || math.Abs(r.NLL-want) > 1e-4*want {
			t.Errorf("stride %d: %+v, want NLL %v over %d tokens", stride, r, want, len(long)-1)
		}
		if math.Abs(r.Perplexity-math.Exp(r.NLL)) > 1e-9*r.Perplexity {
			t.Errorf("stride %d: perplexity %v != exp(NLL %v)", stride, r.Perplexity, r.NLL)
		}
	}
	// A text that fits the window is one forward pass, whatever the stride.
	short := long[:np-5]
	a, err := Perplexity(m, short, 3)
	if err != nil {
		t.Fatal(err)
	}
	loss, err := m.Forward(short[:len(short)-1], 1, len(short)-1, short[1:])
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(a.NLL-float64(loss)) > 1e-5*a.NLL {
		t.Errorf("short text: NLL %v, single forward %v", a.NLL, loss)
	}
}

func TestPerplexityErrors(t *testing.T) {
	m := genTestModel(t, 12)
	np := m.Config.NPositions
	cases := []struct {
		tokens []int32
		stride int
		want   string
	}{
		{[]int32{1}, 0, "at least 2"},
		{[]int32{1, 2}, -1, "stride"},
		{[]int32{1, 2}, np + 1, "stride"},
		{[]int32{1, 2, 50257}, 0, "tokens[2]"},
	}
	for _, c := range cases {
		if _, err := Perplexity(m, c.tokens, c.stride); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Perplexity(%v, %d): err = %v, want mention of %q", c.tokens, c.stride, err, c.want)
		}
	}
	if _, err := Perplexity(nil, []int32{1, 2}, 0); err == nil {
		t.Error("nil model accepted")
	}
}
