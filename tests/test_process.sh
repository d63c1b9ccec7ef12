#!/usr/bin/env bash
# tests/test_process.sh — the library as a process sees it: options from the environment, the
# process topology, bad frees (messages, abort or warn), NSP_STATS at exit.
# usage: test_process.sh <helper_process binary>
set -u
helper=$1
pass=0 fail=0
ok()  { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*" >&2; }
out=$(mktemp) err=$(mktemp)
trap 'rm -f "$out" "$err"' EXIT
run() { "$@" >"$out" 2>"$err"; echo $?; }
has() { grep -qF -- "$1" "$2" && ok || bad "missing '$1' in $(basename "$2"): $(head -c 600 "$2")"; }

# the process topology and grouping come from the environment
rc=$(NSP_TOPOLOGY="synthetic:pack:2 numa:2 core:4 pu:1" NSP_CACHE_GROUPING=core run "$helper" topo)
[ "$rc" = 0 ] && ok || bad "topo exited $rc"
has "spec=synthetic:pack:2 numa:2 core:4 pu:1 grouping=core nodes=4 bind=1 cache=9" "$out"

# a malformed topology stops the process before main, naming the string
rc=$(NSP_TOPOLOGY="synthetic:pack:2 numa:oops" run "$helper" topo)
[ "$rc" = 2 ] && ok || bad "malformed NSP_TOPOLOGY exited $rc, want 2"
has 'numaspan: NSP_TOPOLOGY: topology "synthetic:pack:2 numa:oops"' "$err"
rc=$(NSP_CACHE_GROUPING=socket run "$helper" topo)
[ "$rc" = 2 ] && ok || bad "bad NSP_CACHE_GROUPING exited $rc"
has 'NSP_CACHE_GROUPING="socket"' "$err"
rc=$(NSP_CACHE_MAX=lots run "$helper" topo)
[ "$rc" = 2 ] && ok || bad "bad NSP_CACHE_MAX exited $rc"
has 'NSP_CACHE_MAX="lots": not a size' "$err"

# bad frees: abort by default, with a message naming the address
rc=$(run "$helper" bad-free)
[ "$rc" = 134 ] && ok || bad "bad free exited $rc, want 134 (SIGABRT)"
has "pointer not allocated by numaspan" "$err"
has "aborting (NSP_ON_ERROR=warn" "$err"
# warn: every case reported and counted, the program goes on
rc=$(NSP_ON_ERROR=warn run "$helper" bad-free)
[ "$rc" = 0 ] && ok || bad "bad free with warn exited $rc"
has "not_owned=2 interior=2 double=1" "$out"
[ "$(grep -c '^numaspan: free(0x' "$err")" = 5 ] && ok || bad "want 5 messages: $(cat "$err")"
has "pointer inside an object" "$err"
has "double free" "$err"

# NSP_STATS=1 prints at exit; nsp_stats_print gives JSON
rc=$(NSP_STATS=1 run "$helper" stats)
[ "$rc" = 0 ] && ok || bad "stats exited $rc"
has "numaspan stats:" "$err"
python3 - "$out" <<'PY' && ok || bad "stats JSON"
import json, sys
d = json.load(open(sys.argv[1]))
c = {k["size"]: k for k in d["classes"]}
assert c[48]["objects_in_use"] >= 50, c[48]
assert d["nodes"][0]["pages_mapped"] > 0
PY

echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
