package model

import (
	crand "crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"

	"github.com/tandem-ai/tandem/atomicfile"
)

// Parameter layout. All parameters live in one contiguous []float32, as in
// llm.c, grouped by kind with the layers stacked inside each group:
//
//	wte [V,C]  wpe [P,C]  ln1w [L,C]  ln1b [L,C]  qkvw [L,C,3C]  qkvb [L,3C]
//	attprojw [L,C,C]  attprojb [L,C]  ln2w [L,C]  ln2b [L,C]  fcw [L,C,4C]
//	fcb [L,4C]  fcprojw [L,4C,C]  fcprojb [L,C]  lnfw [C]  lnfb [C]
//
// Linear weights keep Hugging Face's Conv1D orientation (in, out), so
// loading and saving are plain copies and a forward product needs no
// transpose. One buffer makes the optimizer a single loop, gradient
// clipping a single norm, and a GPU upload a single copy.
const (
	pWTE = iota
	pWPE
	pLN1W
	pLN1B
	pQKVW
	pQKVB
	pAttProjW
	pAttProjB
	pLN2W
	pLN2B
	pFCW
	pFCB
	pFCProjW
	pFCProjB
	pLNFW
	pLNFB
	numParamKinds
)

type paramShape struct {
	dims []int
}

func (s paramShape) size() int64 {
	n := int64(1)
	for _, d := range s.dims {
		n *= int64(d)
	}
	return n
}

// paramShapes lists the shape of each kind, in buffer order.
func (c Config) paramShapes() [numParamKinds]paramShape {
	V, P, L, C := c.VocabSize, c.NPositions, c.NLayer, c.NEmbd
	return [numParamKinds]paramShape{
		pWTE: {[]int{V, C}}, pWPE: {[]int{P, C}},
		pLN1W: {[]int{L, C}}, pLN1B: {[]int{L, C}},
		pQKVW: {[]int{L, C, 3 * C}}, pQKVB: {[]int{L, 3 * C}},
		pAttProjW: {[]int{L, C, C}}, pAttProjB: {[]int{L, C}},
		pLN2W: {[]int{L, C}}, pLN2B: {[]int{L, C}},
		pFCW: {[]int{L, C, 4 * C}}, pFCB: {[]int{L, 4 * C}},
		pFCProjW: {[]int{L, 4 * C, C}}, pFCProjB: {[]int{L, C}},
		pLNFW: {[]int{C}}, pLNFB: {[]int{C}},
	}
}

// paramSizes is the element count of each kind. Unlike paramShapes it
// allocates nothing, which matters on every decode step.
func (c Config) paramSizes() [numParamKinds]int64 {
	V, P, L, C := int64(c.VocabSize), int64(c.NPositions), int64(c.NLayer), int64(c.NEmbd)
	return [numParamKinds]int64{
		pWTE: V * C, pWPE: P * C,
		pLN1W: L * C, pLN1B: L * C,
		pQKVW: L * C * 3 * C, pQKVB: L * 3 * C,
		pAttProjW: L * C * C, pAttProjB: L * C,
		pLN2W: L * C, pLN2B: L * C,
		pFCW: L * C * 4 * C, pFCB: L * 4 * C,
		pFCProjW: L * 4 * C * C, pFCProjB: L * C,
		pLNFW: C, pLNFB: C,
	}
}

// paramViews are the per-kind slices of one contiguous buffer.
type paramViews [numParamKinds][]float32

func (c Config) views(buf []float32) paramViews {
	var v paramViews
	off := 0
	for i, n64 := range c.paramSizes() {
		n := int(n64)
		v[i] = buf[off : off+n : off+n]
		off += n
	}
	return v
}

// ParamTensor is one Hugging Face tensor inside the contiguous buffer.
type ParamTensor struct {
	Name   string // Hugging Face name without the "transformer." prefix
	Shape  []int  // as stored in the safetensors file
	Offset int    // first element in Params / Grads
	Size   int    // element count
	// Decay is true for matrices (the linear and embedding weights), the
	// tensors AdamW's weight decay applies to; biases and LayerNorm gains
	// are not decayed, as in GPT-2 practice.
	Decay bool
}

// hfLayerTensors maps per-layer kinds to their Hugging Face name suffix.
var hfLayerTensors = []struct {
	kind   int
	suffix string
}{
	{pLN1W, "ln_1.weight"}, {pLN1B, "ln_1.bias"},
	{pQKVW, "attn.c_attn.weight"}, {pQKVB, "attn.c_attn.bias"},
	{pAttProjW, "attn.c_proj.weight"}, {pAttProjB, "attn.c_proj.bias"},
	{pLN2W, "ln_2.weight"}, {pLN2B, "ln_2.bias"},
	{pFCW, "mlp.c_fc.weight"}, {pFCB, "mlp.c_fc.bias"},
	{pFCProjW, "mlp.c_proj.weight"}, {pFCProjB, "mlp.c_proj.bias"},
}

