#!/usr/bin/env bash
# tests/test_preload.sh — numaspan preloaded into real programs of the base system, through
# `numaspan run --stats`: their outputs must be right, and the stats each process prints at exit
# must show that numaspan served its allocations.
# usage: test_preload.sh <numaspan tool> <work dir>
set -u
tool=$1
work=$2/preload
rm -rf "$work" && mkdir -p "$work"
pass=0 fail=0
ok()  { pass=$((pass + 1)); echo "ok: $*"; }
bad() { fail=$((fail + 1)); echo "FAIL: $*" >&2; }
# served ERRFILE MIN: some process's stats show at least MIN small + large allocations, and no
# process saw a bad free
served() {
  local most
  most=$(sed -n 's/.*mallocs \([0-9]*\) .*large \([0-9]*\)\/.*/\1 \2/p' "$1" |
         awk '{print $1 + $2}' | sort -n | tail -1)
  grep -q "bad frees: not owned 0, interior 0, double 0" "$1" || { echo "bad frees in $1"; return 1; }
  ! grep -q "bad frees: not owned [1-9]\|interior [1-9]\|double [1-9]" "$1" || return 1
  [ -n "$most" ] && [ "$most" -ge "$2" ]
}

# python3: builds and drops large dicts and lists (the interpreter itself, not a wrapper script)
py=$(python3 -c 'import sys; print(sys.executable)')
cat >"$work/dicts.py" <<'PY'
import random
random.seed(7)
total = 0
for rnd in range(6):
    d = {i: str(i) * (i % 7 + 1) for i in range(200000)}
    l = [[j] * (j % 11) for j in range(100000)]
    s = {f"k{i}" for i in range(50000)}
    total += sum(len(v) for v in d.values()) + sum(map(len, l)) + len(s)
    del d, l, s
print("total", total)
PY
# PYTHONMALLOC=malloc: every Python object through malloc, not only what pymalloc passes on
export PYTHONMALLOC=malloc
want_py=$("$py" "$work/dicts.py")
want=$want_py
got=$("$tool" run --stats -- "$py" "$work/dicts.py" 2>"$work/py.err")
[ "$got" = "$want" ] && ok "python3 dicts and lists: $got" || bad "python3 printed '$got', want '$want'"
served "$work/py.err" 100000 && ok "python3 served by numaspan" || bad "python3 stats: $(grep mallocs "$work/py.err" | head -3)"

# sort of a 50 MB file
"$py" - "$work/in.txt" <<'PY'
import random, sys
random.seed(11)
with open(sys.argv[1], "w") as f:
    n = 0
    while n < 50 * 1024 * 1024:
        line = "%016x %s\n" % (random.getrandbits(64), "x" * random.randint(0, 40))
        f.write(line)
        n += len(line)
PY
LC_ALL=C sort "$work/in.txt" >"$work/want.txt"
LC_ALL=C "$tool" run --stats -- sort "$work/in.txt" >"$work/got.txt" 2>"$work/sort.err"
cmp -s "$work/want.txt" "$work/got.txt" && ok "sort of $(du -m "$work/in.txt" | cut -f1) MB" || bad "sort output differs"
served "$work/sort.err" 10 && ok "sort served by numaspan" || bad "sort stats: $(cat "$work/sort.err" | head -5)"
rm -f "$work/in.txt" "$work/want.txt" "$work/got.txt"

# gcc compiling a small C file (gcc, cc1, as and ld all preloaded)
cat >"$work/hello.c" <<'C'
#include <stdio.h>
#include <stdlib.h>
int main(void) { char *s = malloc(32); snprintf(s, 32, "hello %d", 6 * 7); puts(s); free(s); return 0; }
C
"$tool" run --stats -- gcc -O2 -o "$work/hello" "$work/hello.c" 2>"$work/gcc.err"
[ "$("$work/hello")" = "hello 42" ] && ok "gcc compiled a working program" || bad "gcc: $(head -5 "$work/gcc.err")"
[ "$(grep -c 'numaspan stats:' "$work/gcc.err")" -ge 2 ] && ok "gcc's processes served ($(grep -c 'numaspan stats:' "$work/gcc.err") processes)" || bad "gcc stats: $(head -3 "$work/gcc.err")"
served "$work/gcc.err" 1000 && ok "cc1 served by numaspan" || bad "cc1 stats"

# a C++ program: new/delete, strings, maps, threads
if command -v g++ >/dev/null; then
  cat >"$work/cxx.cc" <<'CXX'
#include <iostream>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>
int main() {
  std::vector<std::thread> ts;
  std::vector<long> sums(4);
  for (int t = 0; t < 4; t++)
    ts.emplace_back([t, &sums] {
      std::map<int, std::string> m;
      for (int i = 0; i < 100000; i++) m[i] = std::string(i % 50, 'a' + t);
      std::vector<std::unique_ptr<int[]>> v;
      for (int i = 0; i < 10000; i++) v.emplace_back(new int[i % 300 + 1]);
      long s = 0;
      for (auto &kv : m) s += kv.second.size();
      sums[t] = s;
    });
  for (auto &t : ts) t.join();
  std::cout << sums[0] + sums[1] + sums[2] + sums[3] << std::endl;
}
CXX
  g++ -O2 -pthread -o "$work/cxx" "$work/cxx.cc"
  want=$("$work/cxx")
  got=$("$tool" run --stats -- "$work/cxx" 2>"$work/cxx.err")
  [ "$got" = "$want" ] && ok "C++ program: $got" || bad "C++ printed '$got', want '$want'"
  served "$work/cxx.err" 100000 && ok "C++ served by numaspan" || bad "C++ stats: $(head -3 "$work/cxx.err")"
else
  echo "skipped: C++ program (no g++ on this machine)"
fi

# the same programs on a synthetic 4-node machine with 16 virtual cores
got=$("$tool" run --topology "synthetic:pack:2 numa:2 core:4 pu:1" --stats -- "$py" "$work/dicts.py" 2>"$work/py4.err")
[ "$got" = "$want_py" ] && ok "python3 on 4 synthetic nodes" || bad "python3 on 4 nodes printed '$got'"
grep -q "4 nodes, 16 caches" "$work/py4.err" && ok "4-node stats" || bad "4-node stats: $(head -2 "$work/py4.err")"

echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
