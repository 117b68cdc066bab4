#!/usr/bin/env bash
# Compiles gpu/kernels/*.cu to PTX for compute_80 (A100) and compute_90
# (H100/H200) into gpu/ptx/compute_NN/NAME.ptx, the files the cuda build
# embeds, and assembles each with ptxas for sm_80/sm_90: the PTX the GPU's
# driver will JIT-compile is checked here, with no GPU, and any register
# spill is reported.
#
# Usage: scripts/cuda-ptx.sh           write gpu/ptx/
#        scripts/cuda-ptx.sh --check   compile into a temporary folder and
#                                      fail unless it equals gpu/ptx/
# The output is deterministic (no paths or dates in it), so the check holds
# in any checkout on any machine with the same toolchain (scripts/cuda-deps.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(scripts/cuda-deps.sh --print-env)"
mode="${1:-build}"
case "$mode" in build | --check) ;; *) echo "usage: $0 [--check]" >&2; exit 2 ;; esac
out=gpu/ptx
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
[ "$mode" = --check ] && out="$tmp/ptx"

pids=()
for arch in 80 90; do
	mkdir -p "$out/compute_$arch" "$tmp/log"
	for f in gpu/kernels/*.cu; do
		n=$(basename "$f" .cu)
		(
			"$NVCC" -ccbin "$CUDA_HOSTCXX" -ptx -arch="compute_$arch" -O3 -o "$out/compute_$arch/$n.ptx" "$f"
			"$PTXAS" -arch="sm_$arch" -v -o /dev/null "$out/compute_$arch/$n.ptx" 2>"$tmp/log/$n.$arch"
		) &
		pids+=($!)
	done
done
fail=0
for p in "${pids[@]}"; do wait "$p" || fail=1; done
[ "$fail" = 0 ] || { echo "cuda-ptx: nvcc or ptxas failed" >&2; exit 1; }
# ptxas -v prints "N bytes spill stores" per kernel: spills are slow, say so.
if grep -h "spill" "$tmp"/log/* | grep -vq " 0 bytes spill stores, 0 bytes spill loads"; then
	echo "cuda-ptx: warning: register spills:" >&2
	grep -B1 -h "spill" "$tmp"/log/* | grep -v " 0 bytes spill stores, 0 bytes spill loads" | grep -v "^--" >&2 || true
fi
if [ "$mode" = --check ]; then
	# nvcc 11.8 has been seen to emit different PTX for the same source
	# from run to run (a fully unrolled loop in gemm.cu, since restructured).
	# A file that differs is compiled twice more: a real change differs
	# every time, a flake of the compiler does not.
	for p in "$out"/compute_*/*.ptx; do
		rel=${p#"$out"/}
		cmp -s "$p" "gpu/ptx/$rel" && continue
		arch=${rel%%/*}
		n=$(basename "$p" .ptx)
		for try in 1 2; do
			"$NVCC" -ccbin "$CUDA_HOSTCXX" -ptx -arch="$arch" -O3 -o "$p" "gpu/kernels/$n.cu"
			if cmp -s "$p" "gpu/ptx/$rel"; then
				echo "cuda-ptx: warning: $rel matched only on retry $try (nvcc is not deterministic here)" >&2
				break
			fi
		done
	done
	if ! diff -r -q gpu/ptx "$out" >"$tmp/diff"; then
		echo "cuda-ptx: the committed gpu/ptx differs from what gpu/kernels/*.cu compile to now; run 'make ptx' and commit:" >&2
		cat "$tmp/diff" >&2
		exit 1
	fi
	echo "cuda-ptx: gpu/ptx matches gpu/kernels ($(ls "$out"/compute_*/*.ptx | wc -l) files)"
else
	# Drop PTX whose source is gone.
	for p in gpu/ptx/compute_*/*.ptx; do
		[ -f "gpu/kernels/$(basename "$p" .ptx).cu" ] || rm -f "$p"
	done
	echo "cuda-ptx: wrote $(ls gpu/ptx/compute_*/*.ptx | wc -l) files under gpu/ptx"
fi
