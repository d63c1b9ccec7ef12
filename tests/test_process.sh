#!/usr/bin/env bash
# tests/test_process.sh — the library as a process sees it: options from the environment, the
# process topology, bad frees (messages, abort or warn), NSP_STATS at exit; and, preloaded into a
# plain program, the process's life: no thread of numaspan's unless something is paced or traced,
# pthread_exit from main, fork from a thread, unshare of a user namespace.
# usage: test_process.sh <helper_process binary> [<helper_plain binary> <libnumaspan.so>]
# (without the last two, as in sanitizer builds, the preloaded cases are skipped, saying so)
set -u
helper=$1 plain=${2:-} lib=${3:-}
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
# more nodes than numaspan has room for: the same form, naming the spec and the count
rc=$(NSP_TOPOLOGY="synthetic:numa:65 pu:1" run "$helper" topo)
[ "$rc" = 2 ] && ok || bad "65 nodes exited $rc, want 2"
has 'numaspan: NSP_TOPOLOGY: topology "synthetic:numa:65 pu:1": 65 NUMA nodes, more than numaspan supports (64)' "$err"
rc=$(NSP_CACHE_GROUPING=socket run "$helper" topo)
[ "$rc" = 2 ] && ok || bad "bad NSP_CACHE_GROUPING exited $rc"
has 'NSP_CACHE_GROUPING="socket"' "$err"
rc=$(NSP_CACHE_MAX=lots run "$helper" topo)
[ "$rc" = 2 ] && ok || bad "bad NSP_CACHE_MAX exited $rc"
has 'NSP_CACHE_MAX="lots": not a size' "$err"