// ParamTensors lists every Hugging Face tensor with its place in the
// buffer, in buffer order.
func (c Config) ParamTensors() []ParamTensor {
	shapes := c.paramShapes()
	var kindOff [numParamKinds]int
	off := 0
	for i, s := range shapes {
		kindOff[i] = off
		off += int(s.size())
	}
	var out []ParamTensor
	add := func(name string, kind, offset int, dims []int) {
		n := 1
		for _, d := range dims {
			n *= d
		}
		out = append(out, ParamTensor{Name: name, Shape: dims, Offset: offset, Size: n, Decay: decayKind(kind)})
	}
	add("wte.weight", pWTE, kindOff[pWTE], shapes[pWTE].dims)
	add("wpe.weight", pWPE, kindOff[pWPE], shapes[pWPE].dims)
	for _, lt := range hfLayerTensors {
		per := shapes[lt.kind].dims[1:]
		n := 1
		for _, d := range per {
			n *= d
		}
		for l := 0; l < c.NLayer; l++ {
			add(fmt.Sprintf("h.%d.%s", l, lt.suffix), lt.kind, kindOff[lt.kind]+l*n, per)
		}
	}
	add("ln_f.weight", pLNFW, kindOff[pLNFW], shapes[pLNFW].dims)
	add("ln_f.bias", pLNFB, kindOff[pLNFB], shapes[pLNFB].dims)
	return out
}

// New builds a model with GPT-2's initialisation: weights from N(0, 0.02),
// the two residual projections of each block scaled by 1/sqrt(2*n_layer)
// so the residual stream's variance does not grow with depth, LayerNorm
// gains 1 and all biases 0. The same seed gives the same parameters.
func New(cfg Config, seed int64) (*Model, error) {
	m, err := newModel(cfg)
	if err != nil {
		return nil, err
	}
	rng := rand.New(rand.NewPCG(uint64(seed), 0x7a6e64656d)) // second word: fixed stream id
	v := cfg.views(m.Params)
	normal := func(dst []float32, std float64) {
		for i := range dst {
			dst[i] = float32(rng.NormFloat64() * std)
		}
	}
	resid := 0.02 / math.Sqrt(2*float64(cfg.NLayer))
	normal(v[pWTE], 0.02)
	normal(v[pWPE], 0.02)
	normal(v[pQKVW], 0.02)
	normal(v[pAttProjW], resid)
	normal(v[pFCW], 0.02)
	normal(v[pFCProjW], resid)
	for _, k := range []int{pLN1W, pLN2W, pLNFW} {
		for i := range v[k] {
			v[k][i] = 1
		}
	}
	return m, nil
}

// Weight files in a model directory.
const (
	ConfigFile      = "config.json"
	SafetensorsFile = "model.safetensors"
)

// LoadDir reads a Hugging Face GPT-2 directory: config.json and
// model.safetensors (F32, F16 or BF16). Tensor names may carry a
// "transformer." prefix; the causal-mask buffers attn.bias and
// attn.masked_bias are skipped, and lm_head.weight is ignored because the
// head is tied to wte. Every other tensor must be present exactly once with
// the shape the config implies; anything unexpected is an error.
func LoadDir(dir string) (*Model, error) { return loadDir(os.Open, dir) }

// LoadRoot is LoadDir for the directory dir inside root ("." for root
// itself): both files are opened through root, so a model named by a job
// is read from inside its data root only (see package dataroot).
func LoadRoot(root *os.Root, dir string) (*Model, error) { return loadDir(root.Open, dir) }

// LoadFrom is LoadDir with the files opened by open, for callers that
// check what they open (dataroot.OpenRegular refuses a FIFO before opening
// it, where os.Root.Open would wait for a writer).
func LoadFrom(open func(name string) (*os.File, error), dir string) (*Model, error) {
	return loadDir(open, dir)
}

func loadDir(open opener, dir string) (*Model, error) {
	cfg, err := loadConfig(open, dir)
	if err != nil {
		return nil, err
	}
	m, err := newModel(cfg)
	if err != nil {
		return nil, err
	}
	path := filepath.Join(dir, SafetensorsFile)
	st, err := openSafetensors(open, path)
	if err != nil {
		return nil, err
	}
	defer st.Close()
	if err := m.loadTensors(st); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return m, nil
}

