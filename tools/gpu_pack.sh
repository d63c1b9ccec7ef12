#!/usr/bin/env bash
# tools/gpu_pack.sh — prepares .gpu/ (git-ignored) for tools/gpu_check.sh on a GPU machine that
# has no Debian -dev packages and no Check (PLATFORM.md, "The NVIDIA GPU machine"): the hwloc and
# OpenCL headers (so that the project builds there from source), and binaries built here (x86-64,
# used only if that build fails; test_device with its libsubunit, since Check is not there).
# usage: tools/gpu_pack.sh [BUILD_DIR]   (default: build)
set -euo pipefail
cd "$(dirname "$0")/.."
b=${1:-build}
[ -x "$b/bench/bench_device" ] || { echo "gpu_pack: build first (bash tools/build.sh)" >&2; exit 1; }
rm -rf .gpu
mkdir -p .gpu/include .gpu/bin .gpu/lib
cp -r /usr/include/hwloc.h /usr/include/hwloc /usr/include/CL .gpu/include/
cp "$b/numaspan" "$b/bench/bench_device" .gpu/bin/
[ -x "$b/tests/test_device" ] && cp "$b/tests/test_device" .gpu/bin/
cp -L "$b/libnumaspan.so.0" "$b/libnumaspan_cl.so.0" .gpu/lib/
cp -L /lib/x86_64-linux-gnu/libsubunit.so.0 .gpu/lib/ 2>/dev/null || true
du -sh .gpu
