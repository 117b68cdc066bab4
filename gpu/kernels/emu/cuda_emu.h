// A CPU emulation of the CUDA features gpu/kernels/*.cu use, so the
// kernels can be compiled by g++ and run here, where there is no GPU
// (scripts/cuda-emu.sh). Each CUDA thread of a block is an OS thread; the
// blocks of a grid run one after another on the same threads. __syncthreads is a pthread barrier over the
// block, warp shuffles and __syncwarp barriers over the 32 threads of a
// warp, __shared__ variables are statics (one block at a time shares
// them), atomics are real atomics. Built with AddressSanitizer this finds
// out-of-bounds accesses in global and shared memory; with
// ThreadSanitizer, shared-memory races a missing barrier would cause; a
// warp-collective operation that not all 32 lanes reach deadlocks (the
// driver's watchdog reports it), as it is undefined on a GPU.
//
// Not emulated: anything the kernels do not use. Timing, occupancy and
// register limits are not modelled.
#pragma once

#include <pthread.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <thread>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static
#define __align__(n) __attribute__((aligned(n)))

struct dim3e {
	unsigned x = 1, y = 1, z = 1;
};

struct alignas(16) float4 {
	float x, y, z, w;
};

namespace emu {

struct warp_state {
	pthread_barrier_t bar;
	float fslot[32];
	double dslot[32];
	int islot[32];
};

struct block_state {
	pthread_barrier_t bar;
	std::vector<warp_state> warps;
};

inline dim3e grid_dim, block_dim, block_idx;
inline thread_local dim3e thread_idx;
inline thread_local block_state *cur_block;

inline warp_state &my_warp() { return cur_block->warps[thread_idx.x / 32]; }
inline int my_lane() { return thread_idx.x % 32; }

// launch runs kernel(args...) over grid x block threads (block must be a
// multiple of 32, as every kernel here assumes). One OS thread per CUDA
// thread of a block, reused for every block of the grid in turn: the
// threads meet at a barrier between blocks, where thread 0 moves
// blockIdx on.
template <typename F, typename... A> void launch(dim3e grid, unsigned block, F kernel, A... args) {
	if (block == 0 || block % 32 != 0 || block > 1024) {
		fprintf(stderr, "emu: block of %u threads\n", block);
		abort();
	}
	grid_dim = grid;
	block_dim = dim3e{block, 1, 1};
	block_state bs;
	pthread_barrier_init(&bs.bar, nullptr, block);
	bs.warps.resize(block / 32);
	for (auto &w : bs.warps) pthread_barrier_init(&w.bar, nullptr, 32);
	pthread_barrier_t between;
	pthread_barrier_init(&between, nullptr, block);
	const unsigned long long blocks = (unsigned long long)grid.x * grid.y * grid.z;
	std::vector<std::thread> threads;
	threads.reserve(block);
	for (unsigned t = 0; t < block; t++)
		threads.emplace_back([&, t] {
			thread_idx = dim3e{t, 0, 0};
			cur_block = &bs;
			for (unsigned long long b = 0; b < blocks; b++) {
				if (t == 0)
					block_idx = dim3e{(unsigned)(b % grid.x), (unsigned)(b / grid.x % grid.y), (unsigned)(b / grid.x / grid.y)};
				pthread_barrier_wait(&between); // blockIdx set, the previous block done by all
				kernel(args...);
				pthread_barrier_wait(&between); // this block done by all
			}
		});
	for (auto &th : threads) th.join();
	pthread_barrier_destroy(&between);
	for (auto &w : bs.warps) pthread_barrier_destroy(&w.bar);
	pthread_barrier_destroy(&bs.bar);
}

} // namespace emu

#define threadIdx (emu::thread_idx)
#define blockIdx (emu::block_idx)
#define blockDim (emu::block_dim)
#define gridDim (emu::grid_dim)

inline void __syncthreads() { pthread_barrier_wait(&emu::cur_block->bar); }
inline void __syncwarp(unsigned = 0xffffffffu) { pthread_barrier_wait(&emu::my_warp().bar); }

// Shuffles: every lane publishes its value, the warp meets, each reads its
// source lane's, the warp meets again before the slots are reused.
template <typename T> inline T shfl_impl(T v, int src, T *slots) {
	emu::warp_state &w = emu::my_warp();
	slots[emu::my_lane()] = v;
	pthread_barrier_wait(&w.bar);
	T out = slots[src & 31];
	pthread_barrier_wait(&w.bar);
	return out;
}
inline float __shfl_xor_sync(unsigned, float v, int m) { return shfl_impl(v, emu::my_lane() ^ m, emu::my_warp().fslot); }
inline double __shfl_xor_sync(unsigned, double v, int m) { return shfl_impl(v, emu::my_lane() ^ m, emu::my_warp().dslot); }
inline int __shfl_xor_sync(unsigned, int v, int m) { return shfl_impl(v, emu::my_lane() ^ m, emu::my_warp().islot); }
inline float __shfl_sync(unsigned, float v, int src) { return shfl_impl(v, src, emu::my_warp().fslot); }

inline float atomicAdd(float *p, float v) { return std::atomic_ref<float>(*p).fetch_add(v); }

using std::max;
using std::min;
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
