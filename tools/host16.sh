#!/usr/bin/env bash
# tools/host16.sh — issue 11's many-core host table in one run: builds numaspan from what the
# machine has (as tools/gpu_check.sh does: prepare .gpu/ with tools/gpu_pack.sh for a machine
# without hwloc's or OpenCL's headers), then runs `numaspan bench host` with every shape of the
# README's host table at THREADS threads (default: the machine's cpus, then 2 and 32), all five
# allocators; a peer that is not installed leaves its column empty. The table goes to $OUT (or
# results/host-many) and to stdout.
#
# usage: tools/host16.sh [--quick]   (--quick: one repetition, for trying the script anywhere)
#   THREADS=16,32 REPS=5: what to run (defaults: nproc,2,32 and 5)
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-results/host-many}
mkdir -p "$out"
t0=$(date +%s)
say() { echo "== [$(( $(date +%s) - t0 ))s] $*"; }
reps=${REPS:-5}
[ "${1:-}" = --quick ] && reps=1
threads=${THREADS:-$(nproc),2,32}

cl_lib=$(ldconfig -p | awk '/libOpenCL\.so(\.1)? / {print $NF; exit}')
hw_lib=$(ldconfig -p | awk '/libhwloc\.so(\.15)? / {print $NF; exit}')
args=(-DCMAKE_BUILD_TYPE=RelWithDebInfo -DNSP_BUILD_TESTS=OFF)
[ -f /usr/include/hwloc.h ] || args+=(-DNSP_HWLOC_INCLUDE="$PWD/.gpu/include" -DNSP_HWLOC_LIB="$hw_lib")
[ -f /usr/include/CL/cl.h ] || args+=(-DOpenCL_INCLUDE_DIR="$PWD/.gpu/include")
[ -n "$cl_lib" ] && args+=(-DOpenCL_LIBRARY="$cl_lib")
say "building: cmake ${args[*]}"
if ! { cmake -S . -B build-host16 "${args[@]}" > "$out/build.log" 2>&1 &&
       cmake --build build-host16 -j"$(nproc)" --target numaspan numaspan_tool bench_host \
         >> "$out/build.log" 2>&1; }; then
  tail -20 "$out/build.log"
  say "the build failed (log above)"
  exit 1
fi
say "machine: $(nproc) cpus, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-)"
for lib in libjemalloc.so.2 libmimalloc.so.2 libtcmalloc_minimal.so.4; do
  ldconfig -p | grep -q "$lib" || say "peer $lib not installed here: its column stays empty"
done
shapes=pairs-16,pairs-64,pairs-256,loops,larson,prodcons,mixed
say "numaspan bench host --cpu-clock --only $shapes --threads $threads --reps $reps"
build-host16/numaspan bench host --cpu-clock --only "$shapes" --threads "$threads" --reps "$reps" \
  --allocators glibc,jemalloc,mimalloc,tcmalloc,numaspan | tee "$out/host.txt"
rc=${PIPESTATUS[0]}
say "done (rc $rc): $out/host.txt"
exit "$rc"
