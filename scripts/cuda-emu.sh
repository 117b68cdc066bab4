#!/usr/bin/env bash
# Runs every CUDA kernel of gpu/kernels on the CPU: the .cu files compiled
# by g++ against gpu/kernels/emu (CUDA threads as OS threads, barriers and
# warp shuffles as pthread barriers, wmma emulated), each checked against a
# float64 reference with the launch shapes package gpu uses. Built with
# AddressSanitizer (out-of-bounds reads and writes in global and shared
# memory) and, with --race, ThreadSanitizer too (shared-memory races that a
# missing __syncthreads would cause). No GPU and no CUDA toolkit needed.
#
# --driver instead builds gpu/kernels/emu/driver.cpp as an emulated
# libcuda.so.1 and runs package gpu's parity tests (or the tests matching
# $EMU_RUN) against it: the whole GPU backend, Go orchestration included,
# on the CPU, compared with the CPU backend. Slow (minutes: every
# __syncthreads is a barrier of OS threads) and needs the toolchain of
# scripts/cuda-deps.sh for the cuda build.
#
# Usage: scripts/cuda-emu.sh [--race | --driver]
set -euo pipefail
cd "$(dirname "$0")/.."
race=0
[ "${1:-}" = "--race" ] && race=1
if [ "${1:-}" = "--driver" ]; then
	eval "$(scripts/cuda-deps.sh --print-env)"
	export CGO_CFLAGS CGO_LDFLAGS CGO_ENABLED=1 GOFLAGS="${GOFLAGS:--mod=mod}"
	tmp=$(mktemp -d)
	trap 'rm -rf "$tmp"' EXIT
	# gpu/kernels/emu first, so <mma.h> is the emulation's.
	g++ -std=c++20 -O2 -shared -fPIC -Igpu/kernels/emu -I"$CUDA_ROOT/usr/include" gpu/kernels/emu/driver.cpp -o "$tmp/libcuda.so.1" -lpthread
	go test -c -tags cuda -o "$tmp/gpu.test" ./gpu
	echo "cuda-emu: package gpu's tests on the emulated driver" >&2
	(cd gpu && LD_LIBRARY_PATH="$tmp" timeout 3600 "$tmp/gpu.test" -test.v -test.count=1 -test.timeout=3590s -test.run "${EMU_RUN:-Parity}")
	exit
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
src=gpu/kernels/emu/emu_test.cpp
flags=(-std=c++20 -O1 -g -fno-omit-frame-pointer -Igpu/kernels/emu)
g++ "${flags[@]}" -fsanitize=address,undefined -fno-sanitize-recover=undefined "$src" -o "$tmp/emu-asan" -lpthread
echo "cuda-emu: kernels on the CPU emulation, AddressSanitizer" >&2
timeout 900 "$tmp/emu-asan"
if [ "$race" = 1 ]; then
	g++ "${flags[@]}" -fsanitize=thread "$src" -o "$tmp/emu-tsan" -lpthread
	echo "cuda-emu: kernels on the CPU emulation, ThreadSanitizer (smaller shapes)" >&2
	TSAN_OPTIONS=halt_on_error=1 timeout 1800 "$tmp/emu-tsan" --quick
fi
