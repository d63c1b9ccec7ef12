#!/usr/bin/env bash
# tests/real/run.sh — the real-program suite: programs of the base system run with
# LD_PRELOAD=libnumaspan.so and compared with their run on the system allocator (issue 10, Deliver 3).
#
# Owns: the driver (configurations, the wrapper that runs and measures a program, comparison, the
# RSS table, pending cases). The cases themselves live in cases.sh, one function each.
# Invariants:
# - a case's output under numaspan equals its output under the system allocator, byte for byte
#   (outputs are digests, listings and results the case chose to be deterministic);
# - every preloaded process prints numaspan's stats at exit (NSP_STATS=file): proof that the
#   preload took, and each stats block must report no bad free;
# - every program runs under a timeout, so the suite always ends;
# - redis listens on 127.0.0.1 only, on a port that was free when the case started.
#
# usage: tests/real/run.sh [--quick|--full] [--cases "A B"] [--configs "C D"] [--reuse-ref] [--list]
#                          [--rss-csv FILE] BUILD_DIR [WORK_DIR]
#   --quick (default, CI): a few MB of data per program.  --full (the soak): about 4x the data and
#   requests.  --cases / --configs: a subset (names as printed by --list).  --reuse-ref: keep the
#   system allocator's outputs of an earlier run in WORK_DIR (the soak's later rounds).
#   --rss-csv: append "case,config,peak_rss_kb,system_peak_rss_kb,status,seconds" rows.
#   WORK_DIR defaults to BUILD_DIR/tests/real.  --list: the cases and configurations.
# Environment: NSP_REAL_PENDING — pending cases to run as well (space or comma separated, or
#   "all"). Pending today: python-threading (issue 10 failure 1: the pacer thread keeps the
#   process alive), redis-flushall (issue 10 failure 3: freed small-object memory not reused).
# Output: "ok: CASE [CONFIG] ..." or "FAIL: CASE [CONFIG] reason" per run, the peak-RSS table, and
# a closing line "N passed, N failed". Exit status 0 only if nothing failed.
set -u
here=$(cd "$(dirname "$0")" && pwd)

usage() { sed -n '/^# usage:/,/^# a closing line/p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

mode=quick cases_arg="" configs_arg="" reuse_ref=0 rss_csv="" list=0
while [ $# -gt 0 ]; do
  case $1 in
    --quick) mode=quick ;;
    --full) mode=full ;;
    --cases) cases_arg=${2:?--cases needs a list}; shift ;;
    --configs) configs_arg=${2:?--configs needs a list}; shift ;;
    --reuse-ref) reuse_ref=1 ;;
    --rss-csv) rss_csv=${2:?--rss-csv needs a file}; shift ;;
    --list) list=1 ;;
    -h|--help) usage ;;
    --*) echo "tests/real/run.sh: unknown option \"$1\"" >&2; usage ;;
    *) break ;;
  esac
  shift
done

# shellcheck source=cases.sh
. "$here/cases.sh"

# The configurations, each a list of environment assignments added to LD_PRELOAD.
# 4node: 4 NUMA nodes x 4 cores (16 virtual caches on this machine's CPUs).
# pacer: the concurrent pacer, with a memory limit so that cycles run (a plain program gets none,
# DESIGN.md section 6); the limit is soft (issue 10 failure 5), so it bounds the goal, not malloc.
all_configs="default 4node pacer"
config_env() {
  case $1 in
    default) ;;
    4node) echo "NSP_TOPOLOGY=synthetic:pack:2 numa:2 core:4 pu:1" ;;
    pacer) printf '%s\n' NSP_PACER=concurrent NSP_MEMORY_LIMIT=1G "NSP_TRACE=$D/.trace" ;;
    *) return 1 ;;
  esac
}

if [ $list = 1 ]; then
  echo "cases: $real_cases"
  echo "pending cases (NSP_REAL_PENDING): $real_pending"
  echo "configurations: $all_configs"
  exit 0
fi