func (m *Model) loadTensors(st *Safetensors) error {
	want := make(map[string]ParamTensor)
	for _, p := range m.Config.ParamTensors() {
		want[p.Name] = p
	}
	found := make(map[string]string, len(want))
	for _, name := range st.Names() {
		short := strings.TrimPrefix(name, "transformer.")
		if short == "lm_head.weight" || strings.HasSuffix(short, ".attn.bias") || strings.HasSuffix(short, ".attn.masked_bias") {
			continue
		}
		p, ok := want[short]
		if !ok {
			return fmt.Errorf("unexpected tensor %q", name)
		}
		if prev, dup := found[short]; dup {
			return fmt.Errorf("tensor %q appears twice (as %q and %q)", short, prev, name)
		}
		found[short] = name
		info, _ := st.Tensor(name)
		if !equalShape(info.Shape, p.Shape) {
			return fmt.Errorf("tensor %q has shape %v, config implies %v", name, info.Shape, p.Shape)
		}
		if err := st.ReadFloat32(name, m.Params[p.Offset:p.Offset+p.Size]); err != nil {
			return err
		}
	}
	for _, p := range m.Config.ParamTensors() {
		if _, ok := found[p.Name]; !ok {
			return fmt.Errorf("missing tensor %q", p.Name)
		}
	}
	return nil
}

func equalShape(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// SaveDir writes config.json and model.safetensors (F32, names with the
// "transformer." prefix, as transformers' GPT2LMHeadModel saves them; the
// tied lm_head is omitted). A new directory is written under a temporary
// name and renamed into place, so it appears complete or not at all; in an
// existing directory each file is replaced by its own atomic rename,
// weights first.
func (m *Model) SaveDir(dir string) error {
	name := "."
	if _, err := os.Stat(dir); os.IsNotExist(err) {
		parent := filepath.Dir(filepath.Clean(dir))
		if err := os.MkdirAll(parent, 0o755); err != nil {
			return fmt.Errorf("save model: %w", err)
		}
		dir, name = parent, filepath.Base(filepath.Clean(dir))
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return fmt.Errorf("save model: %w", err)
	}
	defer root.Close()
	return m.SaveRoot(root, name)
}

// SaveRoot is SaveDir for the directory dir inside root: every file, the
// temporary directory and the rename stay inside root.
func (m *Model) SaveRoot(root *os.Root, dir string) error {
	cfgJSON, err := MarshalConfig(m.Config)
	if err != nil {
		return err
	}
	dir = filepath.Clean(dir)
	if _, err := root.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		parent := filepath.Dir(dir)
		if err := root.MkdirAll(parent, 0o755); err != nil {
			return fmt.Errorf("save model: %w", err)
		}
		var rnd [8]byte
		_, _ = crand.Read(rnd[:])
		tmp := filepath.Join(parent, "."+filepath.Base(dir)+".tmp-"+hex.EncodeToString(rnd[:]))
		if err := root.Mkdir(tmp, 0o755); err != nil {
			return fmt.Errorf("save model: %w", err)
		}
		err := m.writeFiles(root, tmp, cfgJSON)
		if err == nil {
			err = root.Chmod(tmp, 0o755)
		}
		if err == nil {
			err = root.Rename(tmp, dir)
		}
		if err != nil {
			_ = root.RemoveAll(tmp)
			return fmt.Errorf("save model: %w", err)
		}
		return atomicfile.SyncDirIn(root, parent)
	}
	return m.writeFiles(root, dir, cfgJSON)
}

func (m *Model) writeFiles(root *os.Root, dir string, cfgJSON []byte) error {
	tensors := make([]SafetensorsTensor, 0, 4+12*m.Config.NLayer)
	for _, p := range m.Config.ParamTensors() {
		tensors = append(tensors, SafetensorsTensor{Name: "transformer." + p.Name, Shape: p.Shape, Data: m.Params[p.Offset : p.Offset+p.Size]})
	}
	meta := map[string]string{"format": "pt"}
	if err := atomicfile.WriteIn(root, filepath.Join(dir, SafetensorsFile), func(w io.Writer) error {
		return WriteSafetensors(w, tensors, meta)
	}); err != nil {
		return fmt.Errorf("save model: %w", err)
	}
	if err := atomicfile.WriteBytesIn(root, filepath.Join(dir, ConfigFile), append(cfgJSON, '\n')); err != nil {
		return fmt.Errorf("save model: %w", err)
	}
	return nil
}
