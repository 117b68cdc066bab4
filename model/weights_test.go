package model

import (
	"bytes"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSaveLoadIsBitIdentical(t *testing.T) {
	m := newTiny(t, 31)
	m.Params[5] = float32(math.Copysign(0, -1)) // sign of zero must survive
	dir := filepath.Join(t.TempDir(), "nested", "model")
	if err := m.SaveDir(dir); err != nil {
		t.Fatal(err)
	}
	got, err := LoadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got.Config != m.Config {
		t.Fatalf("config %+v, want %+v", got.Config, m.Config)
	}
	for i := range m.Params {
		if math.Float32bits(got.Params[i]) != math.Float32bits(m.Params[i]) {
			t.Fatalf("param %d: %g, want %g", i, got.Params[i], m.Params[i])
		}
	}
	// Saving again over the existing directory replaces the files in place
	// and leaves no temporary files behind.
	m.Params[0] = 7
	if err := m.SaveDir(dir); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 2 {
		t.Fatalf("directory holds %d entries, want config.json and model.safetensors", len(entries))
	}
	again, err := LoadDir(dir)
	if err != nil || again.Params[0] != 7 {
		t.Fatalf("reloaded: %v, param %g", err, again.Params[0])
	}
	parent, _ := os.ReadDir(filepath.Dir(dir))
	if len(parent) != 1 {
		t.Fatalf("temporary directories left behind: %d entries", len(parent))
	}

	// The saved config is what Hugging Face expects.
	raw, _ := os.ReadFile(filepath.Join(dir, ConfigFile))
	var js map[string]any
	if err := json.Unmarshal(raw, &js); err != nil {
		t.Fatal(err)
	}
	if js["model_type"] != "gpt2" || js["architectures"].([]any)[0] != "GPT2LMHeadModel" || js["n_ctx"].(float64) != 32 {
		t.Fatalf("config.json: %s", raw)
	}
	st, err := OpenSafetensors(filepath.Join(dir, SafetensorsFile))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if info, ok := st.Tensor("transformer.h.1.attn.c_attn.weight"); !ok || !equalShape(info.Shape, []int{16, 48}) {
		t.Fatalf("c_attn stored as %+v", info)
	}
	if st.Metadata["format"] != "pt" {
		t.Fatalf("metadata %v", st.Metadata)
	}
}

// writeHFDir writes a directory the way other tools might: names with or
// without the prefix, the mask buffers, an lm_head copy, chosen dtype.
func writeHFDir(t *testing.T, m *Model, prefix string, extra map[string][]float32, drop string) string {
	t.Helper()
	dir := t.TempDir()
	cfg, _ := MarshalConfig(m.Config)
	if err := os.WriteFile(filepath.Join(dir, ConfigFile), cfg, 0o644); err != nil {
		t.Fatal(err)
	}
	var ts []SafetensorsTensor
	for _, p := range m.Config.ParamTensors() {
		if p.Name == drop {
			continue
		}
		ts = append(ts, SafetensorsTensor{Name: prefix + p.Name, Shape: p.Shape, Data: m.Params[p.Offset : p.Offset+p.Size]})
	}
	for name, data := range extra {
		ts = append(ts, SafetensorsTensor{Name: name, Shape: []int{len(data)}, Data: data})
	}
	var buf bytes.Buffer
	if err := WriteSafetensors(&buf, ts, nil); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, SafetensorsFile), buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestLoadDirNamingVariants(t *testing.T) {
	m := newTiny(t, 32)
	V, C := m.Config.VocabSize, m.Config.NEmbd
	buffers := map[string][]float32{
		"h.0.attn.bias":        make([]float32, 16),
		"h.1.attn.masked_bias": {-1e4},
		"lm_head.weight":       make([]float32, V*C),
	}
	for _, prefix := range []string{"", "transformer."} {
		got, err := LoadDir(writeHFDir(t, m, prefix, buffers, ""))
		if err != nil {
			t.Fatalf("prefix %q: %v", prefix, err)
		}
		for i := range m.Params {
			if got.Params[i] != m.Params[i] {
				t.Fatalf("prefix %q: param %d differs", prefix, i)
			}
		}
	}
	if _, err := LoadDir(writeHFDir(t, m, "", nil, "h.1.mlp.c_fc.bias")); err == nil || !strings.Contains(err.Error(), `missing tensor "h.1.mlp.c_fc.bias"`) {
		t.Fatalf("missing tensor: %v", err)
	}
	if _, err := LoadDir(writeHFDir(t, m, "", map[string][]float32{"h.0.surprise": {1}}, "")); err == nil || !strings.Contains(err.Error(), "unexpected tensor") {
		t.Fatalf("unexpected tensor: %v", err)
	}
	both := writeHFDir(t, m, "", nil, "")
	var buf bytes.Buffer
	var ts []SafetensorsTensor
	for _, p := range m.Config.ParamTensors() {
		ts = append(ts, SafetensorsTensor{Name: p.Name, Shape: p.Shape, Data: m.Params[p.Offset : p.Offset+p.Size]})
	}
	ts = append(ts, SafetensorsTensor{Name: "transformer.ln_f.bias", Shape: []int{C}, Data: make([]float32, C)})
	WriteSafetensors(&buf, ts, nil)
	os.WriteFile(filepath.Join(both, SafetensorsFile), buf.Bytes(), 0o644)
	if _, err := LoadDir(both); err == nil || !strings.Contains(err.Error(), "twice") {
		t.Fatalf("duplicate tensor: %v", err)
	}
}

func TestLoadDirRejectsShapeMismatch(t *testing.T) {
	m := newTiny(t, 33)
	dir := writeHFDir(t, m, "", nil, "")
	// Same weights, config claiming a larger vocabulary.
	cfg := m.Config
	cfg.VocabSize = 51
	js, _ := MarshalConfig(cfg)
	os.WriteFile(filepath.Join(dir, ConfigFile), js, 0o644)
	if _, err := LoadDir(dir); err == nil || !strings.Contains(err.Error(), "wte.weight") {
		t.Fatalf("shape mismatch: %v", err)
	}
	if _, err := LoadDir(t.TempDir()); err == nil {
		t.Fatal("empty directory loaded")
	}
}

func TestParamTensorsCoverTheBufferOnce(t *testing.T) {
	cfg := coreTinyConfig()
	seen := make([]int, cfg.NumParams())
	for _, p := range cfg.ParamTensors() {
		for i := p.Offset; i < p.Offset+p.Size; i++ {
			seen[i]++
		}
	}
	for i, n := range seen {
		if n != 1 {
			t.Fatalf("element %d covered %d times", i, n)
		}
	}
	for i, sh := range cfg.paramShapes() {
		if sh.size() != cfg.paramSizes()[i] {
			t.Fatalf("kind %d: shape %v, size %d", i, sh.dims, cfg.paramSizes()[i])
		}
	}
	// GPT-2 small has the well-known 124,439,808 parameters.
	if n := GPT2Small().NumParams(); n != 124439808 {
		t.Fatalf("GPT-2 small: %d parameters", n)
	}
}

// SaveRoot and LoadRoot keep a model's files inside the root they are given:
// a model directory or weights file linked from outside is refused.
func TestSaveLoadRootStayInside(t *testing.T) {
	m := newTiny(t, 7)
	base := t.TempDir()
	dir, outside := filepath.Join(base, "data"), filepath.Join(base, "outside")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := m.SaveDir(filepath.Join(outside, "model")); err != nil {
		t.Fatal(err)
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	if err := m.SaveRoot(root, "runs/a/model"); err != nil {
		t.Fatal(err)
	}
	got, err := LoadRoot(root, "runs/a/model")
	if err != nil || got.Params[3] != m.Params[3] {
		t.Fatalf("LoadRoot after SaveRoot: %v", err)
	}
	if err := os.Symlink(filepath.Join(outside, "model"), filepath.Join(dir, "linked")); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "half"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(outside, "model", ConfigFile), filepath.Join(dir, "half", ConfigFile)); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"linked", "half", "../outside/model"} {
		if _, err := LoadRoot(root, name); err == nil || !strings.Contains(err.Error(), "escapes") {
			t.Errorf("LoadRoot(%q) = %v; want the escape refused", name, err)
		}
	}
	if err := m.SaveRoot(root, "linked/sub"); err == nil {
		t.Error("SaveRoot through a link pointing out succeeded")
	}
	if _, err := os.Stat(filepath.Join(outside, "model", "sub")); !os.IsNotExist(err) {
		t.Errorf("SaveRoot wrote outside the root: %v", err)
	}
}
