#!/usr/bin/env bash
# Installs the CUDA 11.8 build toolchain into a cache folder, once per
# machine, without touching the system's apt sources or dpkg database:
#
#   - cuda.h, the other CUDA headers and the stub libcuda.so (link time only)
#     from Debian bookworm's non-free nvidia-cuda-dev;
#   - nvcc, cicc and ptxas from nvidia-cuda-toolkit, which compile
#     gpu/kernels/*.cu to PTX and check the PTX assembles, with no GPU;
#   - gcc-11/g++-11 from bookworm main: nvcc 11.8 preprocesses with a host
#     compiler and supports gcc <= 11 (the system's gcc 12 also works with
#     -allow-unsupported-compiler; a pinned, supported one keeps the PTX
#     independent of the machine's gcc).
#
# It runs apt-get with a private configuration (its own sources list with
# "bookworm main non-free" from the mirror the machine already uses, its own
# package lists and archive folder), `apt-get download`s the .debs and
# unpacks them with dpkg-deb into the cache. From nvidia-cuda-dev (a 774 MB
# .deb holding 2.8 GB, mostly static libraries) only the headers and the
# driver stub are unpacked; the .debs are deleted afterwards.
#
# Usage: scripts/cuda-deps.sh [--print-env]
#   With --print-env it prints (after installing when missing) the shell
#   assignments the other CUDA scripts source: CUDA_ROOT, NVCC, PTXAS,
#   CUDA_HOSTCXX, CGO_CFLAGS, CGO_LDFLAGS.
# Environment: TANDEM_CUDA_CACHE (default ~/.cache/tandem/cuda).
set -euo pipefail
cache="${TANDEM_CUDA_CACHE:-$HOME/.cache/tandem/cuda}"
root="$cache/root"
stamp="$cache/installed"
# Bump when the package set or the layout of the cache changes.
layout=1
packages=(nvidia-cuda-dev nvidia-cuda-toolkit gcc-11 g++-11 cpp-11 gcc-11-base libgcc-11-dev libstdc++-11-dev)
say() { echo "cuda-deps: $*" >&2; }

print_env() {
	cat <<EOF
CUDA_ROOT='$root'
NVCC='$root/usr/lib/nvidia-cuda-toolkit/bin/nvcc'
PTXAS='$root/usr/bin/ptxas'
CUDA_HOSTCXX='$root/usr/bin/g++-11'
CGO_CFLAGS='-I$root/usr/include'
CGO_LDFLAGS='-L$root/usr/lib/x86_64-linux-gnu/stubs'
EOF
}

if [ -f "$stamp" ] && [ "$(head -1 "$stamp")" = "layout $layout" ]; then
	[ "${1:-}" = "--print-env" ] && print_env
	exit 0
fi

case "$(dpkg --print-architecture 2>/dev/null || echo unknown)" in
amd64) ;;
*) say "only amd64 Debian/Ubuntu machines are supported (dpkg says $(dpkg --print-architecture 2>/dev/null || echo none))"; exit 1 ;;
esac

