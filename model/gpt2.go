package model

import (
	"errors"
	"fmt"

	"github.com/tandem-ai/tandem/limits"
)

// Model is a GPT-2 language model: its configuration, its parameters in
// one contiguous buffer, and the activations of the last Forward.
//
// Forward, Backward and ZeroGrad use state kept in the Model and must not
// run concurrently on one Model. Decode only reads the parameters, so any
// number of goroutines may decode concurrently, each with its own KVCache,
// while no training step is changing the parameters.
type Model struct {
	Config Config
	// Params holds every parameter; see ParamTensors for the layout.
	Params []float32
	// Grads has the layout of Params. It is nil until the first Backward
	// or ZeroGrad.
	Grads []float32
	// Kernels runs the arithmetic; CPU() unless replaced.
	Kernels Kernels

	acts *activations
	back *backScratch
}

// newModel allocates a zeroed model.
func newModel(cfg Config) (*Model, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Model{Config: cfg, Params: make([]float32, cfg.NumParams()), Kernels: CPU()}, nil
}

// Clone returns a deep copy of the parameters in a fresh Model (no
// gradients, no activations), sharing the Kernels.
func (m *Model) Clone() *Model {
	return &Model{Config: m.Config, Params: append([]float32(nil), m.Params...), Kernels: m.Kernels}
}

// MaxActivationBytes bounds the memory Forward (with Backward's scratch)
// may allocate for one (B, T); beyond it Forward refuses the batch.
const MaxActivationBytes = limits.ActivationBytes

// activations are everything Forward keeps for Backward, sized for one
// B*T and reused while the shape fits.
type activations struct {
	B, T int
	buf  []float32

	encoded                   []float32 // [B,T,C]
	ln1, ln1Mean, ln1Rstd     []float32 // [L,B,T,C], [L,B,T], [L,B,T]
	qkv                       []float32 // [L,B,T,3C]
	atty                      []float32 // [L,B,T,C]
	att                       []float32 // [L,B,NH,T,T]
	residual2                 []float32 // [L,B,T,C]
	ln2, ln2Mean, ln2Rstd     []float32 // [L,B,T,C], [L,B,T], [L,B,T]
	fch, fchGelu              []float32 // [L,B,T,4C]
	residual3                 []float32 // [L,B,T,C]
	lnf, lnfMean, lnfRstd     []float32 // [B,T,C], [B,T], [B,T]
	logits                    []float32 // [B,T,V]
	losses, lse               []float32 // [B,T]
	proj                      []float32 // [B,T,C], scratch for projections before the residual add
	tokens, targets           []int32
	hasTargets                bool
	logitsValid               bool
	validTargets              int
	forwardDone, backwardDone bool
}

// backScratch is the gradient scratch of Backward: one layer's worth,
// reused layer after layer, rather than a gradient for every activation.
type backScratch struct {
	buf  []float32
	dres []float32 // [B,T,C] gradient of the residual stream
	dC   []float32 // [B,T,C]
	dqkv []float32 // [B,T,3C]
	d4C  []float32 // [B,T,4C]
	datt []float32 // [B,NH,T,T]
}

// carve hands out consecutive slices of buf.
type carver struct {
	buf []float32
	off int
}

func (c *carver) take(n int) []float32 {
	s := c.buf[c.off : c.off+n : c.off+n]
	c.off += n
	return s
}

func (m *Model) actSizes(B, T int) (fwd, back int64) {
	c := m.Config
	L, C, V, NH := int64(c.NLayer), int64(c.NEmbd), int64(c.VocabSize), int64(c.NHead)
	N := int64(B) * int64(T)
	att := int64(B) * NH * int64(T) * int64(T)
	// In the order ensureActivations carves them.
	fwd = N*C + // encoded
		L*(N*C+2*N) + L*N*3*C + L*N*C + L*att + L*N*C + // ln1, qkv, atty, att, residual2
		L*(N*C+2*N) + 2*L*N*4*C + L*N*C + // ln2, fch, fchGelu, residual3
		(N*C + 2*N) + N*V + 2*N + N*C // lnf, logits, losses and lse, proj
	back = 3*N*C + N*3*C + N*4*C + att
	return fwd, back
}

