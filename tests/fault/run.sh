#!/usr/bin/env bash
# tests/fault/run.sh — drives fault_prog under faults (CTest entries of tests/fault/CMakeLists.txt).
#
# usage: run.sh FAULT_PROG inject FAULT_INJECT_SO [init] [recover]
#            a count run finds the K calls numaspan makes to mmap/mremap/madvise/mbind in
#            `fault_prog ops` (after initialisation; "init": from the start of the process); then for N = 1..K the program runs with call N failing ("once"),
#            and with every call from N on failing ("from"). Each run must exit 0: NULL with
#            ENOMEM or success, never a crash or a corrupted object. "recover": in the once runs,
#            a second round after the fault must succeed entirely; with "init", a refusal of
#            call 2 for good must be retried, but only a bounded number of times.
#        run.sh FAULT_PROG ulimit KIB A B    fault_prog ulimit A B under `ulimit -v KIB`
#        run.sh FAULT_PROG fork | stop [strict]   fault_prog fork | stop [strict]
#        run.sh FAULT_PROG exit     fault_prog exit (pthread_exit from main) must end within 20 s
set -euo pipefail
prog=$1 what=$2
shift 2
case "$what" in
  inject)
    so=$1
    shift
    recover= init=0
    for a in "$@"; do
      case $a in
        recover) recover=recover ;;
        init) init=1 ;;
        *) echo "run.sh: inject: unknown argument \"$a\" (init, recover)" >&2; exit 2 ;;
      esac
    done
    export FAULTINJ_INIT=$init
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    FAULTINJ_COUNT=$tmp/count LD_PRELOAD=$so "$prog" ops >/dev/null \
      || { echo "run.sh: fault_prog ops fails with no fault injected" >&2; exit 1; }
    k=$(cat "$tmp/count")
    if [ "$k" -lt 5 ]; then
      echo "run.sh: only $k calls of numaspan's were seen: is the interposer working?" >&2
      exit 1
    fi
    bad=0
    for mode in once from; do
      arg=
      [ $mode = once ] && arg=$recover
      for n in $(seq 1 "$k"); do
        rc=0
        FAULTINJ_AT=$n FAULTINJ_MODE=$mode LD_PRELOAD=$so timeout 60 "$prog" ops $arg \
          >"$tmp/out" 2>&1 || rc=$?
        if [ $rc != 0 ]; then
          bad=$((bad + 1))
          echo "FAIL: call $n of $k failing ($mode): exit $rc"
          grep -E 'faultinj:|fault_prog:|numaspan' "$tmp/out" | head -5 | sed 's/^/    /'
        fi
      done
    done
    echo "run.sh: $k calls of numaspan's (FAULTINJ_INIT=$init${recover:+, recover}) to mmap/mremap/madvise/mbind, each failed once and from there on: $bad failures"
    if [ $init = 1 ] && [ -n "$recover" ]; then
      # Retries of a failed initialisation are bounded: with call 2 (the first table mapped after
      # the bootstrap chunk) refused for good, the thousands of calls of `fault_prog ops` may
      # retry it only a few dozen times (a doubling gap), not once per call.
      sig=$(FAULTINJ_TRACE=1 LD_PRELOAD=$so "$prog" ops 2>&1 >/dev/null \
            | sed -n 's/^faultinj: call 2: \(.*\)$/\1/p')
      if [ -z "$sig" ]; then
        echo "FAIL: no call 2 traced in a run without faults" >&2
        bad=$((bad + 1))
      else
        FAULTINJ_AT=2 FAULTINJ_MODE=from FAULTINJ_TRACE=1 LD_PRELOAD=$so timeout 60 "$prog" ops \
          >/dev/null 2>"$tmp/trace" || true
        tries=$(grep -cF ": $sig fails" "$tmp/trace" || true)
        echo "run.sh: with call 2 ($sig) refused for good, it was tried $tries times"
        if [ "$tries" -gt 40 ] || [ "$tries" -lt 2 ]; then
          echo "FAIL: a failed initialisation was retried $tries times (want 2 to 40)" >&2
          bad=$((bad + 1))
        fi
      fi
    fi
    [ $bad = 0 ] ;;
  ulimit)
    kib=$1
    echo "run.sh: ulimit -v $kib: fault_prog ulimit $2 $3"
    (ulimit -v "$kib" && exec timeout 120 "$prog" ulimit "$2" "$3") ;;
  exit)
    rc=0
    timeout 20 "$prog" exit || rc=$?
    [ $rc = 124 ] && echo "run.sh: fault_prog exit: the process did not end within 20 s of pthread_exit from main" >&2
    exit $rc ;;
  fork|stop)
    timeout 250 "$prog" "$what" "$@" ;;
  *)
    echo "run.sh: unknown case \"$what\" (inject, ulimit, fork, stop, exit)" >&2
    exit 2 ;;
esac
