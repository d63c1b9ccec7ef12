#!/usr/bin/env bash
# tests/soak.sh — the soak (issue 10, Deliver 4; not in CI): the stress driver, the fuzz driver and
# the real-program suite in rounds until a given time has passed, then a table of rounds, failures,
# peak RSS and time per program.
#
# Owns: the round loop and its table. Each round runs, in order: test_host_stress on the real
# machine and on 4 synthetic nodes, the fuzz driver (if there is one), and tests/real/run.sh
# (--full by default; the system allocator's outputs are made in the first round and reused).
# Invariants: after the first round, a step starts only while time is left, and every step runs under a timeout, so the
# soak stops by itself (at most one step's bound past the duration); it runs niced (and idle I/O
# priority); every step's log is kept (WORK/round-N.NAME.log) and a failing one is named.
#
# usage: tests/soak.sh DURATION [--build DIR] [--work DIR] [--fuzz "CMD ARGS"] [--quick]
#                      [--nice N] [--stress "THREADS OPS"] [-- REAL ARGS]
#   DURATION: 90s, 45m, 2h (a number alone is seconds).
#   --build: numaspan's build folder (default: build/ of this checkout).
#   --work: where logs and the real suite's files go (default: BUILD/soak).
#   --fuzz: the fuzz driver's command line, run once per round; "{round}" in it becomes the round
#     number (a seed). Default: the first executable build/tests/fuzz/*fuzz* (tests/fuzz/), run
#     as is; none: the fuzz row says "skipped" and why.
#   --quick: the real suite's quick (CI) form instead of --full.
#   --nice: the niceness (default 15).   --stress: the stress driver's arguments (default 8 500000).
#   -- REAL ARGS: more arguments for tests/real/run.sh (e.g. -- --cases "redis sort" --configs pacer).
# Environment: NSP_REAL_PENDING is passed to the real suite (see tests/real/run.sh).
set -u
root=$(cd "$(dirname "$0")/.." && pwd)

usage() { sed -n '/^# usage:/,/^# Environment:/p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

[ $# -ge 1 ] || usage
case $1 in -h|--help) usage ;; esac
dur_text=$1; shift
if [[ $dur_text =~ ^([0-9]+)([smh]?)$ ]] && [ "${BASH_REMATCH[1]}" -gt 0 ]; then
  case ${BASH_REMATCH[2]} in
    h) dur=$((BASH_REMATCH[1] * 3600)) ;;
    m) dur=$((BASH_REMATCH[1] * 60)) ;;
    *) dur=${BASH_REMATCH[1]} ;;
  esac
else
  echo "tests/soak.sh: duration \"$dur_text\" is not a time (e.g. 90s, 45m, 2h)" >&2; exit 2
fi

build=$root/build work="" fuzz="" fuzz_given=0 real_form=--full niceness=15 stress_args="8 500000"
real_args=()
while [ $# -gt 0 ]; do
  case $1 in
    --build) build=${2:?--build needs a folder}; shift ;;
    --work) work=${2:?--work needs a folder}; shift ;;
    --fuzz) fuzz=${2:?--fuzz needs a command}; fuzz_given=1; shift ;;
    --quick) real_form=--quick ;;
    --nice) niceness=${2:?--nice needs a number}; shift ;;
    --stress) stress_args=${2:?--stress needs \"THREADS OPS\"}; shift ;;
    --) shift; real_args=("$@"); break ;;
    -h|--help) usage ;;
    *) echo "tests/soak.sh: unknown argument \"$1\"" >&2; usage ;;
  esac
  shift
done
build=$(cd "$build" 2>/dev/null && pwd) || { echo "tests/soak.sh: build folder not found" >&2; exit 2; }
stress=$build/tests/test_host_stress
[ -x "$stress" ] || { echo "tests/soak.sh: $stress not found (build numaspan first: tools/build.sh)" >&2; exit 2; }
work=${work:-$build/soak}
mkdir -p "$work" && work=$(cd "$work" && pwd)

# low priority for this shell and everything it starts
renice -n "$niceness" -p $$ >/dev/null || { echo "tests/soak.sh: cannot renice to $niceness" >&2; exit 2; }
ionice -c 3 -p $$ 2>/dev/null || true

