#!/usr/bin/env bash
# tools/build.sh — configure and build numaspan into build/ (used by tests/run and experiments/run).
# Warnings are errors when CI is set (CI=true), as in CI.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
werror=OFF
[ -n "${CI:-}" ] && werror=ON
cmake -S "$root" -B "$root/build" -DNSP_WERROR=$werror >"$root/build.log" 2>&1 \
  || { cat "$root/build.log" >&2; exit 1; }
cmake --build "$root/build" -j "$(nproc)" >>"$root/build.log" 2>&1 \
  || { tail -50 "$root/build.log" >&2; exit 1; }
