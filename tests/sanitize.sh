#!/usr/bin/env bash
# tests/sanitize.sh — the sanitizer part of the suite: ASan+UBSan and TSan builds of the stress
# driver (tests/test_host_stress.c) and the fuzz driver (tests/fuzz/fuzz_api.c), each run for a
# bounded time on the real machine and on a synthetic 4-node machine; the host allocator's unit
# suites (bins, slabs, magazines, transfer, carve, the page map's publication, ledger window, host
# units, a FULL span's wake) through CTest in the same builds; and, where a clang with libFuzzer exists, the fuzz driver under libFuzzer with
# ASan+UBSan (else a visible skip).
# tests/run calls it after CTest; it prints one line per run and exits non-zero if any failed.
#
# usage: tests/sanitize.sh [--seconds N] [asan] [tsan] [libfuzzer]  (default: all, 20 s)
#   --seconds N  how long each fuzz run lasts (the stress runs are fixed in size)
#
# Only the drivers and the unit suites below are built (into build-asan/ and build-tsan/), not
# the whole tree. The drivers link the shared libnumaspan and call it by its nsp_* names: the
# sanitizer runtime comes first in the search order, so it keeps the process's malloc, and
# numaspan runs as a library beside it. The unit suites link libnumaspan.a, whose standard names
# a sanitizer build makes local (CMakeLists.txt), and reach numaspan through
# tests/sanitize_names.h: the same arrangement, so a suite's deliberate double frees are
# numaspan's to report, not the sanitizer's.
# Budget on CI's 2 CPUs: about 2 min of building and 5 min of running.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
seconds=20
kinds=()
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds)
      [[ "${2:-}" =~ ^[0-9]+$ ]] || { echo "tests/sanitize.sh: --seconds \"${2:-}\": not a number of seconds" >&2; exit 2; }
      seconds=$2; shift ;;
    asan|tsan|libfuzzer) kinds+=("$1") ;;
    *) echo "tests/sanitize.sh: unknown argument \"$1\" (usage: [--seconds N] [asan] [tsan] [libfuzzer])" >&2; exit 2 ;;
  esac
  shift