fuzz_skip=""
if [ $fuzz_given = 0 ]; then
  for f in "$build"/tests/fuzz/*fuzz* "$build"/tests/*fuzz*; do
    [ -f "$f" ] && [ -x "$f" ] && { fuzz=$f; break; }
  done
  [ -z "$fuzz" ] && fuzz_skip="no fuzz driver in $build/tests/fuzz (give one with --fuzz)"
else
  set -- $fuzz
  command -v "$1" >/dev/null || fuzz_skip="fuzz driver \"$1\" not found"
fi

declare -A rounds fails maxrss secs
rounds_done=0
left() { echo $((end - SECONDS)); }
# the first round always runs whole (a soak shorter than one round still tests everything once)
more() { [ "$round" = 1 ] || [ "$(left)" -gt 0 ]; }

# step NAME BOUND_S CMD...: one run of one program, bounded; counts it and its peak RSS
step() {
  local name=$1 bound=$2 log rc rss t0=$SECONDS; shift 2
  log=$work/round-$round.$name.log
  timeout -k 10 "$bound" /usr/bin/time -o "$log.rss" -f %M "$@" >"$log" 2>&1; rc=$?
  rss=$(grep -sE '^[0-9]+$' "$log.rss" | tail -1); rm -f "$log.rss"
  rounds[$name]=$(( ${rounds[$name]:-0} + 1 ))
  secs[$name]=$(( ${secs[$name]:-0} + SECONDS - t0 ))
  [ -n "$rss" ] && [ "$rss" -gt "${maxrss[$name]:-0}" ] && maxrss[$name]=$rss
  if [ $rc = 0 ]; then
    echo "   round $round: $name ok ($((SECONDS - t0)) s)"
  else
    fails[$name]=$(( ${fails[$name]:-0} + 1 ))
    echo "   round $round: $name FAILED (exit $rc$( [ $rc = 124 ] && echo ", over its $bound s")); log: $log"
  fi
}

echo "soak: $dur_text ($dur s), niceness $niceness, logs in $work"
[ -n "$fuzz_skip" ] && echo "soak: fuzz skipped: $fuzz_skip"
# the real suite's inputs and reference outputs are made afresh by the first round
rm -rf "$work/real" "$work"/round-*.log "$work/real-rss.csv"
start=$SECONDS
end=$((start + dur))
round=0
while [ "$round" = 0 ] || [ "$(left)" -gt 0 ]; do
  round=$((round + 1))
  step stress 1800 "$stress" $stress_args
  more || break
  step stress-4node 1800 env "NSP_TOPOLOGY=synthetic:pack:2 numa:2 core:4 pu:1" "$stress" $stress_args
  more || break
  if [ -z "$fuzz_skip" ]; then
    step fuzz 1800 bash -c "${fuzz//\{round\}/$round}"
    more || break
  fi
  # the real suite's own RSS per program goes to its CSV; its row here is the whole suite
  step real-suite 7200 bash "$root/tests/real/run.sh" $real_form --reuse-ref \
    --rss-csv "$work/real-rss.csv" "${real_args[@]}" "$build" "$work/real"
  rounds_done=$round
done

elapsed=$((SECONDS - start))
echo
echo "soak table: $rounds_done full rounds in $elapsed s (asked: $dur_text)"
row() { printf '%-26s %7s %9s %12s %12s %8s\n' "$@"; }
row program rounds failures "max RSS KiB" "system KiB" "time s"
for name in stress stress-4node fuzz real-suite; do
  if [ "$name" = fuzz ] && [ -n "$fuzz_skip" ]; then
    echo "fuzz: skipped ($fuzz_skip)"
    continue
  fi
  [ -n "${rounds[$name]:-}" ] || continue
  row "$name" "${rounds[$name]}" "${fails[$name]:-0}" "${maxrss[$name]:--}" - "${secs[$name]}"
done
# one row per real program and configuration, from the suite's CSV
# (case,config,rss,system rss,status,seconds), in the order they first ran
if [ -f "$work/real-rss.csv" ]; then
  awk -F, '{ k = "  " $1 " [" $2 "]"; n[k]++; if ($5 != "ok") f[k]++; t[k] += $6;
             if ($3 + 0 > m[k]) m[k] = $3 + 0; if ($4 + 0 > r[k]) r[k] = $4 + 0;
             if (!(k in o)) { o[k] = ++c; ks[c] = k } }
           END { for (i = 1; i <= c; i++) { k = ks[i];
                   printf "%-26s %7d %9d %12d %12d %8d\n", k, n[k], f[k] + 0, m[k], r[k], t[k] } }' \
    "$work/real-rss.csv"
fi
total_fail=0
for name in "${!fails[@]}"; do total_fail=$((total_fail + fails[$name])); done
echo "soak: $total_fail failed steps"
[ $total_fail = 0 ]
