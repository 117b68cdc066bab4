//go:build cuda && cudadirect

// The direct binding: libcuda.so.1 is a link-time dependency (NEEDED), as
// gorgonia.org/cu has it on its own. Built only by scripts/cuda-bind.sh, to
// list the driver symbols the lazy binding (cudrv_lazy.c) must provide.
#include "cudrv.h"

int tandem_cudrv_loaded(void) { return 1; }
const char *tandem_cudrv_error(void) { return ""; }
int tandem_cudrv_init_result(void) { return CUDA_SUCCESS; }
int tandem_mem_alloc_host(void **p, size_t bytes) { return cuMemAllocHost(p, bytes); }
int tandem_mem_free_host(void *p) { return cuMemFreeHost(p); }
