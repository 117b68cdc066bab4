package pipeline

import (
	"strings"
	"testing"
)

// fuzzArgs is a job kind with the shapes real args have: strings, numbers,
// a list and a nested object, and a Validate that bounds them.
type fuzzArgs struct {
	Model  string            `json:"model"`
	Count  int               `json:"count,omitempty"`
	Ratio  float64           `json:"ratio,omitempty"`
	Tags   []string          `json:"tags,omitempty"`
	Labels map[string]string `json:"labels,omitempty"`
	Inner  *struct {
		Path string `json:"path"`
	} `json:"inner,omitempty"`
}

func (fuzzArgs) Kind() string { return "fuzz:args" }

func (a fuzzArgs) Validate() error {
	switch {
	case a.Model == "":
		return InvalidField("model", "required")
	case a.Count < 0 || a.Count > 1000:
		return InvalidField("count", "%d is outside 0..1000", a.Count)
	case !(a.Ratio >= 0 && a.Ratio <= 1):
		return InvalidField("ratio", "outside [0, 1]")
	case len(a.Tags) > 16:
		return InvalidField("tags", "more than 16")
	}
	return nil
}

// FuzzDecodeArgs feeds arbitrary payloads to the one path by which a queued
// task becomes typed args (decodeArgs, through Registry.Check as a worker
// and the producer use it). It must never panic; every failure must be
// permanent (a retry cannot fix a payload); anything accepted must satisfy
// Validate and come from a payload within MaxPayloadBytes.
func FuzzDecodeArgs(f *testing.F) {
	for _, s := range []string{
		`{"model":"builtin:tiny"}`,
		`{"model":"m","count":3,"ratio":0.5,"tags":["a","b"],"labels":{"k":"v"},"inner":{"path":"/x"}}`,
		`{"model":"m","unknown":1}`,
		`{"model":"m"} {"model":"n"}`,
		`{"model":1}`,
		`{"model":"m","count":1e400}`,
		`[]`, `null`, ``, `{`, `"\ud800"`,
	} {
		f.Add([]byte(s))
	}
	reg := NewRegistry()
	Register(reg, WorkFunc[fuzzArgs](nil), KindOptions{})
	f.Fuzz(func(t *testing.T, payload []byte) {
		args, err := decodeArgs[fuzzArgs]("fuzz:args", payload)
		cerr := reg.Check("fuzz:args", payload)
		if (err == nil) != (cerr == nil) {
			t.Fatalf("decodeArgs and Registry.Check disagree: %v vs %v", err, cerr)
		}
		if err != nil {
			if !IsPermanent(err) {
				t.Fatalf("decode error is not permanent: %v", err)
			}
			if err.Error() == "" {
				t.Fatal("empty error message")
			}
			return
		}
		if len(payload) > MaxPayloadBytes {
			t.Fatalf("accepted a %d-byte payload over MaxPayloadBytes", len(payload))
		}
		if verr := args.Validate(); verr != nil {
			t.Fatalf("accepted args fail Validate: %v", verr)
		}
		if len(args.Tags) > 16 {
			t.Fatalf("accepted %d tags", len(args.Tags))
		}
	})
}

// TestDecodeArgsOversized checks the size bound, which the fuzzer's inputs
// (kilobytes) never reach.
func TestDecodeArgsOversized(t *testing.T) {
	big := make([]byte, MaxPayloadBytes+1)
	_, err := decodeArgs[fuzzArgs]("fuzz:args", big)
	if err == nil || !IsPermanent(err) {
		t.Fatalf("oversized payload: err = %v, want a permanent error", err)
	}
	if !strings.Contains(err.Error(), "over the limit") {
		t.Fatalf("oversized payload error does not name the limit: %v", err)
	}
}
