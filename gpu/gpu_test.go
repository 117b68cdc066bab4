package gpu

import (
	"errors"
	"testing"
)

func TestParseDevice(t *testing.T) {
	for _, c := range []struct {
		in      string
		ordinal int
		cuda    bool
		bad     bool
	}{
		{in: "cpu"}, {in: "cuda", cuda: true}, {in: "cuda:0", cuda: true}, {in: " cuda:3 ", ordinal: 3, cuda: true},
		{in: "cuda:-1", bad: true}, {in: "cuda:x", bad: true}, {in: "gpu", bad: true}, {in: "", bad: true}, {in: "cuda:256", bad: true},
	} {
		n, isCUDA, err := ParseDevice(c.in)
		if c.bad {
			if err == nil {
				t.Errorf("ParseDevice(%q) = %d, %v, want an error", c.in, n, isCUDA)
			}
			continue
		}
		if err != nil || n != c.ordinal || isCUDA != c.cuda {
			t.Errorf("ParseDevice(%q) = %d, %v, %v; want %d, %v", c.in, n, isCUDA, err, c.ordinal, c.cuda)
		}
	}
}

func TestParsePrecision(t *testing.T) {
	for _, p := range []Precision{FP32, TF32} {
		got, err := ParsePrecision(p.String())
		if err != nil || got != p {
			t.Errorf("ParsePrecision(%q) = %v, %v", p.String(), got, err)
		}
	}
	if _, err := ParsePrecision("bf16"); err == nil {
		t.Error("ParsePrecision(bf16) succeeded")
	}
}

// TestOpenReportsWhy: where Open fails, it says why in a way callers can
// test for: ErrNotBuilt without the cuda tag, ErrNoDriver on a machine
// without a usable driver (every build machine here). On a GPU machine
// Open succeeds and the parity tests take over.
func TestOpenReportsWhy(t *testing.T) {
	d, err := Open(0, Options{})
	if err == nil {
		d.Close()
		t.Skip("a GPU is present: nothing to check here")
	}
	if !Built && !errors.Is(err, ErrNotBuilt) {
		t.Errorf("Open without the cuda tag: %v, want ErrNotBuilt", err)
	}
	if Built && !errors.Is(err, ErrNoDriver) {
		t.Errorf("Open without a driver: %v, want an error wrapping ErrNoDriver", err)
	}
	t.Logf("Open: %v", err)
}
