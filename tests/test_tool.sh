#!/usr/bin/env bash
# tests/test_tool.sh — the numaspan command-line tool, as a user runs it.
# usage: test_tool.sh <path to numaspan binary>
set -u
tool=$1
pass=0 fail=0
ok()   { pass=$((pass + 1)); }
bad()  { fail=$((fail + 1)); echo "FAIL: $*" >&2; }
# expect RC CMD... : the command exits with RC
expect_rc() { local want=$1; shift; "$@" >/tmp/nsp_tool_out.$$ 2>/tmp/nsp_tool_err.$$; local rc=$?
  [ "$rc" = "$want" ] && ok || bad "'$*' exited $rc, want $want: $(cat /tmp/nsp_tool_err.$$)"; }
out() { cat /tmp/nsp_tool_out.$$; }
err() { cat /tmp/nsp_tool_err.$$; }
has() { local what=$1 text=$2; grep -qF -- "$what" <<<"$text" && ok || bad "missing '$what' in: $text"; }

expect_rc 0 "$tool" topo --topology "synthetic:pack:2 numa:2 core:4 pu:1"
has "nodes:      4" "$(out)"
for n in 0 1 2 3; do has "node $n (OS #$n):  1024.00 MiB, 4 caches" "$(out)"; done
has "hop model" "$(out)"
has "0    10   30   50   50" "$(out)"

expect_rc 0 "$tool" topo --json --topology "synthetic:pack:2 numa:2 core:4 pu:1"
python3 -c 'import json,sys; d=json.load(sys.stdin); assert len(d["nodes"])==4 and all(len(n["caches"])==4 for n in d["nodes"]) and len(d["distances"])==4' <<<"$(out)" && ok || bad "topo --json is not the expected JSON"

expect_rc 1 "$tool" topo --topology "synthetic:pack:2 numa:oops"
has "pack:2 numa:oops" "$(err)"
expect_rc 1 "$tool" topo --topology "xml:/no/such/file.xml"
has "/no/such/file.xml" "$(err)"
expect_rc 2 "$tool" topo --grouping socket
has "socket" "$(err)"
expect_rc 2 "$tool" topo --bogus
expect_rc 2 "$tool" nonsense
expect_rc 2 "$tool"

# NSP_TOPOLOGY is the default when --topology is not given
NSP_TOPOLOGY="synthetic:pack:1 numa:3 core:2 pu:1" expect_rc 0 "$tool" topo
has "nodes:      3" "$(out)"

# the real machine: binding is real
expect_rc 0 "$tool" topo
has "binding:    real" "$(out)"

expect_rc 0 "$tool" config --json
python3 -c 'import json,sys; d=json.load(sys.stdin); names={o["name"] for o in d}; assert {"NSP_TOPOLOGY","NSP_CACHE_GROUPING"} <= names, names' <<<"$(out)" && ok || bad "config --json lacks the options"
NSP_CACHE_GROUPING=core expect_rc 0 "$tool" config
has "NSP_CACHE_GROUPING     core  (from the environment)" "$(out)"
expect_rc 0 "$tool" version

rm -f /tmp/nsp_tool_out.$$ /tmp/nsp_tool_err.$$
echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
