#!/usr/bin/env bash
# tools/gpu_check.sh — the device heap on an NVIDIA GPU machine, in one run of under 5 minutes:
# builds numaspan there from what the machine has, then runs the device test suite (the binary
# carried in .gpu/, since Check is not there), the cross-work-group litmus test of the ordering
# shim, the PTX check, and `numaspan bench device` (table and JSON). Results go to $OUT (or
# results/device-gpu). Prepare .gpu/ here first with tools/gpu_pack.sh.
#
# NVIDIA's OpenCL is installed but not registered there (PLATFORM.md): it is registered for this
# run in a private vendors folder (OCL_ICD_VENDORS), and NSP_CL_DEVICE picks it (POCL may be
# platform 0 there: the device heap never assumes platform 0).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-results/device-gpu}
mkdir -p "$out"
t0=$(date +%s)
say() { echo "== [$(( $(date +%s) - t0 ))s] $*"; }

nv=$(ldconfig -p | awk '/libnvidia-opencl\.so\.1/ {print $NF; exit}')
if [ -n "$nv" ]; then
  mkdir -p /tmp/nsp-icd
  echo "$nv" > /tmp/nsp-icd/nvidia.icd
  export OCL_ICD_VENDORS=/tmp/nsp-icd
  export NSP_CL_DEVICE=${NSP_CL_DEVICE:-NVIDIA}
  say "NVIDIA OpenCL: $nv"
else
  say "no libnvidia-opencl.so.1: running on whatever OpenCL device there is"
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | sed 's/^/   GPU: /'

# ---- build from source with what the machine has ------------------------------------------------
bin=""
cl_lib=$(ldconfig -p | awk '/libOpenCL\.so(\.1)? / {print $NF; exit}')
hw_lib=$(ldconfig -p | awk '/libhwloc\.so(\.15)? / {print $NF; exit}')
args=(-DCMAKE_BUILD_TYPE=Release -DNSP_BUILD_TESTS=OFF)
[ -f /usr/include/hwloc.h ] || args+=(-DNSP_HWLOC_INCLUDE="$PWD/.gpu/include" -DNSP_HWLOC_LIB="$hw_lib")
[ -f /usr/include/CL/cl.h ] || args+=(-DOpenCL_INCLUDE_DIR="$PWD/.gpu/include")
[ -n "$cl_lib" ] && args+=(-DOpenCL_LIBRARY="$cl_lib")
say "building: cmake ${args[*]}"
if cmake -S . -B build-gpu "${args[@]}" > "$out/build.log" 2>&1 &&
   cmake --build build-gpu -j"$(nproc)" --target numaspan_tool bench_device >> "$out/build.log" 2>&1; then
  bin=build-gpu/bench
  say "built here"
else
  tail -20 "$out/build.log"
  if [ -x .gpu/bin/bench_device ]; then
    bin=.gpu/bin
    export LD_LIBRARY_PATH=$PWD/.gpu/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
    say "the build failed (log above): using the binaries carried in .gpu/"
  else
    say "the build failed and no binaries were carried"; exit 1
  fi
fi

rc=0
# ---- the test suite on the GPU ------------------------------------------------------------------
if [ -x .gpu/bin/test_device ]; then
  say "test_device (Check, carried binary) on the GPU"
  ( export LD_LIBRARY_PATH=$PWD/.gpu/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} CK_DEFAULT_TIMEOUT=120
    timeout 150 .gpu/bin/test_device ) 2>&1 | tail -25 | tee "$out/test_device.txt"
  [ "${PIPESTATUS[0]}" = 0 ] || rc=1
fi
# ---- litmus and PTX -------------------------------------------------------------------------------
say "litmus test of the ordering shim"
timeout 60 "$bin/bench_device" --litmus --iters 100000 2>&1 | tee "$out/litmus.txt" || rc=1
say "PTX check"
timeout 60 "$bin/bench_device" --ptx "$out/device.ptx" 2>&1 | tee "$out/ptx.txt" || rc=1
# ---- the benchmarks -------------------------------------------------------------------------------
say "numaspan bench device"
timeout 200 "$bin/bench_device" --reps ${REPS:-20} --json-out "$out/device.json" 2>&1 | tee "$out/device.txt"
[ "${PIPESTATUS[0]}" = 0 ] || rc=1
for s in 128 256 1024; do
  say "slots per class: $s (mixed sizes and fragmentation)"
  timeout 60 "$bin/bench_device" --reps 10 --slots $s --only mixed,frag 2>&1 | tee -a "$out/slots.txt"
done
say "done (rc $rc)"
exit $rc