func (m *Model) ensureActivations(B, T int) error {
	if a := m.acts; a != nil && a.B == B && a.T == T {
		return nil
	}
	fwd, back := m.actSizes(B, T)
	if (fwd+back)*4 > MaxActivationBytes {
		return fmt.Errorf("forward: B=%d T=%d needs %d MiB of activations, limit %d MiB", B, T, (fwd+back)*4>>20, int64(MaxActivationBytes)>>20)
	}
	c := m.Config
	L, C, V, NH := c.NLayer, c.NEmbd, c.VocabSize, c.NHead
	N := B * T
	a := &activations{B: B, T: T}
	// Reuse the old buffer when it is large enough: shapes that alternate
	// (a last, shorter batch) then cost no allocation.
	if m.acts != nil && int64(len(m.acts.buf)) >= fwd {
		a.buf = m.acts.buf
	} else {
		m.acts = nil // let the old buffer go before allocating the new one
		a.buf = make([]float32, fwd)
	}
	cv := &carver{buf: a.buf}
	a.encoded = cv.take(N * C)
	a.ln1, a.ln1Mean, a.ln1Rstd = cv.take(L*N*C), cv.take(L*N), cv.take(L*N)
	a.qkv = cv.take(L * N * 3 * C)
	a.atty = cv.take(L * N * C)
	a.att = cv.take(L * B * NH * T * T)
	a.residual2 = cv.take(L * N * C)
	a.ln2, a.ln2Mean, a.ln2Rstd = cv.take(L*N*C), cv.take(L*N), cv.take(L*N)
	a.fch, a.fchGelu = cv.take(L*N*4*C), cv.take(L*N*4*C)
	a.residual3 = cv.take(L * N * C)
	a.lnf, a.lnfMean, a.lnfRstd = cv.take(N*C), cv.take(N), cv.take(N)
	a.logits = cv.take(N * V)
	a.losses, a.lse = cv.take(N), cv.take(N)
	a.proj = cv.take(N * C)
	a.tokens = make([]int32, N)
	a.targets = make([]int32, N)
	m.acts = a
	if m.back != nil && int64(len(m.back.buf)) < back {
		m.back = nil
	}
	return nil
}

func (m *Model) ensureBackScratch() {
	a := m.acts
	B, T := a.B, a.T
	c := m.Config
	C, NH := c.NEmbd, c.NHead
	N := B * T
	_, need := m.actSizes(B, T)
	s := m.back
	if s == nil || int64(len(s.buf)) < need {
		s = &backScratch{buf: make([]float32, need)}
	}
	cv := &carver{buf: s.buf}
	s.dres, s.dC = cv.take(N*C), cv.take(N*C)
	s.dqkv, s.d4C = cv.take(N*3*C), cv.take(N*4*C)
	s.datt = cv.take(B * NH * T * T)
	m.back = s
}

// checkBatch validates a batch against the config.
func (m *Model) checkBatch(tokens []int32, B, T int, targets []int32) error {
	return m.Config.CheckBatch(tokens, B, T, targets)
}

// CheckBatch validates a forward batch, tokens [B,T] and optional targets
// (-1 or a token), against the config, with the errors Forward returns.
// Other backends of the same model (gpu.Model) use it so that they accept
// and refuse exactly the same batches.
func (c Config) CheckBatch(tokens []int32, B, T int, targets []int32) error {
	if B <= 0 || T <= 0 {
		return fmt.Errorf("forward: B=%d and T=%d must be positive", B, T)
	}
	if T > c.NPositions {
		return fmt.Errorf("forward: T=%d exceeds n_positions=%d", T, c.NPositions)
	}
	if B > MaxActivationBytes/T {
		return fmt.Errorf("forward: B=%d T=%d is too large", B, T)
	}
	if len(tokens) != B*T {
		return fmt.Errorf("forward: len(tokens)=%d, want B*T=%d", len(tokens), B*T)
	}
	for i, t := range tokens {
		if t < 0 || int(t) >= c.VocabSize {
			return fmt.Errorf("forward: tokens[%d]=%d outside the vocabulary [0,%d)", i, t, c.VocabSize)
		}
	}
	if targets != nil {
		if len(targets) != B*T {
			return fmt.Errorf("forward: len(targets)=%d, want B*T=%d", len(targets), B*T)
		}
		for i, t := range targets {
			if t < -1 || int(t) >= c.VocabSize {
				return fmt.Errorf("forward: targets[%d]=%d, want -1 (ignored) or a token in [0,%d)", i, t, c.VocabSize)
			}
		}
	}
	return nil
}

