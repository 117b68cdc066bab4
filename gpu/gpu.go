package gpu

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// ErrNotBuilt is returned by Open in a binary built without the cuda tag.
var ErrNotBuilt = errors.New("gpu: built without CUDA support (rebuild with -tags cuda: make cuda-build)")

// ErrNoDriver is wrapped by Open's error when the machine has no usable
// CUDA driver: libcuda.so.1 missing, cuInit failing, or no device.
var ErrNoDriver = errors.New("gpu: no usable CUDA driver")

// Precision selects how matrix products run. Everything else (attention,
// LayerNorm, the loss, AdamW) is FP32 either way.
type Precision int

const (
	// FP32 runs matrix products in exact single precision on the CUDA
	// cores: results match the CPU backend to float rounding.
	FP32 Precision = iota
	// TF32 runs them on the tensor cores with TF32 inputs (10-bit
	// mantissas) and FP32 accumulation: several times the throughput,
	// with relative errors around 1e-3 per product.
	TF32
)

// String is the name ParsePrecision accepts.
func (p Precision) String() string {
	switch p {
	case FP32:
		return "fp32"
	case TF32:
		return "tf32"
	}
	return "Precision(" + strconv.Itoa(int(p)) + ")"
}

// ParsePrecision parses "fp32" or "tf32".
func ParsePrecision(s string) (Precision, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "fp32":
		return FP32, nil
	case "tf32":
		return TF32, nil
	}
	return 0, fmt.Errorf("gpu: precision %q: want fp32 or tf32", s)
}

// Options configure Open. The zero value is exact FP32 without debugging.
type Options struct {
	// Precision of the matrix products. Default FP32.
	Precision Precision
	// SyncEachKernel waits for every kernel to finish before launching the
	// next, so that an asynchronous fault (an illegal address, say) is
	// reported with the name of the kernel that caused it rather than at
	// the next synchronisation. Slow; for debugging.
	SyncEachKernel bool
}

// MaxHeadSize is the largest attention head (n_embd/n_head) the kernels
// support; GPT-2 uses 64 at every size.
const MaxHeadSize = 128

// ParseDevice parses a device name: "cpu", or "cuda" / "cuda:N" for GPU N
// (default 0). It returns the ordinal and whether the name is a CUDA one.
func ParseDevice(s string) (ordinal int, isCUDA bool, err error) {
	s = strings.TrimSpace(s)
	switch {
	case s == "cpu":
		return 0, false, nil
	case s == "cuda":
		return 0, true, nil
	case strings.HasPrefix(s, "cuda:"):
		n, err := strconv.Atoi(s[len("cuda:"):])
		if err != nil || n < 0 || n > 255 {
			return 0, false, fmt.Errorf("device %q: want cuda:N with N in 0..255", s)
		}
		return n, true, nil
	}
	return 0, false, fmt.Errorf("device %q: want cpu, cuda or cuda:N", s)
}
