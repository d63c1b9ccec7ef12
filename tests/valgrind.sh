#!/usr/bin/env bash
# tests/valgrind.sh — every test program CTest registers (tests/test_*: the Check suites, the
# stress drivers, test_pacer's cases), run under valgrind's memcheck as CTest runs it: its
# arguments, its environment (NSP_TOPOLOGY, NSP_IDLE_RELEASE_MS, NSP_ACCOUNTING...) and its working
# directory. One line per test; exits non-zero if any failed or valgrind reported an error.
#
# usage: tests/valgrind.sh [BUILD_DIR] [REGEX]   (default: build/, every test; REGEX: ctest -R)
#
# --soname-synonyms=somalloc=nouserintercepts: memcheck leaves the executable's malloc alone, so
# the tests reach numaspan's, which is what they test (without it memcheck replaces the malloc the
# static library defines, and tests/check_main.h skips each suite, saying so). memcheck then sees
# numaspan's arenas as plain mappings: it checks numaspan's own reads and writes (undefined values,
# addresses outside any mapping, system call arguments), not the program's use of its objects.
# Valgrind has no rseq: the bins are off, and the cases that need them skip with their reason.
# Check's fork mode, as CTest runs the suites: memcheck follows each case's child, and a child
# with an error exits 99, which its suite reports as that case's failure. CK_FORK=no in the
# environment runs a suite's cases in one process instead (quicker; the cases that expect a
# signal are left out there, saying so: tests/check_main.h, NSP_ADD_SIGNAL_TEST; some that need a
# fresh process fail there: test_bins and test_bin_free, 3 and 2 cases in session 25's run).
# CK_TIMEOUT_MULTIPLIER=10: a case's Check timeout is a plain run's; memcheck runs it 10-50 times
# slower, one thread at a time (test_no_wait's cases ran past theirs).
# --max-threads: a suite's cases, one after another in one process, start more threads than
# valgrind's default table holds (test_topology).
# Left out: the device tests (an OpenCL runtime under memcheck takes past any timeout) and the
# scripts (shell, python), which run other programs.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$root/build}
regex=${2:-.}
command -v valgrind >/dev/null || { echo "tests/valgrind.sh: skipped: no valgrind" >&2; exit 0; }
log=$build/valgrind
mkdir -p "$log"
failed=0
# each line: name, directory, then the environment and the command, quoted for the shell
while IFS=$'\t' read -r name dir run; do
  t0=$SECONDS rc=0
  (cd "$dir" && eval "env CK_DEFAULT_TIMEOUT=600 CK_TIMEOUT_MULTIPLIER=10 $run") >"$log/$name.log" 2>&1 || rc=$?
  errs=$(grep -c '^==[0-9]*== [A-Z]' "$log/$name.log")
  if [ $rc = 0 ]; then
    printf 'valgrind: %-40s ok    %4ds\n' "$name" $((SECONDS - t0))
  else
    failed=1
    printf 'valgrind: %-40s FAIL  %4ds  (exit %d, %d valgrind lines; log %s)\n' "$name" \
      $((SECONDS - t0)) $rc "$errs" "$log/$name.log"
  fi
done < <(ctest --test-dir "$build" -R "$regex" --show-only=json-v1 | python3 -c '
import json, shlex, sys
for t in json.load(sys.stdin)["tests"]:
    cmd = t.get("command") or []
    # the program: the command itself, or what a `cmake -E env ...` in front of it runs
    at = next((i for i, c in enumerate(cmd) if "/tests/test_" in c), -1)
    if at < 0 or (at > 0 and cmd[:3] != [cmd[0], "-E", "env"]) or cmd[at].endswith((".sh", ".py")):
        continue
    if "device" in t["name"]:
        continue
    props = {p["name"]: p["value"] for p in t.get("properties", [])}
    env = [shlex.quote(e) for e in props.get("ENVIRONMENT", [])]
    vg = ["timeout", "900", "nice", "valgrind", "-q", "--error-exitcode=99",
          "--soname-synonyms=somalloc=nouserintercepts", "--max-threads=4096"]
    run = " ".join(env + [shlex.quote(c) for c in cmd[:at]] + vg + [shlex.quote(c) for c in cmd[at:]])
    print("\t".join([t["name"], props.get("WORKING_DIRECTORY", "."), run]))
')
exit $failed