// Forward runs the model on tokens [B,T] and keeps every activation for
// Backward. With targets it returns the mean cross-entropy over the
// positions whose target is not -1 (0 when all are ignored); without, it
// returns 0 and only the logits are meaningful.
func (m *Model) Forward(tokens []int32, B, T int, targets []int32) (float32, error) {
	if err := m.checkBatch(tokens, B, T, targets); err != nil {
		return 0, err
	}
	pv, err := m.paramViews()
	if err != nil {
		return 0, err
	}
	if err := m.ensureActivations(B, T); err != nil {
		return 0, err
	}
	k := m.Kernels
	c := m.Config
	L, C, V, NH := c.NLayer, c.NEmbd, c.VocabSize, c.NHead
	N := B * T
	p := &pv
	a := m.acts
	a.forwardDone, a.backwardDone = false, false
	copy(a.tokens, tokens)

	k.EncoderForward(a.encoded, tokens, p[pWTE], p[pWPE], B, T, C)
	for l := 0; l < L; l++ {
		residual := a.encoded
		if l > 0 {
			residual = a.residual3[(l-1)*N*C : l*N*C]
		}
		lw := layerOf(p, l, C)
		la := a.layer(l, N, C, B*NH*T*T)
		k.LayerNormForward(la.ln1, la.ln1Mean, la.ln1Rstd, residual, lw.ln1w, lw.ln1b, N, C, c.LayerNormEpsilon)
		k.MatmulForward(la.qkv, la.ln1, lw.qkvw, lw.qkvb, N, C, 3*C)
		k.AttentionForward(la.atty, la.att, la.qkv, B, T, C, NH)
		k.MatmulForward(a.proj, la.atty, lw.attprojw, lw.attprojb, N, C, C)
		k.ResidualForward(la.residual2, residual, a.proj, N*C)
		k.LayerNormForward(la.ln2, la.ln2Mean, la.ln2Rstd, la.residual2, lw.ln2w, lw.ln2b, N, C, c.LayerNormEpsilon)
		k.MatmulForward(la.fch, la.ln2, lw.fcw, lw.fcb, N, C, 4*C)
		k.GELUForward(la.fchGelu, la.fch, N*4*C)
		k.MatmulForward(a.proj, la.fchGelu, lw.fcprojw, lw.fcprojb, N, 4*C, C)
		k.ResidualForward(la.residual3, la.residual2, a.proj, N*C)
	}
	last := a.residual3[(L-1)*N*C : L*N*C]
	k.LayerNormForward(a.lnf, a.lnfMean, a.lnfRstd, last, p[pLNFW], p[pLNFB], N, C, c.LayerNormEpsilon)
	k.MatmulTransposedForward(a.logits, a.lnf, p[pWTE], N, C, V)
	a.forwardDone, a.logitsValid = true, true
	a.hasTargets = targets != nil
	if targets == nil {
		return 0, nil
	}
	copy(a.targets, targets)
	k.SoftmaxCrossEntropyForward(a.losses, a.lse, a.logits, a.targets, N, V)
	var sum float64
	a.validTargets = 0
	for i, t := range a.targets {
		if t >= 0 {
			sum += float64(a.losses[i])
			a.validTargets++
		}
	}
	if a.validTargets == 0 {
		return 0, nil
	}
	return float32(sum / float64(a.validTargets)), nil
}

// Logits returns the [B*T*V] logits of the last Forward: nil before any,
// and nil after Backward, which reuses the buffer for their gradient. The
// slice is overwritten by the next Forward.
func (m *Model) Logits() []float32 {
	if m.acts == nil || !m.acts.forwardDone || !m.acts.logitsValid {
		return nil
	}
	return m.acts.logits
}

// ZeroGrad sets every gradient to zero, allocating Grads on first use.
func (m *Model) ZeroGrad() {
	if len(m.Grads) != len(m.Params) {
		m.Grads = make([]float32, len(m.Params))
		return
	}
	clear(m.Grads)
}

