#!/usr/bin/env bash
# Runs the Go benchmark (bench/gobench) and its peers (bench/torch_gpt2.py on
# PyTorch, numpy for sgemm) in one go and prints, per workload, both rates
# and the ratio ours/peer, plus:
#   - our sgemm as a fraction of the machine's sgemm rate (numpy's OpenBLAS,
#     the best of its two shapes);
#   - model FLOPs utilisation (MFU) against that rate: 6*N*tokens/s for
#     training, 2*N*tokens/s for generation (N = parameter count; attention
#     score FLOPs are left out, as usual).
# The engine part (bench/engine) has its peer in the same process: issue
# 15's continuous-batching engine against one job at a time per model, on
# streams, a batch and both together, with issue 15's targets; it prints
# its own table and writes bench/out/engine.json.
# Raw JSON goes to bench/out/. Run it on a quiet machine: other processes
# on the same cores skew both sides, not necessarily equally.
#
# Usage: bench/run.sh [parts]   (parts: comma-separated gen,train,sgemm,engine; default all)
set -euo pipefail
cd "$(dirname "$0")/.."
parts="${1:-gen,train,sgemm,engine}"
py=/usr/bin/python3 # Debian's interpreter has python3-torch and python3-numpy
out=bench/out
mkdir -p "$out"
export GOFLAGS="${GOFLAGS:--mod=mod}"

if [[ ",$parts," == *",engine,"* ]]; then
	# GOMAXPROCS=2 as for gobench below; the program reports the load and
	# OPENBLAS_CORETYPE itself.
	echo "engine vs one job per model: bench/engine" >&2
	go build -o "$out/engine" ./bench/engine
	GOMAXPROCS=2 "$out/engine" -out "$out/engine.json"
fi
parts=$(echo "$parts" | tr ',' '\n' | grep -vx engine | paste -sd, - || true)
[[ -n "$parts" ]] || exit 0

load_before=$(cut -d' ' -f1 /proc/loadavg)
echo "load before: $load_before" >&2
go build -o "$out/gobench" ./bench/gobench

# Both sides get two threads: torch.set_num_threads(2) in the script,
# GOMAXPROCS=2 here.
torch_parts=$(echo "$parts" | tr ',' '\n' | grep -E '^(gen|train)$' | paste -sd, - || true)
if [[ -n "$torch_parts" ]]; then
	echo "peer: torch ($torch_parts)" >&2
	"$py" bench/torch_gpt2.py --parts "$torch_parts" >"$out/torch.json"
else
	echo '{}' >"$out/torch.json"
fi
if [[ ",$parts," == *",sgemm,"* ]]; then
	# Some hosts set OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE for old OpenBLAS
	# builds; they slow a current one down, so the peer runs without them
	# (this command only). The JSON records which kernel OpenBLAS chose.
	echo "peer: numpy sgemm" >&2
	env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE "$py" bench/torch_gpt2.py --parts sgemm >"$out/numpy.json"
else
	echo '{}' >"$out/numpy.json"
fi
echo "ours: gobench ($parts)" >&2
GOMAXPROCS=2 "$out/gobench" -parts "$parts" >"$out/go.json"
load_after=$(cut -d' ' -f1 /proc/loadavg)
echo "load after: $load_after" >&2

"$py" - "$out" "$load_before" "$load_after" "$(nproc)" <<'EOF'
import json, sys
out = sys.argv[1]
load = max(float(sys.argv[2]), float(sys.argv[3]))
cores = int(sys.argv[4])
go = json.load(open(out + "/go.json"))
torch = json.load(open(out + "/torch.json"))
npy = json.load(open(out + "/numpy.json")).get("sgemm_gflops", {})
summary = {"load_average": load, "cores": cores}

def ratio(a, b):
    return a / b if a and b else None

rows = []
machine = max((v for k, v in npy.items() if "x" in k), default=None)
for part in ("gen", "train"):
    if part in go and part in torch:
        g, t = go[part], torch[part]
        r = {"ours_tokens_per_s": g["tokens_per_s"], "peer_tokens_per_s": t["tokens_per_s"],
             "ratio": ratio(g["tokens_per_s"], t["tokens_per_s"])}
        mult = 6 if part == "train" else 2
        if machine:
            r["ours_mfu"] = mult * g["params"] * g["tokens_per_s"] / (machine * 1e9)
            r["peer_mfu"] = mult * t["params"] * t["tokens_per_s"] / (machine * 1e9)
        summary[part] = r
        rows.append((part + " tokens/s", g["tokens_per_s"], t["tokens_per_s"], r["ratio"]))
if "sgemm_gflops" in go and npy:
    s = {"machine_gflops": machine, "openblas_core": npy.get("openblas_core")}
    for shape, v in go["sgemm_gflops"].items():
        p = npy.get(shape)
        s[shape] = {"ours": v, "numpy": p, "ratio": ratio(v, p), "fraction_of_machine": ratio(v, machine)}
        rows.append(("sgemm " + shape + " GFLOP/s", v, p, ratio(v, p)))
    summary["sgemm"] = s
json.dump(summary, open(out + "/summary.json", "w"), indent=1)

print("%-30s %12s %12s %8s" % ("workload", "ours", "peer", "ours/peer"))
for name, a, b, r in rows:
    print("%-30s %12.2f %12.2f %8.2f" % (name, a, b, r or 0))
if load > 0.75 * cores:
    # Both sides run 2 threads; on a busy machine OpenMP's barriers in
    # PyTorch suffer far more from preemption than Go's pool, so ratios
    # taken under load overstate our lead.
    print("WARNING: load average %.1f on %d cores: other work skews these figures" % (load, cores))
if machine:
    print("machine sgemm rate (numpy, %s): %.1f GFLOP/s" % (npy.get("openblas_core"), machine))
    for part in ("gen", "train"):
        if part in summary and "ours_mfu" in summary[part]:
            print("%s MFU: ours %.1f%%, peer %.1f%%" % (part, 100 * summary[part]["ours_mfu"], 100 * summary[part]["peer_mfu"]))
    if "sgemm" in summary:
        for shape in go["sgemm_gflops"]:
            print("ours sgemm %s: %.0f%% of machine rate" % (shape, 100 * summary["sgemm"][shape]["fraction_of_machine"]))
EOF
