#!/usr/bin/env bash
# tests/test_memory.sh — memory that comes back, address space, sizes and glibc's contracts
# (issue 10, failures 3 to 6), each case in a process of its own (helper_memory.c).
# usage: test_memory.sh <helper_memory> <helper_memory_glibc> <libnumaspan.so>
set -u
helper=$1 glibc=$2 lib=$3
pass=0 fail=0 skipped=0
ok()  { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*" >&2; }
out=$(mktemp) err=$(mktemp)
trap 'rm -f "$out" "$err"' EXIT
# runs a case; 77 is a skip, printed with its reason
case_() {
  local name=$1; shift
  "$@" >"$out" 2>"$err"
  local rc=$?
  if [ "$rc" = 77 ]; then skipped=$((skipped + 1)); echo "$name: $(cat "$out")"
  elif [ "$rc" = 0 ]; then ok
  else bad "$name exited $rc: $(head -c 1500 "$err") $(head -c 300 "$out")"; fi
}

# glibc's contracts: the expectations hold for glibc itself, and for numaspan
case_ "contracts (glibc)" "$glibc" contracts
case_ "contracts" "$helper" contracts
case_ "contracts (4 nodes)" env "NSP_TOPOLOGY=synthetic:pack:2 numa:2 core:2 pu:1" "$helper" contracts
case_ "absurd sizes (glibc)" "$glibc" absurd
case_ "absurd sizes" "$helper" absurd
case_ "64-bit page counts" "$helper" pages64
case_ "errno after a spill" env "NSP_TOPOLOGY=synthetic:pack:2 numa:2 core:2 pu:1" \
  NSP_NODE_LIMITS=0=128M,1=128M "$helper" errno-spill

# the hard limit
case_ "hard limit" env NSP_MEMORY_LIMIT=256M NSP_MEMORY_LIMIT_HARD=1 NSP_IDLE_RELEASE_MS=0 \
  "$helper" hard-limit
NSP_MEMORY_LIMIT_HARD=yes "$helper" contracts >"$out" 2>"$err"
[ $? = 2 ] && grep -qF 'NSP_MEMORY_LIMIT_HARD' "$err" && ok || bad "NSP_MEMORY_LIMIT_HARD=yes: $(cat "$err")"
NSP_MEMORY_LIMIT_HARD=1 "$helper" contracts >"$out" 2>"$err" # and no limit to hold
[ $? = 2 ] && grep -qF 'NSP_MEMORY_LIMIT_HARD=1 needs NSP_MEMORY_LIMIT' "$err" && ok \
  || bad "NSP_MEMORY_LIMIT_HARD=1 alone: $(cat "$err")"

# memory that comes back: other sizes under RLIMIT_AS after small frees, RSS over four sizes
case_ "address-space reuse" "$helper" as-reuse
case_ "four sizes in turn" "$helper" four-sizes
case_ "scavenging with no pacer" env NSP_IDLE_RELEASE_MS=0 "$helper" scavenge

# address space before the first arena: under 32 MiB more anonymous mappings than glibc's
"$glibc" addrspace >"$out" && base=$(sed -n 's/^anonymous=//p' "$out")
"$helper" addrspace >"$out" && ours=$(sed -n 's/^anonymous=//p' "$out")
if [ -n "${base:-}" ] && [ -n "${ours:-}" ] && [ $((ours - base)) -lt $((32 << 20)) ]; then ok
else bad "anonymous mappings before main: numaspan ${ours:-?} B, glibc ${base:-?} B (want < 32 MiB more)"; fi
# small programs start preloaded under the RLIMIT_AS a batch scheduler sets
for prog in "/bin/ls /" "python3 -c print(6*7)"; do
  (ulimit -v 200000; LD_PRELOAD=$lib $prog) >"$out" 2>"$err" && ok \
    || bad "under ulimit -v 200000: $prog: $(head -c 600 "$err")"
done

echo "$pass passed, $fail failed, $skipped skipped"
[ "$fail" = 0 ]
