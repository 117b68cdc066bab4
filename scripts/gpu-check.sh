#!/usr/bin/env bash
# The GPU check of issue 7, in two halves, because the machines that build
# (Go, the CUDA toolchain, no GPU) and the machine with the GPU (driver,
# PyTorch, no Go, no network) are different:
#
#   scripts/gpu-check.sh --build   here: build/gpu-check/ with
#       gpu.test    the cuda build of package gpu's tests (parity with the
#                   CPU backend: logits, loss, every gradient, AdamW steps,
#                   decoding, greedy generation token for token);
#       gpubench    the benchmark (GPT-2 124M training step and batched
#                   greedy generation at batch 1, 8, 64; FP32 and TF32);
#       data/       a tiny checkpoint and tokens the parity tests load.
#     Both binaries need only glibc >= 2.34 (built on Debian 12); they load
#     libcuda.so.1 at run time (gpu/cudrv_lazy.c) and use no OpenBLAS
#     (-tags noblas).
#
#   scripts/gpu-check.sh --run     there (from the repository root, with
#     build/gpu-check carried along): parity tests, then gpubench and
#     bench/torch_gpu.py on the same GPU, then a table of ratios and model
#     FLOPs utilisation. Under 5 minutes on an H200. Results go to $OUT (or
#     build/gpu-check/out): env.txt, parity.log, bench.log, ours.json,
#     torch.json, summary.txt. With no GPU it runs the same steps on the
#     CPU at smaller shapes (parity tests skip their GPU side).
#
#   scripts/gpu-check.sh --local   both, here (the CPU side with OpenBLAS).
#
# With the device tool: run `scripts/gpu-check.sh --run` with carry
# ["build/gpu-check"] and a timeout of 420 s.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=build/gpu-check
mode="${1:---build}"

build() {
	eval "$(scripts/cuda-deps.sh --print-env)"
	export CGO_CFLAGS CGO_LDFLAGS CGO_ENABLED=1 GOFLAGS="${GOFLAGS:--mod=mod}"
	rm -rf "$dir"
	mkdir -p "$dir"
	local tags=cuda,noblas ld="-s -w"
	go test -c -tags "$tags" -ldflags="$ld" -o "$dir/gpu.test" ./gpu
	go build -tags "$tags" -ldflags="$ld" -o "$dir/gpubench" ./bench/gpubench
	if [ "${GPU_CHECK_CPU_BENCH:-0}" = 1 ]; then
		# For a run on this machine: the CPU backend with OpenBLAS, as the
		# product runs it (the bundle's binaries carry no OpenBLAS).
		go build -tags cuda -ldflags="$ld" -o "$dir/gpubench-cpu" ./bench/gpubench
	fi
	"$dir/gpubench" -gen-data "$dir/data"
	for b in "$dir/gpu.test" "$dir/gpubench"; do
		if readelf -d "$b" | grep -Eq 'NEEDED.*(libcuda|openblas)'; then
			echo "gpu-check: $b links libcuda or OpenBLAS at load time" >&2
			exit 1
		fi
	done
	{
		echo "built $(date -u +%Y-%m-%dT%H:%M:%SZ) from $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (uncommitted changes)')"
		(cd "$dir" && find . -type f | sort | xargs du -k)
	} >"$dir/MANIFEST"
	local kb
	kb=$(du -sk "$dir" | cut -f1)
	if [ "$kb" -gt $((60 * 1024)) ]; then
		echo "gpu-check: $dir is $((kb / 1024)) MiB; the device tool carries at most 64 MiB" >&2
		exit 1
	fi
	echo "gpu-check: built $dir ($((kb / 1024)) MiB); run it on a GPU machine with: scripts/gpu-check.sh --run" >&2
}

