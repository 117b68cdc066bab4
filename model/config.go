package model

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"

	"github.com/tandem-ai/tandem/limits"
)

// Limits on a Config. They exist so that a hostile or mistyped config.json
// is refused with a clear error instead of turning into an enormous
// allocation; GPT-2 XL (1.56B parameters) fits comfortably inside them.
const (
	MaxLayers    = limits.ModelLayers
	MaxHeads     = limits.ModelHeads
	MaxEmbd      = limits.ModelEmbd
	MaxPositions = limits.ModelPositions
	MaxVocab     = limits.ModelVocab
	// MaxParams caps NumParams, so Params (and Grads, and the two AdamW
	// moments) stay addressable and below a few tens of GiB.
	MaxParams = limits.ModelParams
)

// DefaultLayerNormEpsilon is GPT-2's epsilon, used when config.json omits it.
const DefaultLayerNormEpsilon = 1e-5

// Config is the architecture of a GPT-2 style model. Its JSON form is the
// Hugging Face GPT-2 config.json.
type Config struct {
	NLayer           int     `json:"n_layer"`
	NHead            int     `json:"n_head"`
	NEmbd            int     `json:"n_embd"`
	NPositions       int     `json:"n_positions"`
	VocabSize        int     `json:"vocab_size"`
	LayerNormEpsilon float32 `json:"layer_norm_epsilon"`
}

// GPT2Small is the 124M-parameter configuration of OpenAI's smallest GPT-2.
func GPT2Small() Config {
	return Config{NLayer: 12, NHead: 12, NEmbd: 768, NPositions: 1024, VocabSize: 50257, LayerNormEpsilon: 1e-5}
}

// Validate checks sizes and divisibility. Every failure names the field.
func (c Config) Validate() error {
	check := func(name string, v, max int) error {
		if v <= 0 || v > max {
			return fmt.Errorf("config: %s = %d, want 1..%d", name, v, max)
		}
		return nil
	}
	if err := errors.Join(
		check("n_layer", c.NLayer, MaxLayers),
		check("n_head", c.NHead, MaxHeads),
		check("n_embd", c.NEmbd, MaxEmbd),
		check("n_positions", c.NPositions, MaxPositions),
		check("vocab_size", c.VocabSize, MaxVocab),
	); err != nil {
		return err
	}
	if c.NEmbd%c.NHead != 0 {
		return fmt.Errorf("config: n_embd = %d is not divisible by n_head = %d", c.NEmbd, c.NHead)
	}
	eps := float64(c.LayerNormEpsilon)
	if !(eps > 0) || math.IsInf(eps, 0) || eps > 1 {
		return fmt.Errorf("config: layer_norm_epsilon = %g, want a finite value in (0, 1]", eps)
	}
	if n := c.numParams64(); n > MaxParams {
		return fmt.Errorf("config: %d parameters exceeds the limit of %d", n, int64(MaxParams))
	}
	return nil
}

// HeadSize is n_embd / n_head.
func (c Config) HeadSize() int { return c.NEmbd / c.NHead }

// NumParams is the number of float32 values in Params (the tied lm_head
// is not counted twice). It is meaningful only for a valid Config.
func (c Config) NumParams() int { return int(c.numParams64()) }

func (c Config) numParams64() int64 {
	var n int64
	for _, s := range c.paramSizes() {
		n += s
	}
	return n
}

// configJSON is the on-disk form: the fields we use plus the ones Hugging
// Face tools expect, and n_ctx / n_inner / activation_function, which we
// check so that an incompatible model is refused rather than misread.
type configJSON struct {
	ModelType          string   `json:"model_type,omitempty"`
	Architectures      []string `json:"architectures,omitempty"`
	NLayer             int      `json:"n_layer"`
	NHead              int      `json:"n_head"`
	NEmbd              int      `json:"n_embd"`
	NPositions         int      `json:"n_positions,omitempty"`
	NCtx               int      `json:"n_ctx,omitempty"`
	NInner             *int     `json:"n_inner"`
	VocabSize          int      `json:"vocab_size"`
	LayerNormEpsilon   *float64 `json:"layer_norm_epsilon,omitempty"`
	ActivationFunction string   `json:"activation_function,omitempty"`
	BOSTokenID         *int     `json:"bos_token_id,omitempty"`
	EOSTokenID         *int     `json:"eos_token_id,omitempty"`
}

