#!/usr/bin/env bash
# The CUDA build check (make cuda-build, run by .ci/run): no GPU needed.
#   1. the CUDA 11.8 toolchain in its cache (scripts/cuda-deps.sh; once);
#   2. go vet and go build of every package with -tags cuda, cgo against
#      the cached headers and driver stub;
#   3. the committed PTX is what gpu/kernels/*.cu compile to now, and it
#      assembles for sm_80 and sm_90 (scripts/cuda-ptx.sh --check);
#   4. the driver trampolines list every driver function called
#      (scripts/cuda-bind.sh --check), and the cuda worker binary does not
#      depend on libcuda.so.1 at load time (readelf);
#   5. the cuda build's tests: their CPU sides, and Open reporting the
#      missing driver (go test -tags cuda ./gpu ./cmd/worker -run Device|Open|Parity|...);
#   6. every kernel on the CPU emulation under AddressSanitizer
#      (scripts/cuda-emu.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
step() { echo "cuda-build: $* ($(($(date +%s) - start))s)" >&2; }
step "toolchain"
eval "$(scripts/cuda-deps.sh --print-env)"
export CGO_CFLAGS CGO_LDFLAGS CGO_ENABLED=1 GOFLAGS="${GOFLAGS:--mod=mod}"
step "go vet -tags cuda ./..."
go vet -tags cuda ./...
step "go build -tags cuda ./..."
go build -tags cuda ./...
step "PTX"
scripts/cuda-ptx.sh --check
step "driver binding"
scripts/cuda-bind.sh --check
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
go build -tags cuda -o "$tmp/worker" ./cmd/worker
if readelf -d "$tmp/worker" | grep -q 'NEEDED.*libcuda'; then
	echo "cuda-build: the cuda worker links libcuda.so.1 directly; a driver function is missing from gpu/cudrv_table.c" >&2
	readelf -d "$tmp/worker" | grep NEEDED >&2
	exit 1
fi
step "go test -tags cuda (CPU sides, no-driver fallback)"
go test -tags cuda -count=1 ./gpu ./cmd/worker -run 'Parity|Param|Split|Open|Parse|Device'
step "kernels on the CPU emulation"
scripts/cuda-emu.sh
step "done"
