package model

import "testing"

// FuzzParseConfig: config.json comes with a downloaded or uploaded model.
// ParseConfig must not panic, and what it accepts must validate and have a
// parameter count within the stated cap, so loading never sizes a buffer
// from an unchecked number.
func FuzzParseConfig(f *testing.F) {
	f.Add([]byte(`{"n_layer":12,"n_head":12,"n_embd":768,"n_positions":1024,"vocab_size":50257,"layer_norm_epsilon":1e-5}`))
	f.Add([]byte(`{"n_layer":2,"n_head":3,"n_embd":64,"n_ctx":128,"vocab_size":100}`))
	f.Add([]byte(`{"n_layer":1e18,"n_head":1,"n_embd":1,"n_positions":1,"vocab_size":1}`))
	f.Add([]byte(`{"n_layer":-1}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := ParseConfig(data)
		if err != nil {
			return
		}
		if err := cfg.Validate(); err != nil {
			t.Fatalf("ParseConfig accepted a config that does not validate: %v", err)
		}
		if n := cfg.NumParams(); n <= 0 || n > 4e9 {
			t.Fatalf("accepted config with %d parameters", n)
		}
	})
}
