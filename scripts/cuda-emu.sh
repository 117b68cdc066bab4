#!/usr/bin/env bash
# Runs every CUDA kernel of gpu/kernels on the CPU: the .cu files compiled
# by g++ against gpu/kernels/emu (CUDA threads as OS threads, barriers and
# warp shuffles as pthread barriers, wmma emulated), each checked against a
# float64 reference with the launch shapes package gpu uses. Built with
# AddressSanitizer (out-of-bounds reads and writes in global and shared
# memory) and, with --race, ThreadSanitizer too (shared-memory races that a
# missing __syncthreads would cause). No GPU and no CUDA toolkit needed.
#
# Usage: scripts/cuda-emu.sh [--race]
set -euo pipefail
cd "$(dirname "$0")/.."
race=0
[ "${1:-}" = "--race" ] && race=1
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
