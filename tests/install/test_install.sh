#!/usr/bin/env bash
# tests/install/test_install.sh — install numaspan into a fresh prefix and build an outside
# application against it twice: with find_package(numaspan) (shared and static targets) and with
# pkg-config (shared, and static with --static). Each binary must run and see 4 nodes. With the
# device heap built, an OpenCL program on numaspan_cl too, both ways. Every installed benchmark
# runs through the installed tool (`numaspan bench pacer|device|host --quick`, each cut to one
# small run).
# usage: [POCL_CACHE_DIR=DIR] test_install.sh <numaspan build dir> <this folder>
set -eu
build=$1 here=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
prefix=$work/prefix
cmake --install "$build" --prefix "$prefix" >/dev/null
for f in bin/numaspan lib/libnumaspan.so lib/libnumaspan.a include/numaspan.h \
         lib/pkgconfig/numaspan.pc lib/cmake/numaspan/numaspanConfig.cmake; do
  [ -e "$prefix/$f" ] || { echo "FAIL: $f not installed"; exit 1; }
done
want="nodes=4 caches=16"
check() { local out; out=$("$@"); case "$out" in "$want"*) echo "ok: $*";; *) echo "FAIL: $* printed '$out'"; exit 1;; esac; }

# the installed tool runs from its prefix (RPATH to ../lib)
"$prefix/bin/numaspan" topo --topology "synthetic:pack:2 numa:2 core:4 pu:1" | grep -q "nodes:      4"
echo "ok: installed numaspan tool"

# POCL's kernel cache: CTest's (the build tree's, which test_device and test_bench_device share;
# an entry is keyed by the program's source, options and device, so a warm one is the same
# program), else one of our own. With a cold cache of its own and the benches' --quick sweeps
# below, the test took 27 s of CPU (68 s at load 13 on 2 CPUs; 86-260 s in CTest under load);
# now 7 s with a cold cache, 2-4 s with CTest's.
pocl=${POCL_CACHE_DIR:-$work/pocl}

# every installed benchmark runs from its prefix (libexec/numaspan, RUNPATH to the prefix's lib):
# nothing on LD_LIBRARY_PATH may find the library for it. What runs is what shows that: each cut
# to one small run (pacer: one seed, 2 caches, 1 MiB live, its 3 modes; device: one case of 1024
# work-items; host: two allocators, one rep, short runs). Their --quick sweeps took 12 s of CPU
# (pacer, 54 runs), 4-10 s (device, its program cached or compiled) and 30 s of wall (host);
# device runs where OpenCL has no device too (it says so and exits 0).
benches=0
for b in pacer device host; do
  [ -x "$prefix/libexec/numaspan/bench_$b" ] || continue
  args=(--quick --reps 1)
  [ "$b" = pacer ] && args+=(--caches 2 --live 1M)
  [ "$b" = device ] && args+=(--only one --max-n 1024 --heap-mib 64)
  [ "$b" = host ] && args+=(--seconds 0.05 --allocators glibc,numaspan)
  if ! out=$(env -u LD_LIBRARY_PATH POCL_CACHE_DIR="$pocl" \
             "$prefix/bin/numaspan" bench "$b" "${args[@]}" 2>&1); then
    echo "FAIL: installed numaspan bench $b ${args[*]}:"; echo "$out" | tail -5; exit 1
  fi
  # bench host runs without the library it compares (an empty column, exit 0): it must have it
  if [ "$b" = host ] && echo "$out" | grep -q "numaspan not found"; then
    echo "FAIL: installed numaspan bench host did not find the installed library:"
    echo "$out" | grep "not found"; exit 1
  fi
  echo "ok: installed numaspan bench $b"
  benches=$((benches + 1))
done
[ "$benches" -ge 2 ] || { echo "FAIL: only $benches benchmarks installed"; exit 1; }

# CMake package
cmake -S "$here/app" -B "$work/app" -DCMAKE_PREFIX_PATH="$prefix" >/dev/null
cmake --build "$work/app" >/dev/null
LD_LIBRARY_PATH=$prefix/lib check "$work/app/app_shared"
check "$work/app/app_static"
if ldd "$work/app/app_static" | grep -q libnumaspan; then echo "FAIL: app_static links libnumaspan.so"; exit 1; fi

# pkg-config
export PKG_CONFIG_PATH=$prefix/lib/pkgconfig
cc -o "$work/pc_shared" "$here/app/main.c" $(pkg-config --cflags --libs numaspan)
LD_LIBRARY_PATH=$prefix/lib check "$work/pc_shared"
# static: what `pkg-config --static` lists must be enough to link libnumaspan.a
cc -o "$work/pc_static" "$here/app/main.c" $(pkg-config --cflags numaspan) \
   $(pkg-config --static --libs numaspan | sed 's/-lnumaspan\b/-l:libnumaspan.a/')
check "$work/pc_static"
# the device heap: CMake target and pkg-config, built and run (a machine without an OpenCL
# device still builds and links; the program says it skipped the run)
if [ -e "$prefix/lib/pkgconfig/numaspan_cl.pc" ]; then
  for f in lib/libnumaspan_cl.so include/numaspan_cl.h include/numaspan_geometry.h; do
    [ -e "$prefix/$f" ] || { echo "FAIL: $f not installed"; exit 1; }
  done
  cc -o "$work/pc_cl" "$here/app/cl_main.c" $(pkg-config --cflags --libs numaspan_cl)
  for b in "$work/app/app_cl" "$work/pc_cl"; do
    out=$(LD_LIBRARY_PATH=$prefix/lib POCL_CACHE_DIR=$pocl "$b")
    case "$out" in "device ok"|"device skipped"*) echo "ok: $b: $out";;
      *) echo "FAIL: $b printed '$out'"; exit 1;; esac
  done
  echo "$((6 + benches)) passed, 0 failed"
  exit 0
fi
echo "$((4 + benches)) passed, 0 failed"
