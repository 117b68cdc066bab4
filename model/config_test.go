package model

import (
	"strings"
	"testing"
)

func TestConfigValidate(t *testing.T) {
	if err := GPT2Small().Validate(); err != nil {
		t.Fatal(err)
	}
	bad := []struct {
		mod  func(*Config)
		want string
	}{
		{func(c *Config) { c.NLayer = 0 }, "n_layer"},
		{func(c *Config) { c.NHead = -1 }, "n_head"},
		{func(c *Config) { c.NEmbd = 1 << 20 }, "n_embd"},
		{func(c *Config) { c.NPositions = 0 }, "n_positions"},
		{func(c *Config) { c.VocabSize = MaxVocab + 1 }, "vocab_size"},
		{func(c *Config) { c.NHead = 7 }, "divisible"},
		{func(c *Config) { c.LayerNormEpsilon = 0 }, "layer_norm_epsilon"},
		{func(c *Config) { c.NLayer, c.NEmbd, c.NHead = 256, 16384, 128 }, "parameters exceeds"},
	}
	for _, b := range bad {
		c := GPT2Small()
		b.mod(&c)
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), b.want) {
			t.Errorf("want error about %s, got %v", b.want, err)
		}
	}
}

func TestParseConfig(t *testing.T) {
	// The essential fields of openai-community/gpt2's config.json.
	hf := `{"activation_function": "gelu_new", "architectures": ["GPT2LMHeadModel"], "bos_token_id": 50256,
	  "eos_token_id": 50256, "layer_norm_epsilon": 1e-05, "model_type": "gpt2", "n_ctx": 1024, "n_embd": 768,
	  "n_head": 12, "n_inner": null, "n_layer": 12, "n_positions": 1024, "vocab_size": 50257}`
	c, err := ParseConfig([]byte(hf))
	if err != nil {
		t.Fatal(err)
	}
	if c != GPT2Small() {
		t.Fatalf("%+v", c)
	}
	// n_ctx is the fallback for n_positions; epsilon defaults.
	c, err = ParseConfig([]byte(`{"n_layer":1,"n_head":1,"n_embd":4,"n_ctx":16,"vocab_size":10}`))
	if err != nil || c.NPositions != 16 || c.LayerNormEpsilon != DefaultLayerNormEpsilon {
		t.Fatalf("%+v %v", c, err)
	}
	for _, bad := range []struct{ js, want string }{
		{`{"n_layer":1`, "unexpected end"},
		{`{"model_type":"llama","n_layer":1,"n_head":1,"n_embd":4,"n_ctx":16,"vocab_size":10}`, "model_type"},
		{`{"activation_function":"relu","n_layer":1,"n_head":1,"n_embd":4,"n_ctx":16,"vocab_size":10}`, "activation_function"},
		{`{"n_inner":8,"n_layer":1,"n_head":1,"n_embd":4,"n_ctx":16,"vocab_size":10}`, "n_inner"},
		{`{"n_layer":1,"n_head":1,"n_embd":4,"vocab_size":10}`, "n_positions"},
		{`{"n_layer":"1"}`, "n_layer"},
	} {
		if _, err := ParseConfig([]byte(bad.js)); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("%s: err %v, want mention of %s", bad.js, err, bad.want)
		}
	}
	out, err := MarshalConfig(GPT2Small())
	if err != nil {
		t.Fatal(err)
	}
	back, err := ParseConfig(out)
	if err != nil || back != GPT2Small() {
		t.Fatalf("round trip: %+v %v", back, err)
	}
}