// Backward adds the gradient of the last Forward's loss to Grads (call
// ZeroGrad first unless accumulating over micro-batches). It needs a
// Forward with targets, and runs once per Forward.
func (m *Model) Backward() error {
	a := m.acts
	switch {
	case a == nil || !a.forwardDone:
		return errors.New("backward: no forward pass to differentiate")
	case !a.hasTargets:
		return errors.New("backward: the last forward pass had no targets")
	case a.backwardDone:
		return errors.New("backward: already run for this forward pass")
	}
	pv, err := m.paramViews()
	if err != nil {
		return err
	}
	if len(m.Grads) != len(m.Params) {
		m.ZeroGrad()
	}
	gv := m.Config.views(m.Grads)
	a.backwardDone = true
	if a.validTargets == 0 {
		return nil
	}
	m.ensureBackScratch()
	k := m.Kernels
	c := m.Config
	L, C, V, NH := c.NLayer, c.NEmbd, c.VocabSize, c.NHead
	B, T := a.B, a.T
	N := B * T
	p, g, s := &pv, &gv, m.back

	// Loss and language-model head. As in llm.c the logit gradients
	// overwrite the logits: the largest buffer of all is not doubled, and
	// the head's two products each run as one large SGEMM.
	scale := 1 / float32(a.validTargets)
	dlnf := s.dC
	dlogits := a.logits
	a.logitsValid = false
	k.SoftmaxCrossEntropyBackward(dlogits, a.logits, a.lse, a.targets, scale, N, V)
	k.MatmulTransposedBackward(dlnf, g[pWTE], dlogits, a.lnf, p[pWTE], N, C, V)
	clear(s.dres)
	last := a.residual3[(L-1)*N*C : L*N*C]
	k.LayerNormBackward(s.dres, g[pLNFW], g[pLNFB], dlnf, last, p[pLNFW], a.lnfMean, a.lnfRstd, N, C)

	for l := L - 1; l >= 0; l-- {
		residual := a.encoded
		if l > 0 {
			residual = a.residual3[(l-1)*N*C : l*N*C]
		}
		lw, lg := layerOf(p, l, C), layerOf(g, l, C)
		la := a.layer(l, N, C, B*NH*T*T)
		// s.dres is the gradient of residual3, which flows unchanged to
		// residual2 (and later to residual) through the skip connections.
		k.MatmulBackward(s.d4C, lg.fcprojw, lg.fcprojb, s.dres, la.fchGelu, lw.fcprojw, N, 4*C, C)
		k.GELUBackward(s.d4C, la.fch, s.d4C, N*4*C)
		k.MatmulBackward(s.dC, lg.fcw, lg.fcb, s.d4C, la.ln2, lw.fcw, N, C, 4*C)
		k.LayerNormBackward(s.dres, lg.ln2w, lg.ln2b, s.dC, la.residual2, lw.ln2w, la.ln2Mean, la.ln2Rstd, N, C)
		k.MatmulBackward(s.dC, lg.attprojw, lg.attprojb, s.dres, la.atty, lw.attprojw, N, C, C)
		k.AttentionBackward(s.dqkv, s.datt, s.dC, la.qkv, la.att, B, T, C, NH)
		k.MatmulBackward(s.dC, lg.qkvw, lg.qkvb, s.dqkv, la.ln1, lw.qkvw, N, C, 3*C)
		k.LayerNormBackward(s.dres, lg.ln1w, lg.ln1b, s.dC, residual, lw.ln1w, la.ln1Mean, la.ln1Rstd, N, C)
	}
	k.EncoderBackward(g[pWTE], g[pWPE], s.dres, a.tokens, B, T, C)
	return nil
}

// layerWeights are one block's slices of a paramViews.
type layerWeights struct {
	ln1w, ln1b, qkvw, qkvb, attprojw, attprojb, ln2w, ln2b, fcw, fcb, fcprojw, fcprojb []float32
}

func layerOf(v *paramViews, l, C int) layerWeights {
	at := func(kind, per int) []float32 { return v[kind][l*per : (l+1)*per] }
	return layerWeights{
		ln1w: at(pLN1W, C), ln1b: at(pLN1B, C),
		qkvw: at(pQKVW, C*3*C), qkvb: at(pQKVB, 3*C),
		attprojw: at(pAttProjW, C*C), attprojb: at(pAttProjB, C),
		ln2w: at(pLN2W, C), ln2b: at(pLN2B, C),
		fcw: at(pFCW, C*4*C), fcb: at(pFCB, 4*C),
		fcprojw: at(pFCProjW, 4*C*C), fcprojb: at(pFCProjB, C),
	}
}

// paramViews slices Params by kind. It is recomputed on every call (it is
// cheap) so that a caller may swap the Params slice, e.g. after loading a
// checkpoint.
func (m *Model) paramViews() (paramViews, error) {
	if n := m.Config.NumParams(); len(m.Params) != n {
		return paramViews{}, fmt.Errorf("model: len(Params)=%d, config needs %d", len(m.Params), n)
	}
	return m.Config.views(m.Params), nil
}

// layerActs are one block's slices of the activations.
type layerActs struct {
	ln1, ln1Mean, ln1Rstd, qkv, atty, att, residual2, ln2, ln2Mean, ln2Rstd, fch, fchGelu, residual3 []float32
}

func (a *activations) layer(l, N, C, attSize int) layerActs {
	at := func(s []float32, per int) []float32 { return s[l*per : (l+1)*per] }
	return layerActs{
		ln1: at(a.ln1, N*C), ln1Mean: at(a.ln1Mean, N), ln1Rstd: at(a.ln1Rstd, N),
		qkv: at(a.qkv, N*3*C), atty: at(a.atty, N*C), att: at(a.att, attSize),
		residual2: at(a.residual2, N*C),
		ln2:       at(a.ln2, N*C), ln2Mean: at(a.ln2Mean, N), ln2Rstd: at(a.ln2Rstd, N),
		fch: at(a.fch, N*4*C), fchGelu: at(a.fchGelu, N*4*C), residual3: at(a.residual3, N*C),
	}
}
