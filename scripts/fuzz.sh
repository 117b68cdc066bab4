#!/usr/bin/env bash
# Runs every go fuzz target of the repository for a bounded time, one after
# another, and prints a summary table. Usage: scripts/fuzz.sh [seconds-per-target]
# (default 30). FUZZ_PARALLEL sets the fuzzing workers per target (default 1,
# so a shared machine stays usable); FUZZ_MATCH, a grep -E pattern, picks
# targets by "package name" (e.g. FUZZ_MATCH='jobs|Safetensors'). Exits non-zero if any target failed; a
# failing input is saved under the package's testdata/fuzz/<Target>/, which
# makes it a regression test of the next plain `go test`.
set -uo pipefail
cd "$(dirname "$0")/.."
export GOFLAGS="${GOFLAGS:--mod=mod}"
secs="${1:-30}"
par="${FUZZ_PARALLEL:-1}"
match="${FUZZ_MATCH:-.}"
case "$secs" in ''|*[!0-9]*) echo "usage: $0 [seconds-per-target]" >&2; exit 2 ;; esac

# Targets are found, not listed, so a new *_fuzz_test.go is picked up at once.
mapfile -t targets < <(grep -l --include='*_fuzz_test.go' -r '^func Fuzz' . \
  | grep -v '^./\.' | sort | while read -r f; do
      pkg="./$(dirname "${f#./}")"
      grep -o '^func Fuzz[A-Za-z0-9_]*' "$f" | sed "s|^func |$pkg |"
    done | grep -E -- "$match")
if [ "${#targets[@]}" -eq 0 ]; then
  echo "no fuzz targets found" >&2
  exit 1
fi

log_dir="$(mktemp -d)"
declare -a rows
failed=0
for t in "${targets[@]}"; do
  pkg="${t% *}"; name="${t#* }"
  log="$log_dir/$(echo "$pkg" | tr '/.' '__')-$name.log"
  start=$(date +%s)
  if go test -run '^$' -fuzz "^${name}\$" -fuzztime "${secs}s" -parallel "$par" "$pkg" >"$log" 2>&1; then
    result=ok
  else
    result=FAIL; failed=1
  fi
  took=$(( $(date +%s) - start ))
  execs=$(grep -o 'execs: [0-9]*' "$log" | tail -1 | awk '{print $2}')
  rows+=("$(printf '%-12s %-30s %6s %7s %10s  %s' "$pkg" "$name" "$secs" "$took" "${execs:--}" "$result")")
  echo "$(date -u +%H:%M:%S) $pkg $name: $result (${took}s)"
  if [ "$result" = FAIL ]; then
    sed -n '1,40p' "$log" | sed 's/^/    /'
  fi
done

echo
printf '%-12s %-30s %6s %7s %10s  %s\n' package target fuzz-s wall-s execs result
for r in "${rows[@]}"; do echo "$r"; done
echo "logs: $log_dir"
exit $failed
