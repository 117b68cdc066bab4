// An emulated CUDA driver: a libcuda.so.1 whose "device" is this CPU and
// whose kernels are gpu/kernels/*.cu compiled by g++ against cuda_emu.h.
// With it on LD_LIBRARY_PATH, a cuda build of Tandem (which binds the driver
// with dlopen, gpu/cudrv_lazy.c) runs its whole GPU backend here: Open, the
// module and kernel lookups, allocations, copies, every launch with the
// argument layout gorgonia.org/cu builds, and package gpu's orchestration of
// forward, backward, AdamW and decoding. scripts/cuda-emu.sh --driver runs
// package gpu's parity tests this way.
//
// It emulates only the driver functions package gpu calls, as this build of
// the driver API (CUDA 11.8 headers) names them. Device memory is host
// memory, streams are synchronous, the PTX handed to cuModuleLoadDataEx is
// ignored (kernels are found by name in the table below). It says nothing
// about speed, and it does not replace a run on a GPU.
#include "cuda_emu.h"

#include <cuda.h>

#include <cstring>
#include <map>
#include <mutex>
#include <string>
#include <utility>

#include "../attention.cu"
#include "../elementwise.cu"
#include "../gemm.cu"
#include "../layernorm.cu"
#include "../loss.cu"

namespace {

// A launcher unpacks kernelParams (each entry points at one parameter, as
// the driver API defines) into the kernel's own parameter types.
typedef void (*launcher)(void *fn, dim3e grid, unsigned block, void **params);

template <typename... A, size_t... I>
void launch_impl(void (*k)(A...), dim3e grid, unsigned block, void **params, std::index_sequence<I...>) {
	emu::launch(grid, block, k, *static_cast<A *>(params[I])...);
}

template <typename... A> void launch_any(void *fn, dim3e grid, unsigned block, void **params) {
	launch_impl(reinterpret_cast<void (*)(A...)>(fn), grid, block, params, std::index_sequence_for<A...>{});
}

template <typename... A> std::pair<void *, launcher> entry(void (*k)(A...)) {
	return {reinterpret_cast<void *>(k), &launch_any<A...>};
}

struct kernel_entry {
	void *fn;
	launcher run;
	std::string name;
};

std::map<std::string, kernel_entry> &kernels() {
	static std::map<std::string, kernel_entry> table = [] {
		std::map<std::string, kernel_entry> t;
#define K(name)                                                                                                       \
	do {                                                                                                              \
		auto e = entry(name);                                                                                         \
		t[#name] = kernel_entry{e.first, e.second, #name};                                                            \
	} while (0)
		K(encoder_forward);
		K(encoder_backward_wte);
		K(encoder_backward_wpe);
		K(gelu_forward);
		K(gelu_backward);
		K(residual_forward);
		K(scale_inplace);
		K(adamw_update);
		K(sumsq_partial);
		K(sum_doubles);
		K(column_sums_partial);
		K(column_sums_accumulate);
		K(gather_rows);
		K(layernorm_forward);
		K(layernorm_backward_input);
		K(layernorm_backward_params_partial);
		K(crossentropy_forward);
		K(crossentropy_backward);
		K(argmax_rows);
		K(gemm_tf32_nn);
		K(gemm_tf32_nt);
		K(gemm_tf32_tn);
		K(gemm_f32_nn);
		K(gemm_f32_nt);
		K(gemm_f32_tn);
		K(gemm_splitk_reduce);
		K(gemm_skinny_nn);
		K(gemm_skinny_nt);
		K(attention_forward_hs32);
		K(attention_forward_hs64);
		K(attention_forward_hs128);
		K(attention_backward_d);
		K(attention_backward_dkdv_hs32);
		K(attention_backward_dkdv_hs64);
		K(attention_backward_dkdv_hs128);
		K(attention_backward_dq_hs32);
		K(attention_backward_dq_hs64);
		K(attention_backward_dq_hs128);
		K(decode_append);
		K(decode_attention);
#undef K
		return t;
	}();
	return table;
}

std::mutex launch_mu; // one kernel at a time (the emulation's globals)
int fake_context, fake_module, fake_stream;

// The emulated device: compute capability 9.0 (so the compute_90 PTX is
// "loaded"), two multiprocessors (small grids keep the emulation quick;
// grid-stride loops then take several turns, as on a big GPU with big
// tensors).
const int kSMs = 2;
const size_t kMemory = size_t(8) << 30;

} // namespace

extern "C" {

CUresult cuInit(unsigned int) { return CUDA_SUCCESS; }
CUresult cuDriverGetVersion(int *v) {
	*v = 11080;
	return CUDA_SUCCESS;
}
CUresult cuDeviceGetCount(int *n) {
	*n = 1;
	return CUDA_SUCCESS;
}
CUresult cuDeviceGet(CUdevice *d, int ordinal) {
	if (ordinal != 0) return CUDA_ERROR_INVALID_DEVICE;
	*d = 0;
	return CUDA_SUCCESS;
}
CUresult cuDeviceGetName(char *name, int len, CUdevice) {
	snprintf(name, len, "Tandem CPU emulation (gpu/kernels/emu)");
	return CUDA_SUCCESS;
}
CUresult cuDeviceGetAttribute(int *v, CUdevice_attribute a, CUdevice) {
	switch (a) {
	case CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR: *v = 9; break;
	case CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR: *v = 0; break;
	case CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT: *v = kSMs; break;
	default: *v = 0;
	}
	return CUDA_SUCCESS;
}
CUresult cuDeviceTotalMem(size_t *bytes, CUdevice) {
	*bytes = kMemory;
	return CUDA_SUCCESS;
}
CUresult cuDevicePrimaryCtxRetain(CUcontext *ctx, CUdevice) {
	*ctx = reinterpret_cast<CUcontext>(&fake_context);
	return CUDA_SUCCESS;
}
CUresult cuDevicePrimaryCtxRelease(CUdevice) { return CUDA_SUCCESS; }
CUresult cuCtxSetCurrent(CUcontext) { return CUDA_SUCCESS; }
CUresult cuStreamCreate(CUstream *s, unsigned int) {
	*s = reinterpret_cast<CUstream>(&fake_stream);
	return CUDA_SUCCESS;
}
CUresult cuStreamDestroy(CUstream) { return CUDA_SUCCESS; }
CUresult cuStreamSynchronize(CUstream) { return CUDA_SUCCESS; }
CUresult cuModuleLoadDataEx(CUmodule *m, const void *image, unsigned int, CUjit_option *, void **) {
	if (image == nullptr || strstr(static_cast<const char *>(image), ".target") == nullptr) return CUDA_ERROR_INVALID_IMAGE;
	*m = reinterpret_cast<CUmodule>(&fake_module);
	return CUDA_SUCCESS;
}
CUresult cuModuleGetFunction(CUfunction *f, CUmodule, const char *name) {
	auto it = kernels().find(name);
	if (it == kernels().end()) return CUDA_ERROR_NOT_FOUND;
	*f = reinterpret_cast<CUfunction>(&it->second);
	return CUDA_SUCCESS;
}
CUresult cuModuleUnload(CUmodule) { return CUDA_SUCCESS; }

CUresult cuLaunchKernel(CUfunction f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz, unsigned smem,
                        CUstream, void **params, void **extra) {
	auto *k = reinterpret_cast<kernel_entry *>(f);
	if (by != 1 || bz != 1 || smem != 0 || extra != nullptr || bx == 0 || bx > 1024 || bx % 32 != 0) {
		fprintf(stderr, "emulated driver: %s launched with block %ux%ux%u, %u bytes of dynamic shared memory\n", k->name.c_str(), bx, by,
		        bz, smem);
		return CUDA_ERROR_INVALID_VALUE;
	}
	if (gx == 0 || gy == 0 || gz == 0 || gy > 65535 || gz > 65535) return CUDA_ERROR_INVALID_VALUE;
	std::lock_guard<std::mutex> lock(launch_mu);
	k->run(k->fn, dim3e{gx, gy, gz}, bx, params);
	return CUDA_SUCCESS;
}

CUresult cuMemAlloc(CUdeviceptr *p, size_t bytes) {
	void *m = aligned_alloc(256, (bytes + 255) & ~size_t(255));
	if (m == nullptr) return CUDA_ERROR_OUT_OF_MEMORY;
	// Fresh device memory holds garbage: NaNs make reads of unwritten
	// memory show up in the results.
	memset(m, 0xff, bytes);
	*p = reinterpret_cast<CUdeviceptr>(m);
	return CUDA_SUCCESS;
}
CUresult cuMemFree(CUdeviceptr p) {
	free(reinterpret_cast<void *>(p));
	return CUDA_SUCCESS;
}
CUresult cuMemGetInfo(size_t *free_bytes, size_t *total) {
	*free_bytes = kMemory / 2;
	*total = kMemory;
	return CUDA_SUCCESS;
}
CUresult cuMemcpyHtoDAsync(CUdeviceptr dst, const void *src, size_t n, CUstream) {
	memcpy(reinterpret_cast<void *>(dst), src, n);
	return CUDA_SUCCESS;
}
CUresult cuMemcpyDtoHAsync(void *dst, CUdeviceptr src, size_t n, CUstream) {
	memcpy(dst, reinterpret_cast<const void *>(src), n);
	return CUDA_SUCCESS;
}
CUresult cuMemsetD32Async(CUdeviceptr dst, unsigned int v, size_t n, CUstream) {
	auto *p = reinterpret_cast<unsigned int *>(dst);
	for (size_t i = 0; i < n; i++) p[i] = v;
	return CUDA_SUCCESS;
}
CUresult cuMemAllocHost(void **p, size_t bytes) {
	*p = malloc(bytes);
	return *p ? CUDA_SUCCESS : CUDA_ERROR_OUT_OF_MEMORY;
}
CUresult cuMemFreeHost(void *p) {
	free(p);
	return CUDA_SUCCESS;
}

} // extern "C"
