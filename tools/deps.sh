#!/usr/bin/env bash
# tools/deps.sh — install the Debian packages numaspan needs, when they are missing.
#
# usage: tools/deps.sh [build|test|experiments]   (default: test)
# Checks each package with dpkg and runs `apt-get update` + `apt-get install` only for the missing
# ones, so a second run costs nothing. Needs root (or sudo) only when something is missing.
set -euo pipefail

want=${1:-test}
# OpenCL: the device heap's headers and ICD loader (its tests and benchmarks run on POCL)
pkgs=(build-essential cmake pkg-config libhwloc-dev hwloc libnuma-dev ocl-icd-opencl-dev opencl-headers)
case "$want" in
  build) ;;
  test)
    # check: unit tests;
    # python3 + matplotlib: the experiment scripts and their test; Open MPI: the MPI experiment's
    # test (2 ranks); POCL: the device heap's tests; clang + its runtimes: the libFuzzer build of
    # the fuzz driver and the clang-built option tests (tests/sanitize.sh, test_process).
    pkgs+=(check python3 python3-matplotlib openmpi-bin libopenmpi-dev pocl-opencl-icd
           clang libclang-rt-14-dev)
    # the real-program suite (tests/real): the programs it preloads numaspan into, and python's
    # own tests for the python3 this machine has (Debian 12: 3.11)
    pytests=libpython3.11-testsuite
    [ -x /usr/bin/python3 ] && pytests=lib$(/usr/bin/python3 -c 'import sys; print("python%d.%d" % sys.version_info[:2])')-testsuite
    pkgs+=(sqlite3 git g++ perl xz-utils tar time redis-server redis-tools "$pytests") ;;
  experiments)
    # the peer allocators of the host benchmarks
    pkgs+=(check python3 python3-matplotlib openmpi-bin libopenmpi-dev pocl-opencl-icd
           libjemalloc2 libmimalloc2.0 libtcmalloc-minimal4) ;;
  *) echo "tools/deps.sh: unknown set \"$want\" (expected build, test or experiments)" >&2; exit 2 ;;
esac

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "numaspan: installing missing Debian packages: ${missing[*]}" >&2
sudo=()
if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null || { echo "tools/deps.sh: not root and no sudo; install: ${missing[*]}" >&2; exit 1; }
  sudo=(sudo)
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