# The mirror: the first Debian URI the machine's own sources use for
# bookworm (deb822 .sources or one-line .list), else deb.debian.org.
mirror=""
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
for f in /etc/apt/sources.list.d/*.sources; do
	[ -f "$f" ] || continue
	# Stanzas are separated by blank lines; take one whose Suites name bookworm.
	m=$(awk 'BEGIN { RS = ""; FS = "\n" }
	{
		uri = ""; ok = 0
		for (i = 1; i <= NF; i++) {
			if ($i ~ /^URIs:/) { split($i, a, /[ \t]+/); uri = a[2] }
			if ($i ~ /^Suites:/) { n = split($i, s, /[ \t]+/); for (j = 2; j <= n; j++) if (s[j] == "bookworm") ok = 1 }
		}
		if (ok && uri != "") { print uri; exit }
	}' "$f")
	if [ -n "$m" ]; then mirror="$m"; break; fi
done
if [ -z "$mirror" ]; then
	for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
		[ -f "$f" ] || continue
		m=$(awk '$1=="deb" { for (i=2;i<=NF;i++) if ($i !~ /^\[/) { if ($(i+1)=="bookworm") { print $i; exit } break } }' "$f")
		if [ -n "$m" ]; then mirror="$m"; break; fi
	done
fi
mirror="${mirror:-http://deb.debian.org/debian}"

start=$(date +%s)
say "installing the CUDA 11.8 toolchain into $cache (mirror $mirror, bookworm main non-free)"
rm -rf "$root" "$cache/apt/archives"
mkdir -p "$cache/apt/lists/partial" "$cache/apt/cache/archives/partial" "$cache/apt/etc" "$cache/debs" "$root"
echo "deb [signed-by=$keyring] $mirror bookworm main non-free" >"$cache/apt/etc/sources.list"
apt_opts=(
	-o "Dir::Etc::SourceList=$cache/apt/etc/sources.list"
	-o "Dir::Etc::SourceParts=$cache/apt/etc/none"
	-o "Dir::State::Lists=$cache/apt/lists"
	-o "Dir::Cache=$cache/apt/cache"
	-o "Dir::Cache::pkgcache=" -o "Dir::Cache::srcpkgcache="
	-o "APT::Sandbox::User=root"
	-o "Debug::NoLocking=1"
)
apt-get "${apt_opts[@]}" -qq update
(cd "$cache/debs" && rm -f ./*.deb && apt-get "${apt_opts[@]}" -qq download "${packages[@]}")
downloaded=$(du -sm "$cache/debs" | cut -f1)

for deb in "$cache"/debs/*.deb; do
	case "$(basename "$deb")" in
	nvidia-cuda-dev_*)
		dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$root" --wildcards './usr/include/*' './usr/lib/x86_64-linux-gnu/stubs/libcuda.so'
		;;
	*) dpkg-deb -x "$deb" "$root" ;;
	esac
done

# nvcc reads nvcc.profile beside its binary; Debian's is a link to
# /etc/nvcc.profile with absolute /usr paths. Point it into the cache.
bin="$root/usr/lib/nvidia-cuda-toolkit/bin"
rm -f "$bin/nvcc.profile"
cat >"$bin/nvcc.profile" <<'EOF'
NVVMIR_LIBRARY_DIR = $(_HERE_)/../libdevice
PATH += $(_HERE_):$(_HERE_)/../../../bin:
INCLUDES += "-I$(_HERE_)/../../../include" $(_SPACE_)
EOF

# Check the pieces run from here.
"$root/usr/bin/g++-11" --version >/dev/null || { say "the unpacked g++-11 does not run"; exit 1; }
probe=$(mktemp -d)
trap 'rm -rf "$probe"' EXIT
printf '%s\n' '#include <mma.h>' 'extern "C" __global__ void probe(float *x) { x[threadIdx.x] *= 2.f; }' >"$probe/probe.cu"
"$bin/nvcc" -ccbin "$root/usr/bin/g++-11" -ptx -arch=compute_80 -o "$probe/probe.ptx" "$probe/probe.cu"
"$root/usr/bin/ptxas" -arch=sm_80 -o "$probe/probe.cubin" "$probe/probe.ptx"
[ -f "$root/usr/include/cuda.h" ] && [ -f "$root/usr/lib/x86_64-linux-gnu/stubs/libcuda.so" ] || { say "cuda.h or the libcuda stub is missing"; exit 1; }

versions=$(for deb in "$cache"/debs/*.deb; do dpkg-deb -f "$deb" Package Version | sed 's/^[^:]*: //' | paste -sd'=' -; done)
rm -rf "$cache/debs" "$cache/apt/cache"
size=$(du -sm "$root" | cut -f1)
{
	echo "layout $layout"
	echo "mirror $mirror"
	echo "downloaded_mb $downloaded"
	echo "unpacked_mb $size"
	echo "seconds $(($(date +%s) - start))"
	echo "$versions"
} >"$stamp"
say "done in $(($(date +%s) - start))s: downloaded ${downloaded} MB, ${size} MB unpacked in $root"
[ "${1:-}" = "--print-env" ] && print_env
exit 0