# every malformed, overflowing or useless value stops the process with a message naming it (on a
# one-node machine, whatever this one has: node limits depend on the other nodes)
while IFS='|' read -r setting want; do
  rc=$(NSP_TOPOLOGY="synthetic:pack:1 numa:1 core:2 pu:1" env "$setting" "$helper" topo \
       2>"$err" >"$out"; echo $?)
  [ "$rc" = 2 ] && ok || bad "$setting exited $rc, want 2 (refused)"
  name=${setting%%=*} value=${setting#*=}
  has "numaspan: $name=\"$value\": $want" "$err"
done <<'CASES'
NSP_ON_ERROR=ignore|expected abort or warn
NSP_ACCOUNTING=overr|expected over, under or exact
NSP_PACER=foo|expected sync or concurrent
NSP_PACE_PERCENT=nan|expected a number from 1 to 100000
NSP_PACE_PERCENT=inf|expected a number from 1 to 100000
NSP_PACE_PERCENT=0x10|expected a number from 1 to 100000
NSP_PACE_PERCENT=0|expected a number from 1 to 100000
NSP_PACE_PERCENT=-5|expected a number from 1 to 100000
NSP_HEAP_MIN=-1|expected auto or a size
NSP_HEAP_MIN=9223372036854775808|too large
NSP_MEMORY_LIMIT=1|below 4M the headroom
NSP_MEMORY_LIMIT=16Q|not a size
NSP_MEMORY_LIMIT=99999999999999999999|not a size
NSP_DELTA_BATCH=9223372036854775808|too large
NSP_CACHE_TOTAL_MAX=16777216T|not a size
NSP_IDLE_RELEASE_MS=10000000000000|expected milliseconds from 0 (never) to 86400000
NSP_IDLE_RELEASE_MS=+5|expected milliseconds
NSP_IDLE_RELEASE_MS=-1|expected milliseconds
NSP_NODE_LIMITS=0=1|every node is limited below one arena
NSP_NODE_LIMITS=0=8K|every node is limited below one arena
NSP_NODE_LIMITS=0=63M|every node is limited below one arena
NSP_NODE_LIMITS=0=0|node 0: a limit of 0
NSP_NODE_LIMITS=0=1G,0=2G|node 0 is given twice
NSP_NODE_LIMITS=7=1G|expected NODE=SIZE
NSP_NODE_LIMITS=0=lots|a node's size is not a size
NSP_STATS=/nonexistent-dir/stats.txt|No such file or directory
NSP_STATS=true|expected 0, 1 (on stderr) or a file to append to (a file of this name: ./true)
NSP_STATS=ON|expected 0, 1 (on stderr) or a file to append to
NSP_STATS=2|expected 0, 1 (on stderr) or a file to append to
NSP_TRACE=/nonexistent-dir/trace.csv|No such file or directory
NSP_SECURE=yes|expected 0 or 1
NSP_MEMORY_LIMIT_HARD=on|expected 0 or 1
NSP_DEBUG=4|expected a debug level from 0 (off) to 3
NSP_DEBUG=on|expected a debug level from 0 (off) to 3
CASES
# keywords are words in any case, as NSP_CACHE_GROUPING's always were (Exact, REAL and OFF were
# refused); what follows a topology's kind (a path, an hwloc description) is not a keyword
# (OFF's row also checks that with nothing to pace by, no limit and percent off, a cycle hands back
# no free page: the scavenger's goal + 10% overflowed there, and every cycle handed back all)
src=$(cd "$(dirname "$0")/.." && pwd)
xml="$src/tests/fixtures/numalatency-4node.xml"
kdir=$(mktemp -d)
while IFS='|' read -r setting cmd where want; do
  rc=$(cd "$kdir" && NSP_TOPOLOGY="synthetic:pack:1 numa:1 core:2 pu:1" env "$setting" "$helper" \
       $cmd 2>"$err" >"$out"; echo $?)
  [ "$rc" = 0 ] && ok || bad "$setting exited $rc, want 0 (accepted): $(head -c 300 "$err")"
  has "$want" "$([ "$where" = out ] && echo "$out" || echo "$err")"
done <<CASES
NSP_ACCOUNTING=Exact|pacer|out|accounting=2
NSP_ACCOUNTING=UNDER|pacer|out|accounting=1
NSP_PACER=Concurrent|pacer|out|concurrent=1
NSP_PACE_PERCENT=OFF|pacer|out|scavenged=0
NSP_HEAP_MIN=Auto|pacer|out|accounting=0
NSP_MEMORY_LIMIT=64MIB|pacer|out|memory_limit=67108864
NSP_TRACE=STDERR|pacer|err|numaspan: cycle 1 @
NSP_ON_ERROR=Warn|remote-double-free|out|double=1 
NSP_CACHE_GROUPING=CORE|topo|out|grouping=core
NSP_TOPOLOGY=REAL|topo|out|spec=REAL grouping=pu
NSP_TOPOLOGY=Synthetic:pack:1 numa:3 core:2 pu:1|topo|out|nodes=3
NSP_TOPOLOGY=XML:$xml|topo|out|nodes=4
CASES
# stderr was a keyword, not a file name: nothing was created in the working directory
[ -z "$(ls -A "$kdir")" ] && ok || bad "a keyword left a file: $(ls -A "$kdir")"
rm -rf "$kdir"
# a path keeps its case: the fixture's name upper-cased is another file
rc=$(NSP_TOPOLOGY="xml:${xml%/*}/NUMALATENCY-4node.xml" run "$helper" topo)
[ "$rc" = 2 ] && ok || bad "an upper-cased XML path exited $rc, want 2"
has "cannot read XML file \"${xml%/*}/NUMALATENCY-4node.xml\"" "$err"
# an NSP_ variable that is not an option is named once on stderr, with the nearest option where
# one is close (edit distance up to 2, or a prefix either way), and the program goes on: a
# warning, not a refusal (host/options.c says why)
while IFS='|' read -r setting want; do
  rc=$(NSP_TOPOLOGY="synthetic:pack:1 numa:1 core:2 pu:1" env "$setting" "$helper" topo \
       2>"$err" >"$out"; echo $?)
  [ "$rc" = 0 ] && ok || bad "$setting exited $rc, want 0 (warned, not refused): $(head -c 300 "$err")"
  has "$want" "$err"
  [ "$(grep -c 'not a numaspan option' "$err")" = 1 ] && ok || bad "$setting: want one warning: $(cat "$err")"
done <<'CASES'
NSP_MEMORY_LIMT=1G|numaspan: NSP_MEMORY_LIMT is not a numaspan option (NSP_MEMORY_LIMIT?); ignored
NSP_STAT=1|numaspan: NSP_STAT is not a numaspan option (NSP_STATS?); ignored
NSP_Stats=1|numaspan: NSP_Stats is not a numaspan option (NSP_STATS?); ignored
NSP_PACE_PERCNET=50|numaspan: NSP_PACE_PERCNET is not a numaspan option (NSP_PACE_PERCENT?); ignored
NSP_IDLE_RELEASE=0|numaspan: NSP_IDLE_RELEASE is not a numaspan option (NSP_IDLE_RELEASE_MS?); ignored
NSP_STATS_FILE=/tmp/x|numaspan: NSP_STATS_FILE is not a numaspan option (NSP_STATS?); ignored
NSP_COLOUR=blue|numaspan: NSP_COLOUR is not a numaspan option; ignored
NSP_MEMORY_LIMIT_HARD_X=|numaspan: NSP_MEMORY_LIMIT_HARD_X is not a numaspan option (NSP_MEMORY_LIMIT_HARD?); ignored
CASES
# two of them: each named once, and the options beside them still read
rc=$(NSP_STAT=1 NSP_PACR=sync NSP_CACHE_GROUPING=core run "$helper" topo)
[ "$rc" = 0 ] && ok || bad "two unknown variables exited $rc: $(cat "$err")"
[ "$(grep -c 'not a numaspan option' "$err")" = 2 ] && ok || bad "want two warnings: $(cat "$err")"
has "NSP_PACR is not a numaspan option (NSP_PACER?)" "$err"
has "grouping=core" "$out"
# named before a value beside it is refused: the process says both, then stops
rc=$(NSP_STAT=1 NSP_PACER=foo run "$helper" topo)
[ "$rc" = 2 ] && ok || bad "an unknown variable beside NSP_PACER=foo exited $rc, want 2"
has "NSP_STAT is not a numaspan option (NSP_STATS?); ignored" "$err"
has 'NSP_PACER="foo": expected sync or concurrent' "$err"
# a sound environment is silent
rc=$(NSP_STATS=0 NSP_CACHE_GROUPING=core run "$helper" topo)
[ ! -s "$err" ] && ok || bad "options alone printed: $(cat "$err")"
# the NSP_ variables numaspan's own tools, benchmarks and tests read are not options and must not
# be warned about: every one the tree reads (getenv or env_*("NSP_..."), os.environ, a shell's
# ${NSP_...}) is either an option or on the list beside the table in host/options.c. Each of them
# that is not an option is set here at once; a new one missing from the list is named.
if git -C "$src" rev-parse --git-dir >/dev/null 2>&1; then
  files() { git -C "$src" ls-files -co --exclude-standard -- "$@" | sed "s|^|$src/|"; }
else
  files() { local a=() p; for p in "$@"; do a+=(-o -name "$p"); done
            find "$src" \( -name 'build*' -o -name .git \) -prune -o -type f \( "${a[@]:1}" \) -print; }
fi
read_names=$( { files '*.c' '*.h' '*.sh' '*.py' | xargs grep -hoE '[A-Za-z_]*env[A-Za-z_]*\("NSP_[A-Z0-9_]+"'
                files '*.py' | xargs grep -hoE 'environ(\.get)?[(\[]"NSP_[A-Z0-9_]+"'
                files '*.sh' | xargs grep -hoE '\$\{?NSP_[A-Z0-9_]+'; } |
              grep -oE 'NSP_[A-Z0-9_]+' | sort -u)
opt_names=$("$helper" option-names)
others=$(comm -23 <(echo "$read_names") <(echo "$opt_names" | sort -u))
n_read=$(echo "$read_names" | wc -w) n_others=$(echo "$others" | wc -w)
# not vacuous: the grep finds the tree's readers (NSP_TRACE in test_pacer.c, NSP_BENCH_LIB ...)
[ "$n_read" -ge 10 ] && [ "$n_others" -ge 5 ] && ok ||
  bad "the tree's NSP_ readers not found ($n_read read, $n_others not options): the grep is broken"
rc=$(run env $(for v in $others; do printf '%s=1 ' "$v"; done) \
         NSP_TOPOLOGY="synthetic:pack:1 numa:1 core:2 pu:1" "$helper" topo)
[ "$rc" = 0 ] && ok || bad "the tree's own NSP_ variables exited $rc: $(head -c 300 "$err")"
! grep -q 'not a numaspan option' "$err" && ok ||
  bad "read in the tree but neither an option nor listed in host/options.c: $(grep -o 'NSP_[A-Z0-9_]* is not' "$err" | tr '\n' ' ')"
# a limit of one arena or more works (the node maps that much)
rc=$(NSP_NODE_LIMITS=0=64M run "$helper" topo)
[ "$rc" = 0 ] && ok || bad "NSP_NODE_LIMITS=0=64M exited $rc: $(cat "$err")"
# on 4 nodes, a node below one arena maps nothing and spills to the others: allowed
rc=$(NSP_TOPOLOGY="synthetic:pack:2 numa:2 core:4 pu:1" NSP_NODE_LIMITS=1=32M run "$helper" topo)
[ "$rc" = 0 ] && ok || bad "NSP_NODE_LIMITS=1=32M on 4 nodes exited $rc: $(cat "$err")"

# NSP_DEBUG=3 validates the heap and recounts the ledger at exit: a sound run stays silent
rc=$(NSP_DEBUG=3 run "$helper" stats)
[ "$rc" = 0 ] && ok || bad "NSP_DEBUG=3 exited $rc: $(cat "$err")"
! grep -q "NSP_DEBUG" "$err" && ok || bad "NSP_DEBUG=3 complained: $(cat "$err")"

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

# a remote double free (issue 11, Deliver 6): a thread frees main's object twice. On virtual
# cores the thread's cache is not the object's, so both frees are remote (the span's freed bit);
# the second is reported at once, naming the object
quiet="env -u NSP_SECURE -u NSP_ACCOUNTING -u NSP_CACHE_GROUPING -u NSP_TOPOLOGY"
rc=$(run $quiet NSP_ON_ERROR=warn NSP_TOPOLOGY="synthetic:pack:2 numa:2 core:4 pu:1" \
     "$helper" remote-double-free)
[ "$rc" = 0 ] && ok || bad "remote double free with warn exited $rc: $(cat "$err")"
obj=$(sed -n 's/^object=\(0x[0-9a-f]*\) .*/\1/p' "$out")
has "double=1 " "$out"
grep -q ' remote=[1-9]' "$out" && ok || bad "remote double free: no remote free counted: $(cat "$out")"
has "numaspan: free($obj): double free: the object is not allocated" "$err"
rc=$(run $quiet NSP_TOPOLOGY="synthetic:pack:2 numa:2 core:4 pu:1" "$helper" remote-double-free)
[ "$rc" = 134 ] && ok || bad "remote double free exited $rc, want 134 (SIGABRT)"
has "double free: the object is not allocated; aborting" "$err"
# the same on the real machine: the thread's frees are local or remote as its cpu falls
rc=$(run $quiet NSP_ON_ERROR=warn "$helper" remote-double-free)
[ "$rc" = 0 ] && ok || bad "double free from a thread exited $rc: $(cat "$err")"
has "double=1 " "$out"

# a stray write into a free object of a bin's list: the pop refuses the link it decodes, the
# fold names the object, and nothing is handed out twice (bins only: the real machine with
# rseq; no idle release, which would fold the bin before the write)
rc=$(run $quiet NSP_IDLE_RELEASE_MS=0 NSP_ON_ERROR=warn "$helper" stray-write)
if [ "$rc" = 77 ]; then
  echo "skip: stray write into a bin's list: $(cat "$out")"
else
  [ "$rc" = 0 ] && ok || bad "stray write with warn exited $rc: $(cat "$err")"
  obj=$(sed -n 's/^object=//p' "$out")
  has "numaspan: malloc($obj): free list corrupt: the freed object's link was overwritten" "$err"
  has "distinct=1" "$out"
  rc=$(run $quiet NSP_IDLE_RELEASE_MS=0 "$helper" stray-write)
  [ "$rc" = 134 ] && ok || bad "stray write exited $rc, want 134 (SIGABRT)"
  has "free list corrupt" "$err"
fi

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

# NSP_STATS=FILE: a process's block reaches the file in one write(2) on its O_APPEND descriptor,
# so the blocks of processes that exit together (make -j, a pipeline, tests/real's cases) never
# interleave mid-line; a block over 4 KiB used to go out in stdio's 4 KiB pieces. Seen with
# strace, so it does not depend on winning a race.
if ! command -v strace >/dev/null || ! strace -qq -o /dev/null true 2>/dev/null; then
  echo "skip: stats block in one write (no strace, or it cannot trace here)"
else
  sfile=$(mktemp) strc=$(mktemp)
  rc=$(NSP_STATS=$sfile run strace -f -qq -e trace=openat,write -o "$strc" "$helper" stats-wide)
  [ "$rc" = 0 ] && ok || bad "stats-wide exited $rc: $(head -c 300 "$err")"
  size=$(wc -c <"$sfile")
  [ "$size" -gt 4096 ] && ok || bad "stats-wide's block is $size bytes: too small to test the pieces"
  # the writes on the descriptor of the file's last open (the one at exit)
  writes=$(awk -v f="\"$sfile\"" '
    $2 ~ /^openat\(/ && index($0, f) { fd = $NF; n = 0; next }
    fd != "" && index($2, "write(" fd ",") == 1 { n++ }
    END { print n + 0 }' "$strc")
  [ "$writes" = 1 ] && ok || bad "the stats block ($size bytes) took $writes writes, want 1"
  has "numaspan stats:" "$sfile"
  rm -f "$sfile" "$strc"
fi

# ---- options seen by a program whose first malloc comes before libc has set environ ----
# clang's -fsanitize=undefined (and =fuzzer) runtime allocates from a preinit function: getenv
# sees nothing then, and the options were silently their defaults
cc_early=$(command -v clang || command -v clang-14 || true)
if [ -z "$lib" ]; then
  echo "skip: options before environ (no library given: a sanitizer build)"
elif [ -z "$cc_early" ]; then
  echo "skip: options before environ (no clang to build a -fsanitize=undefined program)"
else
  src=$(cd "$(dirname "$0")/.." && pwd)
  early=$(mktemp)
  if ! "$cc_early" -fsanitize=undefined -I"$src/include" -o "$early" "$src/tests/helper_process.c" \
       -L"$(dirname "$lib")" -lnumaspan -Wl,-rpath,"$(dirname "$lib")" 2>"$err"; then
    bad "clang -fsanitize=undefined could not build the helper: $(cat "$err")"
  else
    rc=$(NSP_TOPOLOGY="synthetic:pack:2 numa:2 core:4 pu:1" run "$early" topo)
    [ "$rc" = 0 ] && ok || bad "early topo exited $rc: $(cat "$err")"
    has "spec=synthetic:pack:2 numa:2 core:4 pu:1" "$out"
    # behind 200 KB of other variables: /proc/self/environ is read in pieces
    fill=$(head -c 50000 /dev/zero | tr '\0' x)
    rc=$(F1=$fill F2=$fill F3=$fill F4=$fill NSP_PACER=foo run "$early" topo)
    [ "$rc" = 2 ] && ok || bad "early NSP_PACER=foo exited $rc, want 2 (refused)"
    has 'NSP_PACER="foo": expected sync or concurrent' "$err"
    rc=$(NSP_STATS=1 run "$early" stats)
    has "numaspan stats:" "$err"
    # without /proc (a private mount namespace hides it) the options cannot be seen in time:
    # each one set is named, not dropped silently
    if unshare -Urm true 2>/dev/null; then
      rc=$(NSP_PACER=foo run unshare -Urm sh -c 'mount -t tmpfs none /proc && exec "$0" topo' "$early")
      [ "$rc" = 0 ] && ok || bad "early without /proc exited $rc: $(cat "$err")"
      has 'NSP_PACER="foo": set, but numaspan started before the environment was visible' "$err"
    else
      echo "skip: options before environ without /proc (no user and mount namespaces here)"
    fi
  fi
  rm -f "$early"
fi

# ---- the process's life, numaspan preloaded into a plain program ----
if [ -z "$plain" ] || [ -z "$lib" ]; then
  echo "skip: preloaded cases (no plain helper or library given: a sanitizer build)"
else
  pre() { LD_PRELOAD=$lib timeout 20 "$plain" "$@"; }
  # hwloc is loaded for the topology's load only (issue 11, peak RSS): a preloaded program whose
  # allocator is initialised (its stats at exit say so) has neither libhwloc nor the libraries it
  # brings (libudev) mapped, on the real machine and on a synthetic topology
  for spec in real "synthetic:pack:2 numa:2 core:2 pu:1"; do
    rc=$(NSP_TOPOLOGY=$spec NSP_STATS=1 LD_PRELOAD=$lib run timeout 20 cat /proc/self/maps)
    [ "$rc" = 0 ] && ok || bad "cat /proc/self/maps [$spec] exited $rc: $(head -c 300 "$err")"
    has "numaspan stats:" "$err"
    has "libnumaspan" "$out"
    ! grep -E "libhwloc|libudev" "$out" >/dev/null && ok ||
      bad "[$spec] hwloc still mapped after initialisation: $(grep -E 'libhwloc|libudev' "$out" | head -3)"
  done
  # ... and its dlopen may run inside another: a library whose constructor, run before numaspan's,
  # dlopens something makes the process's first malloc inside the loader
  cc_nest=$(command -v cc || command -v gcc || true)
  if [ -z "$cc_nest" ]; then
    echo "skip: first malloc inside a dlopen (no C compiler)"
  else
    nest=$(mktemp -d)
    printf '%s\n' '#include <dlfcn.h>' '#include <stdio.h>' \
      '__attribute__((constructor)) static void a(void) {' \
      '    fprintf(stderr, "ctor dlopen %s\n", dlopen("libm.so.6", RTLD_NOW) ? "ok" : dlerror()); }' \
      >"$nest/liba.c"
    printf '%s\n' '#include <stdio.h>' '#include <stdlib.h>' \
      'int main(void) { char *p = malloc(64); printf("main %s\n", p && getenv("NSP_NEST") ? "ok" : "bad");' \
      '                 free(p); return 0; }' >"$nest/main.c"
    if "$cc_nest" -shared -fPIC -o "$nest/liba.so" "$nest/liba.c" 2>"$err" &&
       "$cc_nest" -o "$nest/main" "$nest/main.c" -Wl,--no-as-needed -L"$nest" -la \
         -Wl,-rpath,"$nest" 2>>"$err"; then
      rc=$(NSP_NEST=1 NSP_STATS=1 LD_PRELOAD=$lib run timeout 20 "$nest/main")
      [ "$rc" = 0 ] && ok || bad "first malloc inside a dlopen: exited $rc: $(head -c 300 "$err")"
      has "ctor dlopen ok" "$err"
      has "main ok" "$out"
      has "numaspan stats:" "$err"
    else
      bad "could not build the dlopen-in-a-constructor programs: $(cat "$err")"
    fi
    rm -rf "$nest"
  fi
  # the real machine's load describes the CPU caches only for an l2 or l3 grouping: with pu (the
  # default) or core, every process start skips their size, line and set files (hwloc still
  # reads each cache's level and type to filter it: 11 opens a PU fewer here, of 46)
  if ! command -v strace >/dev/null || ! strace -qq -o /dev/null true 2>/dev/null; then
    echo "skip: cache files at start (no strace, or it cannot trace here)"
  else
    copens() { # GROUPING: opens of cache/indexN/size by a preloaded /bin/true
      local t; t=$(mktemp)
      NSP_TOPOLOGY=real NSP_CACHE_GROUPING=$1 LD_PRELOAD=$lib strace -f -qq -e trace=openat \
        -o "$t" /bin/true 2>/dev/null
      grep -c 'cache/index[0-9]*/size"' "$t"; rm -f "$t"
    }
    with_l2=$(copens l2)
    if [ "$with_l2" = 0 ]; then
      echo "skip: cache files at start (an l2 grouping reads none here: no cache directories in sysfs)"
    else
      for g in pu core; do
        n=$(copens $g)
        [ "$n" = 0 ] && ok || bad "grouping $g: $n cache size files read at start (l2: $with_l2)"
      done
    fi
  fi
  # hwloc's plugins are not even looked for at start (topology.c, topology_init): the plugin
  # search names no directory, so no plugin file is listed, stat'ed or opened, whatever its name
  # (HWLOC_PLUGINS_VERBOSE prints the search and each file found); a path the user chose is
  # searched, and the program's environment is its own afterwards
  pverbose() { HWLOC_PLUGINS_VERBOSE=1 NSP_TOPOLOGY=real LD_PRELOAD=$lib /bin/true 2>&1; }
  search=$(pverbose | grep 'Starting plugin dlforeach in')
  if [ -z "$search" ]; then
    echo "skip: hwloc's plugin search (this hwloc has no plugins: it prints no search)"
  else
    [ "$search" = "hwloc: Starting plugin dlforeach in " ] && ok ||
      bad "a preloaded start searches for hwloc plugins: '$search'"
    n=$(pverbose | grep -c 'Plugin dlforeach found')
    [ "$n" = 0 ] && ok || bad "a preloaded start found $n hwloc plugin files"
    pdir=$(mktemp -d)
    : >"$pdir/hwloc_nsptest.so" # not a library: found, then refused by the loader
    HWLOC_PLUGINS_PATH="$pdir" pverbose | grep -q "found .$pdir/hwloc_nsptest" && ok ||
      bad "the user's HWLOC_PLUGINS_PATH was not searched"
    rm -rf "$pdir"
    n=$(LD_PRELOAD=$lib env | grep -c '^HWLOC_PLUGINS')
    [ "$n" = 0 ] && ok || bad "the program sees $n HWLOC_PLUGINS variables numaspan set"
  fi
  # preloaded into a program that never calls it: a mistyped name is still named, once
  # (timeout runs without the preload: each process that has it says so once)
  rc=$(run timeout 20 env NSP_MEMORY_LIMT=1G LD_PRELOAD="$lib" "$plain" threads)
  [ "$rc" = 0 ] && ok || bad "preloaded with NSP_MEMORY_LIMT exited $rc: $(head -c 300 "$err")"
  [ "$(grep -c 'NSP_MEMORY_LIMT is not a numaspan option (NSP_MEMORY_LIMIT?); ignored' "$err")" = 1 ] &&
    ok || bad "preloaded: want the warning once: $(cat "$err")"
  # a plain program keeps exactly its own threads; a paced or traced one gets the pacer thread
  rc=$(run pre threads)
  [ "$rc" = 0 ] && ok || bad "threads exited $rc"
  has "threads=1" "$out"
  rc=$(NSP_MEMORY_LIMIT=1G run pre threads)
  has "threads=2" "$out"
  rc=$(NSP_TRACE=/dev/null run pre threads)
  has "threads=2" "$out"
  # main calls pthread_exit: the process ends (status 0), with the pacer thread running too
  rc=$(run pre pthread-exit)
  [ "$rc" = 0 ] && ok || bad "pthread_exit from main exited $rc (124: it hung)"
  has "threads=1" "$out"
  rc=$(NSP_MEMORY_LIMIT=1G run pre pthread-exit)
  [ "$rc" = 0 ] && ok || bad "pthread_exit from main, with the pacer thread, exited $rc (124: it hung)"
  has "threads=2" "$out"
  rc=$(NSP_PACER=concurrent NSP_MEMORY_LIMIT=1G run pre pthread-exit)
  [ "$rc" = 0 ] && ok || bad "pthread_exit from main, concurrent pacer, exited $rc (124: it hung)"
  # ... and when the last thread of the program is not main
  rc=$(NSP_MEMORY_LIMIT=1G run pre pthread-exit-last)
  [ "$rc" = 0 ] && ok || bad "pthread_exit from main, a thread last, exited $rc (124: it hung)"
  has "last thread done" "$out"
  # fork from a thread: the child of a plain program has no thread of ours, and every child ends
  rc=$(run pre fork-from-thread)
  [ "$rc" = 0 ] && ok || bad "fork-from-thread exited $rc"
  has "child threads=1" "$out"
  has "child status=0" "$out"
  rc=$(NSP_MEMORY_LIMIT=1G run pre fork-from-thread)
  [ "$rc" = 0 ] && ok || bad "fork-from-thread with a memory limit exited $rc"
  has "child status=0" "$out"
  # a threaded process cannot unshare a user namespace: a plain one must still be able to
  if ! command -v unshare >/dev/null; then
    echo "skip: unshare -U (no unshare command)"
  elif ! unshare -U true 2>/dev/null; then
    echo "skip: unshare -U (not allowed here even without numaspan)"
  else
    rc=$(LD_PRELOAD=$lib run timeout 20 unshare -U true)
    [ "$rc" = 0 ] && ok || bad "unshare -U under numaspan exited $rc: $(cat "$err")"
  fi
fi

echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