run() {
	[ -x "$dir/gpu.test" ] && [ -x "$dir/gpubench" ] || {
		echo "gpu-check: $dir is missing; run scripts/gpu-check.sh --build first (and carry $dir)" >&2
		exit 1
	}
	local out="${OUT:-$dir/out}"
	mkdir -p "$out"
	# The driver: the loader's cache first, then where drivers are mounted.
	if ! ldconfig -p 2>/dev/null | grep -q 'libcuda\.so\.1'; then
		for d in /usr/local/nvidia/lib64 /usr/local/nvidia/lib /usr/lib/x86_64-linux-gnu /usr/lib64 /usr/local/cuda/compat; do
			if [ -e "$d/libcuda.so.1" ]; then
				export LD_LIBRARY_PATH="$d${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
				break
			fi
		done
	fi
	# The driver caches what it JIT-compiles from the PTX here.
	export CUDA_CACHE_PATH="${CUDA_CACHE_PATH:-/tmp/tandem-cuda-cache}"
	local py=""
	for p in python3 /usr/bin/python3; do
		if command -v "$p" >/dev/null && "$p" -c 'import torch' 2>/dev/null; then
			py="$p"
			break
		fi
	done
	local gpu=0
	nvidia-smi -L >/dev/null 2>&1 && gpu=1
	{
		date -u
		uname -a
		ldd --version 2>&1 | head -1
		cat "$dir/MANIFEST"
		[ -x "$dir/gpubench-cpu" ] && echo "gpubench-cpu: the CPU side runs with OpenBLAS"
		nvidia-smi 2>&1 || echo "nvidia-smi: not available"
		[ -n "$py" ] && "$py" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())'
		echo "LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}"
	} >"$out/env.txt" 2>&1
	local start=$SECONDS
	echo "gpu-check: parity tests" >&2
	local parity=0
	TANDEM_GPU_CHECK_DATA="$dir/data" timeout 300 "$dir/gpu.test" -test.v -test.count=1 -test.timeout=290s >"$out/parity.log" 2>&1 || parity=$?
	if [ "$parity" != 0 ] && [ "$gpu" = 1 ]; then
		# Once more with a synchronisation after every kernel, so that a
		# fault names its kernel.
		echo "gpu-check: parity failed (exit $parity); again with TANDEM_GPU_SYNC=1" >&2
		{
			echo
			echo "=== again with TANDEM_GPU_SYNC=1 ==="
			TANDEM_GPU_SYNC=1 TANDEM_GPU_CHECK_DATA="$dir/data" timeout 200 "$dir/gpu.test" -test.v -test.count=1 -test.failfast -test.timeout=190s 2>&1 || true
		} >>"$out/parity.log"
	fi
	# Shapes: GPT-2 124M at full size on a GPU; on a CPU the same model at
	# small batches, so that the run stays short.
	local shapes=(--train-batch 8 --ctx 1024 --steps 5 --warmup 2 --gen-batches 1,8,64 --prompt 32 --new 128)
	[ "$gpu" = 1 ] || shapes=(--train-batch 1 --ctx 128 --steps 2 --warmup 1 --gen-batches 1,8 --prompt 16 --new 8)
	echo "gpu-check: gpubench ${shapes[*]}" >&2
	local gobench=() pyshapes=()
	for ((i = 0; i < ${#shapes[@]}; i += 2)); do
		gobench+=("-${shapes[i]#--}" "${shapes[i + 1]}")
		pyshapes+=("${shapes[i]}" "${shapes[i + 1]}")
	done
	local bench="$dir/gpubench"
	if [ "$gpu" = 0 ]; then
		gobench+=(-worker-batch 0)
		[ -x "$dir/gpubench-cpu" ] && bench="$dir/gpubench-cpu"
	fi
	timeout 300 "$bench" -backend auto "${gobench[@]}" >"$out/ours.json" 2>"$out/bench.log" || echo "gpu-check: gpubench failed (see bench.log)" >&2
	if [ -n "$py" ]; then
		echo "gpu-check: bench/torch_gpu.py" >&2
		local threads=()
		[ "$gpu" = 1 ] || threads=(--threads "$(nproc)")
		PYTHONUNBUFFERED=1 timeout 300 "$py" bench/torch_gpu.py --device auto "${pyshapes[@]}" "${threads[@]}" >"$out/torch.json" 2>>"$out/bench.log" || echo "gpu-check: torch_gpu.py failed (see bench.log)" >&2
	else
		echo '{}' >"$out/torch.json"
		echo "gpu-check: no python3 with torch here; no peer figures" >&2
	fi
	summarise "$out" "$parity" "${py:-python3}" | tee "$out/summary.txt"
	echo "gpu-check: done in $((SECONDS - start)) s; results in $out" >&2
}

# summarise prints the parity outcome and the table of ratios.
summarise() {
	local out=$1 parity=$2 py=$3
	"$py" - "$out" "$parity" <<'EOF'
import json, re, sys
out, parity = sys.argv[1], int(sys.argv[2])
log = open(out + "/parity.log").read().split("=== again with")[0]
fails = re.findall(r"^\s*--- FAIL: (\S+)", log, re.M)
skips = len(re.findall(r"^\s*--- SKIP", log, re.M))
passes = len(re.findall(r"^\s*--- PASS", log, re.M))
why = re.search(r"GPU side skipped: (.*)", log)
print("parity: %s (%d passed, %d failed, %d skipped)%s" % ("PASS" if parity == 0 else "FAIL", passes, len(fails), skips,
      "; GPU side skipped: " + why.group(1) if why else ""))
for f in fails:
    print("  failed:", f)
def load(p):
    try:
        return json.load(open(p))
    except Exception as e:
        return {"error": str(e)}
ours, peer = load(out + "/ours.json"), load(out + "/torch.json")
print("ours: %s, %s" % (ours.get("backend"), ours.get("device")))
print("peer: torch %s, %s, %s" % (peer.get("torch"), peer.get("backend"), peer.get("device")))
if ours.get("gpu_error"):
    print("no GPU for ours:", ours["gpu_error"])
params = ours.get("params") or peer.get("params") or 0
# Dense peaks of an H100/H200 SXM (NVIDIA's datasheet): FP32 on the CUDA
# cores, TF32 and BF16 on the tensor cores without sparsity.
peaks = {"fp32": 66.9e12, "tf32": 494.7e12, "bf16": 989.4e12}
is_hopper = any(n in str(ours.get("device", "")) + str(peer.get("device", "")) for n in ("H200", "H100"))
def index(res, part, key):
    return {(r["precision"], r[key]): r for r in res.get(part, []) or []}
rows = []
for part, key, goal in (("train", "batch", 0.5), ("gen", "batch", 1.0)):
    o, p = index(ours, part, key), index(peer, part, key)
    for k in sorted(set(o) | set(p), key=lambda k: (k[0], k[1])):
        a, b = o.get(k, {}).get("tokens_per_s"), p.get(k, {}).get("tokens_per_s")
        r = o.get(k) or p.get(k)
        name = ("train B%dxT%d" % (r["batch"], r["context"])) if part == "train" else ("generate batch %d (%d+%d)" % (r["batch"], r["prompt_tokens"], r["new_tokens"]))
        rows.append((name, k[0], a, b, (a / b) if a and b else None, goal))
print()
print("%-30s %-5s %14s %14s %9s %6s" % ("workload", "prec", "ours tok/s", "torch tok/s", "ours/peer", "goal"))
for name, prec, a, b, r, goal in rows:
    f = lambda v: "%14.1f" % v if v else "%14s" % "-"
    print("%-30s %-5s %s %s %9s %6s" % (name, prec, f(a), f(b), "%.2f" % r if r else "-", ">=%.1f" % goal))
for w in ours.get("gen_worker", []) or []:
    print("%-30s %-5s %14.1f %14s %9s %6s" % ("  model.Generate batch %d" % w["batch"], w["precision"], w["tokens_per_s"], "-", "-", ""))
if params:
    print()
    print("model FLOPs utilisation, training (6 x %.1fM params x tokens/s):" % (params / 1e6))
    for name, prec, a, b, r, goal in rows:
        if not name.startswith("train"):
            continue
        for who, v in (("ours", a), ("torch", b)):
            if not v:
                continue
            flops = 6 * params * v
            line = "  %-5s %-5s %8.3f TFLOP/s" % (who, prec, flops / 1e12)
            if is_hopper:
                line += "; MFU %.1f%% of the %s dense peak (%.1f TFLOP/s), %.1f%% of the BF16 dense peak (989.4)" % (
                    100 * flops / peaks[prec], prec.upper(), peaks[prec] / 1e12, 100 * flops / peaks["bf16"])
            print(line)
    if not is_hopper:
        print("  (no H100/H200 here: no peak to compare with)")
EOF
}

case "$mode" in
--build) build ;;
--run) run ;;
--local)
	GPU_CHECK_CPU_BENCH=1 build
	run
	;;
*)
	echo "usage: $0 --build | --run | --local" >&2
	exit 2
	;;
esac
