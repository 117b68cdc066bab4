#!/usr/bin/env bash
# Offline vulnerability check: govulncheck against a Go vulnerability
# database built locally from the golang.org/x/vulndb module, which the Go
# module proxy serves (vuln.go.dev itself may be out of reach).
#
#   scripts/govulncheck.sh            build the database once per machine, then check ./...
#   scripts/govulncheck.sh --refresh  rebuild the database from the newest vulndb first
#
# Fails (exit 1) only on vulnerabilities that the code reaches in modules
# other than the standard library. Reachable standard-library findings are
# reported with the Go release that fixes them, without failing: they are
# fixed by moving the toolchain (GOTOOLCHAIN), not by a code change.
#
# Environment: TANDEM_VULNDB_DIR (default .tandem/vulndb) holds the database,
# the gendb binary and the last report.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$(pwd)"
cache="${TANDEM_VULNDB_DIR:-$root/.tandem/vulndb}"
case "$cache" in /*) ;; *) cache="$root/$cache" ;; esac
refresh=0
[ "${1:-}" = "--refresh" ] && refresh=1
start=$(date +%s)
say() { echo "govulncheck.sh: $*" >&2; }

# (a) govulncheck itself, from the module proxy when missing. It type-checks
# the standard library of the Go that runs it (GOTOOLCHAIN may pick a newer
# one than the installed Go), and a govulncheck built by an older Go cannot
# read a newer standard library, so the one used here is built by this Go
# and kept per Go version.
# The version is pinned: v1.10.0 (the module proxy's latest on 2026-12-07)
# type-checks the standard library at go.mod's language version and fails
# to load go1.27's ("generic method requires go1.27 or later"); v1.9.0
# checks this module under go1.27.3 as it should.
vulnversion=v1.9.0
goversion="$(go env GOVERSION)"
vulncheck="$cache/bin-$goversion-$vulnversion/govulncheck"
if [ ! -x "$vulncheck" ]; then
  say "installing govulncheck $vulnversion with $goversion (go install golang.org/x/vuln/cmd/govulncheck@$vulnversion)"
  mkdir -p "$cache/bin-$goversion-$vulnversion"
  GOFLAGS= GOBIN="$cache/bin-$goversion-$vulnversion" go install "golang.org/x/vuln/cmd/govulncheck@$vulnversion"
fi

# (b) the database, built once per machine (or on --refresh).
db="$cache/db"
if [ "$refresh" = 1 ] || [ ! -f "$db/index/db.json" ]; then
  mkdir -p "$cache"
  say "downloading golang.org/x/vulndb@latest from the module proxy"
  info="$(cd / && GOFLAGS= GOWORK=off go mod download -json golang.org/x/vulndb@latest)"
  field() { printf '%s\n' "$info" | sed -n "s/^[[:space:]]*\"$1\": \"\(.*\)\",\{0,1\}$/\1/p" | head -1; }
  moddir="$(field Dir)"; version="$(field Version)"
  [ -d "$moddir" ] || { say "go mod download gave no directory: $info"; exit 2; }
  src="$cache/src"
  rm -rf "$src" "$db.tmp"
  cp -R "$moddir" "$src"
  chmod -R u+w "$src"
  # gendb reads the reports through git: make the copy a repository.
  ( cd "$src" && git init -q && git add -A \
      && git -c user.name=tandem -c user.email=tandem@localhost -c commit.gpgsign=false \
           commit -q -m "golang.org/x/vulndb $version" )
  say "building gendb ($version)"
  ( cd "$src" && GOFLAGS=-mod=mod go build -o "$cache/gendb" ./cmd/gendb )
  say "generating the v1 database (several minutes)"
  "$cache/gendb" -repo "$src" -out "$db.tmp"
  rm -rf "$db"; mv "$db.tmp" "$db"
  echo "$version" > "$cache/VERSION"
  rm -rf "$src"
  say "database $version ready in $db ($(( $(date +%s) - start ))s)"
fi
say "database: golang.org/x/vulndb $(cat "$cache/VERSION" 2>/dev/null || echo unknown), $db"

# (c) the check. JSON goes to a file; scripts/vulnreport classifies it.
out="$cache/last.json"
set +e
GOFLAGS=-mod=mod "$vulncheck" -db "file://$db" -format json ./... > "$out"
rc=$?
set -e
# With -format json govulncheck exits 0 whatever it finds; non-zero means it
# could not run (a build error, an unreadable database).
if [ "$rc" -ne 0 ]; then
  say "govulncheck failed to run (exit $rc); output in $out"
  exit 2
fi
set +e
GOFLAGS=-mod=mod go run ./scripts/vulnreport < "$out"
rc=$?
set -e
say "done in $(( $(date +%s) - start ))s (report: $out)"
exit $rc