done
[ ${#kinds[@]} -gt 0 ] || kinds=(asan tsan libfuzzer)
werror=OFF
[ -n "${CI:-}" ] && werror=ON
jobs=$(nproc)
four="synthetic:pack:2 numa:2 core:4 pu:1"
failed=0

# run NAME TIMEOUT COMMAND...: one bounded run, its output kept in a log, one line of result.
run() {
  local name=$1 limit=$2; shift 2
  local log="$dir/sanitize-$name.log" t0=$SECONDS rc=0
  timeout --kill-after=10 "$limit" "$@" >"$log" 2>&1 || rc=$?
  if [ $rc = 0 ]; then
    printf 'sanitize: %-22s ok    %3ds  %s\n' "$name" $((SECONDS - t0)) "$(tail -1 "$log")"
  else
    failed=1
    [ $rc = 124 ] && echo "sanitize: $name: timed out after ${limit}s" >> "$log"
    printf 'sanitize: %-22s FAIL  %3ds  (exit %d; log %s)\n' "$name" $((SECONDS - t0)) $rc "$log"
    grep -m1 -E 'replay:|seed|Test unit written' "$log" || true
    tail -40 "$log" >&2
  fi
}

# units NAME REGEX: the unit suites CTest names by REGEX, in the sanitizer build's tree (their
# environment as tests/CMakeLists.txt registers them); one line of result, as run's. Check's
# per-test timeouts are a plain build's: a sanitizer's slows a case several times (test_span_carve's
# random carves took past its 4 s under ASan on a loaded CI machine), hence the multiplier.
units() {
  local name=$1 regex=$2
  run "$name" 600 env CK_TIMEOUT_MULTIPLIER=5 ctest --test-dir "$dir" -R "$regex" -j "$jobs" --output-on-failure --no-tests=error
}

# A clang whose -fsanitize=fuzzer links (clang plus its runtime, e.g. libclang-rt-14-dev), or "".
find_libfuzzer_cc() {
  local cc t
  t=$(mktemp -d)
  echo 'int LLVMFuzzerTestOneInput(const unsigned char *d, unsigned long n) { (void)d; (void)n; return 0; }' >"$t/t.c"
  for cc in clang clang-19 clang-18 clang-17 clang-16 clang-15 clang-14; do
    if command -v $cc >/dev/null && $cc -fsanitize=fuzzer,address,undefined "$t/t.c" -o "$t/t" 2>/dev/null; then
      rm -rf "$t"; echo $cc; return
    fi
  done
  rm -rf "$t"
}

for kind in "${kinds[@]}"; do
  cc=()
  targets=(test_host_stress fuzz_api)
  # the unit suites of the host allocator's own paths (bins, slabs, magazines, transfer, carve,
  # the page map's publication, ledger window, host units, a FULL span's wake)
  unit_targets=(test_bins test_bin_free test_slab test_magazine test_transfer test_span_carve
                test_span_protocol test_publish test_ledger_window test_host_units test_full_wake)
  case $kind in
    asan) san=address,undefined; targets+=("${unit_targets[@]}" test_xfree_stress) ;;
    tsan) san=thread; targets+=("${unit_targets[@]}") ;;
    libfuzzer)
      san=address,undefined,fuzzer-no-link
      targets=(fuzz_api_libfuzzer)
      c=$(find_libfuzzer_cc)
      if [ -z "$c" ]; then
        echo "sanitize: libfuzzer              SKIP  no clang with -fsanitize=fuzzer here (install clang and its libclang-rt-*-dev); the plain fuzz driver ran above"
        continue
      fi
      cc=(-DCMAKE_C_COMPILER=$c) ;;
  esac
  dir="$root/build-$kind"
  mkdir -p "$dir"
  if ! { cmake -S "$root" -B "$dir" "${cc[@]}" -DNSP_SANITIZE=$san -DNSP_WERROR=$werror &&
         cmake --build "$dir" -j "$jobs" --target "${targets[@]}"; } >"$dir/sanitize-build.log" 2>&1; then
    tail -30 "$dir/sanitize-build.log" >&2
    echo "sanitize: the $kind build failed (log: $dir/sanitize-build.log)" >&2
    failed=1
    continue
  fi
  stress="$dir/tests/test_host_stress" fuzz="$dir/tests/fuzz/fuzz_api"
  limit=$((seconds + 240))
  if [ $kind = libfuzzer ]; then
    # the corpus stays in the build tree, so that local runs build on each other
    mkdir -p "$dir/corpus"
    export ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
    run libfuzzer $limit "$dir/tests/fuzz/fuzz_api_libfuzzer" -max_total_time="$seconds" \
      -max_len=8192 -artifact_prefix="$dir/" "$dir/corpus"
    run libfuzzer-4node $limit env NSP_TOPOLOGY="$four" "$dir/tests/fuzz/fuzz_api_libfuzzer" \
      -max_total_time="$seconds" -max_len=8192 -artifact_prefix="$dir/" "$dir/corpus"
    unset ASAN_OPTIONS UBSAN_OPTIONS
  elif [ $kind = asan ]; then
    export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
    run asan-stress 300 "$stress" 8 100000
    run asan-stress-4node 300 env NSP_TOPOLOGY="$four" "$stress" 8 100000
    run asan-stress-foreign 300 env NSP_IDLE_RELEASE_MS=1 NSP_DEBUG=3 "$stress" 4 100000 foreign
    # the spans' remote-free lists (span.h); not under TSan, whose build has no bins and so no list
    run asan-xfree-stress 300 env NSP_IDLE_RELEASE_MS=1 NSP_DEBUG=3 "$dir/tests/test_xfree_stress" 4 4 100000
    run asan-fuzz $limit "$fuzz" --seconds "$seconds"
    run asan-fuzz-4node $limit env NSP_TOPOLOGY="$four" "$fuzz" --seconds "$seconds"
    units asan-units '^(test_bins|test_bin_free|test_bin_free_exact|test_slab|test_slab_virtual|test_magazine|test_transfer|test_transfer_exact|test_span_carve|test_span_protocol|test_publish|test_ledger_window|test_ledger_window_virtual|test_host_units|test_full_wake)$'
    echo "sanitize: asan-units             left out: test_span_protocol_secure (it writes past its objects on purpose: ASan's SEGV handler and UBSan's object-size check claim the faults it expects); test_host_units_4node (the budget: asan-stress-4node covers the nodes)"
    unset ASAN_OPTIONS UBSAN_OPTIONS
  else
    # history_size: enough history that both stacks of a race are restored; no deadlock detector:
    # it holds at most 64 locks, and stats, the recount and fork hold every central of a node.
    # No suppressions: the races found on the first runs (s->cache, stats' plain reads) are fixed.
    export TSAN_OPTIONS="halt_on_error=1:history_size=7:detect_deadlocks=0"
    run tsan-stress 300 "$stress" 4 50000
    run tsan-stress-4node 300 env NSP_TOPOLOGY="$four" "$stress" 4 50000
    run tsan-stress-foreign 300 env NSP_IDLE_RELEASE_MS=1 NSP_DEBUG=3 "$stress" 4 20000 foreign
    run tsan-fuzz $limit "$fuzz" --seconds "$seconds"
    run tsan-fuzz-4node $limit env NSP_TOPOLOGY="$four" "$fuzz" --seconds "$seconds"
    # The suites fork a child per test: tests/tsan.supp says why their one suppression exists.
    # No thread-leak reports: a child forked while a thread of the parent runs (test_host_units'
    # fork cases) is told at its _exit that the thread, which it never had, was not joined.
    # No bins, slabs or magazines in a TSan build (no rseq): their cases skip, each saying so;
    # what runs is the locked paths, the cross-cpu stresses and the ledger.
    export TSAN_OPTIONS="$TSAN_OPTIONS:report_thread_leaks=0:suppressions=$root/tests/tsan.supp"
    units tsan-units '^(test_bin_free|test_slab|test_magazine|test_transfer|test_span_carve|test_span_protocol|test_publish|test_ledger_window|test_ledger_window_virtual|test_host_units|test_full_wake)$'
    unset TSAN_OPTIONS
  fi
done
exit $failed