[ $# -ge 1 ] || usage
build=$(cd "$1" 2>/dev/null && pwd) || { echo "tests/real/run.sh: build folder \"$1\" not found" >&2; exit 2; }
lib=$build/libnumaspan.so
[ -f "$lib" ] || { echo "tests/real/run.sh: $lib not found (build numaspan first: tools/build.sh)" >&2; exit 2; }
work=${2:-$build/tests/real}
mkdir -p "$work" && work=$(cd "$work" && pwd)
[ -x /usr/bin/time ] || { echo "tests/real/run.sh: /usr/bin/time not found (Debian package \"time\"; tools/deps.sh test)" >&2; exit 2; }

# which cases and configurations (D: the case folder, which config_env names)
D=""
norm() { echo "$*" | tr ',' ' '; }
pending_on=$(norm "${NSP_REAL_PENDING:-}")
[ "$pending_on" = all ] && pending_on=$real_pending
for p in $pending_on; do
  case " $real_pending " in *" $p "*) ;;
    *) echo "tests/real/run.sh: NSP_REAL_PENDING names \"$p\", which is not a pending case (pending: $real_pending)" >&2; exit 2 ;;
  esac
done
want_cases=$(norm "${cases_arg:-$real_cases $real_pending}")
for c in $want_cases; do
  case " $real_cases $real_pending " in *" $c "*) ;;
    *) echo "tests/real/run.sh: unknown case \"$c\" (cases: $real_cases $real_pending)" >&2; exit 2 ;;
  esac
done
want_configs=$(norm "${configs_arg:-$all_configs}")
for c in $want_configs; do
  config_env "$c" >/dev/null || { echo "tests/real/run.sh: unknown configuration \"$c\" (configurations: $all_configs)" >&2; exit 2; }
done

case $mode in quick) scale=1 ;; full) scale=4 ;; esac
# hermetic: the system allocator's run preloads nothing, and no NSP_* setting of the caller's
# leaks into a configuration
unset LD_PRELOAD
for v in $(compgen -e); do
  case $v in NSP_*) unset "$v" ;; esac
done
export LC_ALL=C TZ=UTC
# git must see neither the user's nor the system's configuration
export GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null
G=$work/inputs            # generated inputs, shared by every run of a case (made once)
mkdir -p "$G"

pass=0 fail=0 skipped=""
ok()  { pass=$((pass + 1)); echo "ok: $*"; }
bad() { fail=$((fail + 1)); echo "FAIL: $*"; }

# x CMD ARGS: run one program of a case under the current allocator, bounded by the case's
# timeout; its peak RSS (KiB) is appended to $D/.rss. /usr/bin/time is outside the preload (env
# sets it for CMD only). timeout signals CMD's whole process group, children included.
X_ENV=()
x() {
  timeout -k 10 "$T" /usr/bin/time -a -o "$D/.rss" -f %M env "${X_ENV[@]}" "$@"
}
peak_rss() { grep -sE '^[0-9]+$' "$1/.rss" | sort -n | tail -1; }

# run_case CASE WHERE: one run into $work/WHERE/CASE, under the system allocator (WHERE=ref) or
# a configuration; returns the case's status. D, T, X_ENV are the case's globals.
run_case() {
  local c=$1 where=$2 line
  D=$work/$where/$c
  rm -rf "$D" && mkdir -p "$D"
  X_ENV=()
  if [ "$where" != ref ]; then
    X_ENV=("LD_PRELOAD=$lib" "NSP_STATS=$D/.stats")
    while IFS= read -r line; do [ -n "$line" ] && X_ENV+=("$line"); done < <(config_env "$where")
  fi
  T=$(case_timeout "$c")
  (cd "$D" && "case_${c//-/_}") >"$D/.log" 2>&1
}

# stats_ok DIR: every preloaded process printed stats, none saw a bad free
stats_ok() {
  local n clean
  n=$(grep -sc '^numaspan stats:' "$1/.stats")
  clean=$(grep -sc 'bad frees: not owned 0, interior 0, double 0' "$1/.stats")
  [ "${n:-0}" -ge 1 ] && [ "$n" = "$clean" ]
}

