// The CUDA driver binding of the cuda build. See driver.go.
#ifndef TANDEM_CUDRV_H
#define TANDEM_CUDRV_H

#include <stddef.h>
#include <cuda.h>

// tandem_cudrv_loaded is 1 when libcuda.so.1 was found and bound.
int tandem_cudrv_loaded(void);
// tandem_cudrv_error is dlopen's message when it was not.
const char *tandem_cudrv_error(void);
// tandem_cudrv_init_result is what the driver's cuInit returned (or
// CUDA_ERROR_NOT_INITIALIZED when there was no driver to call).
int tandem_cudrv_init_result(void);
// Page-locked host memory (not wrapped by gorgonia.org/cu), for copies
// that overlap with kernels.
int tandem_mem_alloc_host(void **p, size_t bytes);
int tandem_mem_free_host(void *p);

#endif
