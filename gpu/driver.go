//go:build cuda

package gpu

/*
#cgo LDFLAGS: -ldl
#include "cudrv.h"
*/
import "C"

import (
	"fmt"
	"unsafe"

	"gorgonia.org/cu"
)

// driverStatus reports whether the CUDA driver is there and initialised:
// nil, or an error wrapping ErrNoDriver that says what is missing. See
// cudrv_lazy.c for how a binary without a driver gets this far.
func driverStatus() error {
	if C.tandem_cudrv_loaded() == 0 {
		return fmt.Errorf("%w: libcuda.so.1 could not be loaded: %s", ErrNoDriver, C.GoString(C.tandem_cudrv_error()))
	}
	if r := int(C.tandem_cudrv_init_result()); r != 0 {
		return fmt.Errorf("%w: cuInit failed with %s", ErrNoDriver, resultName(r))
	}
	if n, err := cu.NumDevices(); err != nil || n == 0 {
		return fmt.Errorf("%w: the driver sees no CUDA device (%v)", ErrNoDriver, err)
	}
	return nil
}

// resultName names the CUresult codes a failed start is likely to meet.
func resultName(r int) string {
	names := map[int]string{
		3: "CUDA_ERROR_NOT_INITIALIZED", 34: "CUDA_ERROR_STUB_LIBRARY (the link-time stub, not a driver)",
		35: "CUDA_ERROR_INSUFFICIENT_DRIVER", 100: "CUDA_ERROR_NO_DEVICE", 101: "CUDA_ERROR_INVALID_DEVICE",
		304: "CUDA_ERROR_OPERATING_SYSTEM", 999: "CUDA_ERROR_UNKNOWN",
	}
	if n, ok := names[r]; ok {
		return fmt.Sprintf("%s (%d)", n, r)
	}
	return fmt.Sprintf("CUresult %d", r)
}

// hostAlloc returns n floats of page-locked host memory, which device
// copies can read and write without a staging copy.
func hostAlloc(n int) ([]float32, error) {
	if n == 0 {
		return nil, nil
	}
	var p unsafe.Pointer
	if r := C.tandem_mem_alloc_host(&p, C.size_t(n)*4); r != 0 {
		return nil, fmt.Errorf("gpu: cuMemAllocHost(%d MiB): %s", n*4>>20, resultName(int(r)))
	}
	return unsafe.Slice((*float32)(p), n), nil
}

// hostFree releases memory from hostAlloc.
func hostFree(s []float32) {
	if len(s) > 0 {
		C.tandem_mem_free_host(unsafe.Pointer(&s[0]))
	}
}