declare -A rss status
start=$SECONDS
echo "real-program suite ($mode): cases: $want_cases; configurations: $want_configs"
for c in $want_cases; do
  case " $real_pending " in *" $c "*)
    case " $pending_on " in *" $c "*) ;; *)
      skipped="$skipped $c"
      echo "pending: $c not run ($(pending_reason "$c"); run it with NSP_REAL_PENDING=$c)"
      continue ;;
    esac ;;
  esac
  missing=""
  for need in $(case_needs "$c"); do
    command -v "${need%%:*}" >/dev/null || missing="$missing ${need%%:*} (Debian package ${need#*:})"
  done
  if [ -n "$missing" ]; then
    bad "$c: not found on this machine:$missing; tools/deps.sh test installs them"
    continue
  fi
  # the system allocator's run: the reference output
  ref=$work/ref/$c
  # (reused only if made in the same form: the full form has other inputs)
  if [ $reuse_ref = 0 ] || [ "$(cat "$ref/.done" 2>/dev/null)" != "$mode" ]; then
    t0=$SECONDS
    if ! run_case "$c" ref; then
      bad "$c [system allocator] failed: the case cannot run on this machine, see $ref/.log"
      tail -5 "$ref/.log" | sed 's/^/    /'
      continue
    fi
    echo "$mode" >"$ref/.done"
    echo "   $c [system allocator] $((SECONDS - t0)) s"
  fi
  rss[$c,ref]=$(peak_rss "$ref")
  for cfg in $want_configs; do
    t0=$SECONDS
    run_case "$c" "$cfg"; rc=$?
    d=$work/$cfg/$c
    rss[$c,$cfg]=$(peak_rss "$d")
    why=""
    if [ $rc != 0 ]; then
      why="exit status $rc$( [ $rc = 124 ] && echo " (timed out after $T s)")"
    elif ! cmp -s "$ref/out" "$d/out"; then
      why="output differs from the system allocator's: diff $ref/out $d/out"
    elif ! stats_ok "$d"; then
      why="numaspan stats missing or a bad free reported: $d/.stats"
    fi
    if [ -z "$why" ]; then
      status[$c,$cfg]=ok
      cycles=""
      # the pacer's trace shows that it ran cycles in this program (the limit makes it pace)
      [ -f "$d/.trace" ] && cycles=", $(grep -c ',cycle_end$' "$d/.trace") pacer cycles"
      ok "$c [$cfg] $((SECONDS - t0)) s, peak RSS ${rss[$c,$cfg]:-?} KiB (system ${rss[$c,ref]:-?})$cycles"
    else
      status[$c,$cfg]=FAIL
      bad "$c [$cfg] $why"
      { tail -8 "$d/.log"; [ -f "$d/out" ] && diff "$ref/out" "$d/out" | head -8; } | sed 's/^/    /'
    fi
    if [ -n "$rss_csv" ]; then
      echo "$c,$cfg,${rss[$c,$cfg]:-},${rss[$c,ref]:-},${status[$c,$cfg]},$((SECONDS - t0))" >>"$rss_csv"
    fi
  done
done

# the peak-RSS table: KiB under each configuration, and its ratio to the system allocator's
echo
echo "peak RSS (KiB; ratio to the system allocator's; for several processes, the largest one)"
printf '%-18s %10s' case system
for cfg in $want_configs; do printf ' %17s' "$cfg"; done
echo
for c in $want_cases; do
  [ -n "${rss[$c,ref]:-}" ] || continue
  printf '%-18s %10s' "$c" "${rss[$c,ref]}"
  for cfg in $want_configs; do
    v=${rss[$c,$cfg]:-}
    if [ -n "$v" ] && [ "${rss[$c,ref]}" -gt 0 ]; then
      printf ' %10s %5.2fx' "$v" "$(echo "$v ${rss[$c,ref]}" | awk '{print $1 / $2}')"
    else
      printf ' %17s' -
    fi
  done
  echo
done
echo
[ -n "$skipped" ] && echo "pending, not run:$skipped (NSP_REAL_PENDING=\"$(echo $skipped)\" runs them)"
echo "real-program suite took $((SECONDS - start)) s"
echo "$pass passed, $fail failed"
[ $fail = 0 ]
