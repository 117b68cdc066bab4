// gorgonia has a "cuda" build tag of its own, which pulls in cuDNN (not
// available here) — the same tag as package gpu's. The reference runs in
// the untagged build; `go vet -tags cuda ./...` skips it.

//go:build !cuda

package model

import (
	"fmt"
	"math"
	"testing"

	// gorgonia v0.9.18 refuses to start on Go >= 1.21 unless this package
	// is at its newest version; importing it pins that in the module graph.
	_ "go4.org/unsafe/assume-no-moving-gc"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// The reference: the same GPT-2 forward pass and mean cross-entropy built
// as a gorgonia expression graph in float64, differentiated by gorgonia's
// autodiff. Our float32 kernels must agree on the logits, the loss and the
// gradient of every parameter.
//
// The graph avoids slicing activations: each attention head gets its own
// leaf nodes cut from the c_attn and c_proj weights, and their gradients
// are reassembled into our layout afterwards. That keeps the graph to ops
// whose gradients gorgonia gets right (matrix products, broadcasting
// arithmetic, Mean, Tanh, Cube, SoftMax) and lets a head's output feed the
// projection without a Concat: proj = Σ_h y_h @ Wproj[h rows].

type refGraph struct {
	g      *G.ExprGraph
	leaves []*G.Node
	// scatter copies each leaf's gradient into a flat gradient buffer.
	scatter []func(grad []float64, dst []float64)
}

// leaf makes a float64 leaf node from a [rows, cols] sub-block of a
// row-major [*, ld] float32 matrix starting at off, and remembers how to
// put its gradient back.
func (r *refGraph) leaf(name string, src []float32, off, rows, cols, ld int) *G.Node {
	vals := make([]float64, rows*cols)
	for i := 0; i < rows; i++ {
		for j := 0; j < cols; j++ {
			vals[i*cols+j] = float64(src[off+i*ld+j])
		}
	}
	var n *G.Node
	if rows == 1 {
		n = G.NewVector(r.g, tensor.Float64, G.WithShape(cols), G.WithName(name),
			G.WithValue(tensor.New(tensor.WithShape(cols), tensor.WithBacking(vals))))
	} else {
		n = G.NewMatrix(r.g, tensor.Float64, G.WithShape(rows, cols), G.WithName(name),
			G.WithValue(tensor.New(tensor.WithShape(rows, cols), tensor.WithBacking(vals))))
	}
	r.leaves = append(r.leaves, n)
	r.scatter = append(r.scatter, func(grad, dst []float64) {
		for i := 0; i < rows; i++ {
			for j := 0; j < cols; j++ {
				dst[off+i*ld+j] += grad[i*cols+j]
			}
		}
	})
	return n
}

func (r *refGraph) constant(name string, vals []float64, shape ...int) *G.Node {
	t := tensor.New(tensor.WithShape(shape...), tensor.WithBacking(vals))
	if len(shape) == 2 {
		return G.NewMatrix(r.g, tensor.Float64, G.WithShape(shape...), G.WithName(name), G.WithValue(t))
	}
	return G.NewTensor(r.g, tensor.Float64, len(shape), G.WithShape(shape...), G.WithName(name), G.WithValue(t))
}

func (r *refGraph) scalar(v float64) *G.Node { return G.NewConstant(v) }

// refLayerNorm normalises each row of x [N,C].
func (r *refGraph) layerNorm(x, w, b *G.Node, N, C int, eps float64) *G.Node {
	mean := G.Must(G.Reshape(G.Must(G.Mean(x, 1)), tensor.Shape{N, 1}))
	xc := G.Must(G.BroadcastSub(x, mean, nil, []byte{1}))
	variance := G.Must(G.Reshape(G.Must(G.Mean(G.Must(G.Square(xc)), 1)), tensor.Shape{N, 1}))
	std := G.Must(G.Sqrt(G.Must(G.Add(variance, r.scalar(eps)))))
	norm := G.Must(G.BroadcastHadamardDiv(xc, std, nil, []byte{1}))
	w2 := G.Must(G.Reshape(w, tensor.Shape{1, C}))
	b2 := G.Must(G.Reshape(b, tensor.Shape{1, C}))
	scaled := G.Must(G.BroadcastHadamardProd(norm, w2, nil, []byte{0}))
	return G.Must(G.BroadcastAdd(scaled, b2, nil, []byte{0}))
}

// linear is x[N,in] @ w[in,out] + b[out].
func (r *refGraph) linear(x, w, b *G.Node, out int) *G.Node {
	y := G.Must(G.Mul(x, w))
	return G.Must(G.BroadcastAdd(y, G.Must(G.Reshape(b, tensor.Shape{1, out})), nil, []byte{0}))
}

func (r *refGraph) gelu(x *G.Node) *G.Node {
	inner := G.Must(G.Add(x, G.Must(G.Mul(G.Must(G.Cube(x)), r.scalar(0.044715)))))
	th := G.Must(G.Tanh(G.Must(G.Mul(inner, r.scalar(math.Sqrt(2/math.Pi))))))
	onePlus := G.Must(G.Add(th, r.scalar(1)))
	return G.Must(G.Mul(G.Must(G.HadamardProd(x, onePlus)), r.scalar(0.5)))
}

type refResult struct {
	loss   float64
	logits []float64
	grads  []float64 // our Params layout
}

// referenceForwardBackward evaluates loss and gradients with gorgonia.
func referenceForwardBackward(t *testing.T, m *Model, tokens, targets []int32, B, T int) refResult {
	t.Helper()
	cfg := m.Config
	L, C, V, P, NH := cfg.NLayer, cfg.NEmbd, cfg.VocabSize, cfg.NPositions, cfg.NHead
	hs, N := C/NH, B*T
	eps := float64(cfg.LayerNormEpsilon)
	r := &refGraph{g: G.NewGraph()}
	pt := map[string]ParamTensor{}
	for _, p := range cfg.ParamTensors() {
		pt[p.Name] = p
	}
	par := m.Params
	whole := func(name string) *G.Node {
		p := pt[name]
		rows, cols := 1, p.Shape[len(p.Shape)-1]
		if len(p.Shape) == 2 {
			rows = p.Shape[0]
		}
		return r.leaf(name, par, p.Offset, rows, cols, cols)
	}

	// Embeddings as one-hot products, so gorgonia differentiates the
	// lookups (and the tied head adds its share to wte's gradient).
	oneTok := make([]float64, N*V)
	onePos := make([]float64, N*P)
	for i, tok := range tokens {
		oneTok[i*V+int(tok)] = 1
		onePos[i*P+i%T] = 1
	}
	wte, wpe := whole("wte.weight"), whole("wpe.weight")
	x := G.Must(G.Add(
		G.Must(G.Mul(r.constant("tok1h", oneTok, N, V), wte)),
		G.Must(G.Mul(r.constant("pos1h", onePos, N, P), wpe))))

	mask := make([]float64, T*T)
	for i := 0; i < T; i++ {
		for j := i + 1; j < T; j++ {
			mask[i*T+j] = -1e9 // exp underflows to exactly 0
		}
	}
	maskNode := r.constant("mask", mask, 1, T, T)
	scale := r.scalar(1 / math.Sqrt(float64(hs)))

	for l := 0; l < L; l++ {
		name := func(s string) string { return fmt.Sprintf("h.%d.%s", l, s) }
		ln1 := r.layerNorm(x, whole(name("ln_1.weight")), whole(name("ln_1.bias")), N, C, eps)
		qkvw, qkvb := pt[name("attn.c_attn.weight")], pt[name("attn.c_attn.bias")]
		projw := pt[name("attn.c_proj.weight")]
		var attnOut *G.Node
		for h := 0; h < NH; h++ {
			part := func(which int, tag string) *G.Node {
				col := which*C + h*hs
				w := r.leaf(fmt.Sprintf("%s.%s%d.w", name("attn"), tag, h), par, qkvw.Offset+col, C, hs, 3*C)
				b := r.leaf(fmt.Sprintf("%s.%s%d.b", name("attn"), tag, h), par, qkvb.Offset+col, 1, hs, hs)
				return G.Must(G.Reshape(r.linear(ln1, w, b, hs), tensor.Shape{B, T, hs}))
			}
			q, k, v := part(0, "q"), part(1, "k"), part(2, "v")
			scores := G.Must(G.Mul(G.Must(G.BatchedMatMul(q, k, false, true)), scale))
			scores = G.Must(G.BroadcastAdd(scores, maskNode, nil, []byte{0}))
			att := G.Must(G.SoftMax(scores, 2))
			y := G.Must(G.Reshape(G.Must(G.BatchedMatMul(att, v)), tensor.Shape{N, hs}))
			wp := r.leaf(fmt.Sprintf("%s.proj%d", name("attn"), h), par, projw.Offset+h*hs*C, hs, C, C)
			contrib := G.Must(G.Mul(y, wp))
			if attnOut == nil {
				attnOut = contrib
			} else {
				attnOut = G.Must(G.Add(attnOut, contrib))
			}
		}
		projb := G.Must(G.Reshape(whole(name("attn.c_proj.bias")), tensor.Shape{1, C}))
		attnOut = G.Must(G.BroadcastAdd(attnOut, projb, nil, []byte{0}))
		x = G.Must(G.Add(x, attnOut))

		ln2 := r.layerNorm(x, whole(name("ln_2.weight")), whole(name("ln_2.bias")), N, C, eps)
		fc := r.gelu(r.linear(ln2, whole(name("mlp.c_fc.weight")), whole(name("mlp.c_fc.bias")), 4*C))
		x = G.Must(G.Add(x, r.linear(fc, whole(name("mlp.c_proj.weight")), whole(name("mlp.c_proj.bias")), C)))
	}
	lnf := r.layerNorm(x, whole("ln_f.weight"), whole("ln_f.bias"), N, C, eps)
	logits := G.Must(G.Mul(lnf, G.Must(G.Transpose(wte))))

	oneTgt := make([]float64, N*V)
	count := 0
	for i, tg := range targets {
		if tg >= 0 {
			oneTgt[i*V+int(tg)] = 1
			count++
		}
	}
	logp := G.Must(G.LogSoftMax(logits, 1))
	picked := G.Must(G.Sum(G.Must(G.HadamardProd(logp, r.constant("tgt1h", oneTgt, N, V)))))
	loss := G.Must(G.Mul(picked, r.scalar(-1/float64(count))))

	if _, err := G.Grad(loss, r.leaves...); err != nil {
		t.Fatalf("gorgonia grad: %v", err)
	}
	var lossVal, logitsVal G.Value
	G.Read(loss, &lossVal)
	G.Read(logits, &logitsVal)
	vm := G.NewTapeMachine(r.g, G.BindDualValues(r.leaves...))
	defer vm.Close()
	if err := vm.RunAll(); err != nil {
		t.Fatalf("gorgonia run: %v", err)
	}
	res := refResult{
		loss:   lossVal.Data().(float64),
		logits: append([]float64(nil), logitsVal.Data().([]float64)...),
		grads:  make([]float64, len(m.Params)),
	}
	for i, n := range r.leaves {
		gv, err := n.Grad()
		if err != nil {
			t.Fatalf("gradient of %s: %v", n.Name(), err)
		}
		r.scatter[i](gv.Data().([]float64), res.grads)
	}
	return res
}

func TestMatchesGorgoniaReference(t *testing.T) {
	cfg := Config{NLayer: 2, NHead: 2, NEmbd: 8, NPositions: 8, VocabSize: 23, LayerNormEpsilon: 1e-5}
	m, err := New(cfg, 42)
	if err != nil {
		t.Fatal(err)
	}
	// Perturb the biases and gains away from 0 and 1 so their gradients
	// are exercised in a generic position.
	rng := newTestRand(7)
	for _, p := range cfg.ParamTensors() {
		if !p.Decay {
			for i := p.Offset; i < p.Offset+p.Size; i++ {
				m.Params[i] += float32(rng.NormFloat64() * 0.1)
			}
		}
	}
	// Larger weights than the 0.02 init make the attention non-uniform.
	for i := range m.Params {
		m.Params[i] *= 5
	}
	B, T := 2, 5
	tokens := make([]int32, B*T)
	targets := make([]int32, B*T)
	for i := range tokens {
		tokens[i] = int32(rng.IntN(cfg.VocabSize))
		targets[i] = int32(rng.IntN(cfg.VocabSize))
	}
	targets[0], targets[6] = -1, -1 // masked prompt positions

	loss, err := m.Forward(tokens, B, T, targets)
	if err != nil {
		t.Fatal(err)
	}
	logits := append([]float32(nil), m.Logits()...) // Backward reuses the buffer
	m.ZeroGrad()
	if err := m.Backward(); err != nil {
		t.Fatal(err)
	}
	ref := referenceForwardBackward(t, m, tokens, targets, B, T)

	if math.Abs(float64(loss)-ref.loss) > 1e-5*math.Max(1, ref.loss) {
		t.Errorf("loss %.7g, reference %.7g", loss, ref.loss)
	}
	for i, want := range ref.logits {
		if got := float64(logits[i]); math.Abs(got-want) > 2e-5*math.Max(1, math.Abs(want)) {
			t.Fatalf("logits[%d] = %.7g, reference %.7g", i, got, want)
		}
	}
	// float32 against float64 agrees to a few 1e-7 relative to each
	// tensor's largest gradient; 1e-5 leaves margin while still catching a
	// 1% error in any single element.
	for _, p := range cfg.ParamTensors() {
		var scale float64
		for _, g := range ref.grads[p.Offset : p.Offset+p.Size] {
			scale = math.Max(scale, math.Abs(g))
		}
		for i := p.Offset; i < p.Offset+p.Size; i++ {
			got, want := float64(m.Grads[i]), ref.grads[i]
			if math.Abs(got-want) > 1e-5*scale+1e-5*math.Abs(want) {
				t.Errorf("grad %s[%d] = %.7g, reference %.7g", p.Name, i-p.Offset, got, want)
				break
			}
		}
	}
	// Every parameter must have been compared against a real signal: a
	// gradient that is zero everywhere would hide a missing path.
	for _, p := range cfg.ParamTensors() {
		var s float64
		for _, g := range ref.grads[p.Offset : p.Offset+p.Size] {
			s += math.Abs(g)
		}
		if s == 0 {
			t.Errorf("reference gradient of %s is identically zero", p.Name)
		}
	}
}
