#!/usr/bin/env bash
# Runs every go fuzz target of the repository for a bounded time, one after
# another, and prints a summary table. Usage: scripts/fuzz.sh [seconds-per-target]
# (default 30; .ci/run runs 3; "3s" works too). FUZZ_PARALLEL sets the fuzzing workers per target
# (default 1, so a shared machine stays usable); FUZZ_MATCH, a grep -E
# pattern, picks targets by "package name" (e.g. FUZZ_MATCH='jobs|Safetensors').
#
# Each package's test binary is built once, with the fuzzing instrumentation
# (`go test -c -fuzz`), and run from the package's directory for each of its
# targets, as `go test -fuzz` would run it. The corpus the fuzzer grows is
# kept in $(go env GOCACHE)/fuzz, where `go test -fuzz` keeps it, so every
# run continues from the last.
#
# Exits non-zero if any target failed. A failing input is written under the
# package's testdata/fuzz/<Target>/, which makes it a regression test of the
# next plain `go test`; the failure's log says which file and how to rerun it.
set -uo pipefail
cd "$(dirname "$0")/.."
export GOFLAGS="${GOFLAGS:--mod=mod}"
secs="${1:-30}"
secs="${secs%s}" # 3 or 3s
par="${FUZZ_PARALLEL:-1}"
match="${FUZZ_MATCH:-.}"
case "$secs" in ''|*[!0-9]*) echo "usage: $0 [seconds-per-target]" >&2; exit 2 ;; esac
case "$par" in ''|*[!0-9]*|0) echo "FUZZ_PARALLEL: want a positive number" >&2; exit 2 ;; esac

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

work="$(mktemp -d)"
cache="$(go env GOCACHE)/fuzz"
declare -a rows
failed=0
built=""
bin=""
for t in "${targets[@]}"; do
  pkg="${t% *}"; name="${t#* }"
  log="$work/$(echo "$pkg" | tr '/.' '__')-$name.log"
  start=$(date +%s)
  if [ "$pkg" != "$built" ]; then
    # One instrumented build per package; -fuzz names a target only so that
    # go test instruments the build for fuzzing.
    [ -n "$bin" ] && rm -f "$bin" # one binary on disk at a time (tens of MB each)
    bin="$work/$(echo "$pkg" | tr '/.' '__').test"
    if ! go test -c -o "$bin" -fuzz "^${name}\$" "$pkg" >"$work/build.log" 2>&1; then
      echo "$(date -u +%H:%M:%S) $pkg: build FAILED"
      sed -n '1,40p' "$work/build.log" | sed 's/^/    /'
      rows+=("$(printf '%-12s %-30s %6s %7s %10s  %s' "$pkg" "(build)" - "$(( $(date +%s) - start ))" - FAIL)")
      failed=1; built=""; continue
    fi
    built="$pkg"
  fi
  import="$(go list "$pkg")"
  if (cd "$pkg" && "$bin" -test.run '^$' -test.fuzz "^${name}\$" -test.fuzztime "${secs}s" \
        -test.parallel "$par" -test.fuzzcachedir "$cache/$import" -test.timeout 10m) >"$log" 2>&1; then
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
    crasher=$(grep -o 'testdata/fuzz/[A-Za-z0-9_]*/[0-9a-f]*' "$log" | head -1)
    if [ -n "$crasher" ]; then
      echo "    failing input: ${pkg#./}/$crasher; rerun with: go test -run '${name}/$(basename "$crasher")' $pkg"
      # The file itself, so that a run on another machine (CI) can be
      # reproduced from its log: save these lines under the same name.
      echo "    --- ${pkg#./}/$crasher (first 4 KiB) ---"
      head -c 4096 "$pkg/$crasher" | sed 's/^/    /'
      echo
    fi
  fi
done

[ -n "$bin" ] && rm -f "$bin"
echo
printf '%-12s %-30s %6s %7s %10s  %s\n' package target fuzz-s wall-s execs result
for r in "${rows[@]}"; do echo "$r"; done
echo "logs: $work"
exit $failed