// maxConfigBytes bounds config.json; real ones are about 1 KB.
const maxConfigBytes = limits.ModelConfigBytes

// ParseConfig decodes and validates a Hugging Face GPT-2 config.json.
func ParseConfig(data []byte) (Config, error) {
	if len(data) > maxConfigBytes {
		return Config{}, fmt.Errorf("config: %d bytes exceeds the limit of %d", len(data), maxConfigBytes)
	}
	var j configJSON
	if err := json.Unmarshal(data, &j); err != nil {
		return Config{}, fmt.Errorf("config: %w", err)
	}
	if j.ModelType != "" && j.ModelType != "gpt2" {
		return Config{}, fmt.Errorf("config: model_type = %q, want \"gpt2\"", j.ModelType)
	}
	switch j.ActivationFunction {
	case "", "gelu_new", "gelu_pytorch_tanh":
	default:
		return Config{}, fmt.Errorf("config: activation_function = %q, only the tanh GELU (gelu_new) is implemented", j.ActivationFunction)
	}
	if j.NInner != nil && *j.NInner != 4*j.NEmbd {
		return Config{}, fmt.Errorf("config: n_inner = %d, only 4*n_embd = %d is implemented", *j.NInner, 4*j.NEmbd)
	}
	c := Config{NLayer: j.NLayer, NHead: j.NHead, NEmbd: j.NEmbd, NPositions: j.NPositions, VocabSize: j.VocabSize,
		LayerNormEpsilon: DefaultLayerNormEpsilon}
	if c.NPositions == 0 {
		c.NPositions = j.NCtx
	}
	if j.LayerNormEpsilon != nil {
		c.LayerNormEpsilon = float32(*j.LayerNormEpsilon)
	}
	if err := c.Validate(); err != nil {
		return Config{}, err
	}
	return c, nil
}

// MarshalConfig renders c as a Hugging Face compatible config.json.
func MarshalConfig(c Config) ([]byte, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	eps := float64(c.LayerNormEpsilon)
	j := configJSON{
		ModelType: "gpt2", Architectures: []string{"GPT2LMHeadModel"},
		NLayer: c.NLayer, NHead: c.NHead, NEmbd: c.NEmbd, NPositions: c.NPositions, NCtx: c.NPositions,
		VocabSize: c.VocabSize, LayerNormEpsilon: &eps, ActivationFunction: "gelu_new",
	}
	if c.VocabSize > EOTToken {
		eot := EOTToken
		j.BOSTokenID, j.EOSTokenID = &eot, &eot
	}
	return json.MarshalIndent(j, "", "  ")
}

// LoadConfig reads dir/config.json.
func LoadConfig(dir string) (Config, error) { return loadConfig(os.Open, dir) }

// LoadConfigRoot reads dir/config.json inside root.
func LoadConfigRoot(root *os.Root, dir string) (Config, error) { return loadConfig(root.Open, dir) }

// opener opens a file for reading: os.Open, or an os.Root's Open for
// models read from inside a confined directory.
type opener func(name string) (*os.File, error)

func loadConfig(open opener, dir string) (Config, error) {
	path := filepath.Join(dir, ConfigFile)
	f, err := open(path)
	if err != nil {
		return Config{}, fmt.Errorf("config: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return Config{}, fmt.Errorf("config: %w", err)
	}
	if st.Size() > maxConfigBytes {
		return Config{}, fmt.Errorf("config: %s is %d bytes, limit %d", path, st.Size(), maxConfigBytes)
	}
	data := make([]byte, st.Size())
	if _, err := io.ReadFull(f, data); err != nil {
		return Config{}, fmt.Errorf("config: reading %s: %w", path, err)
	}
	c, err := ParseConfig(data)
	if err != nil {
		return Config{}, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}
