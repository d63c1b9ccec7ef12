#!/usr/bin/env bash
# tests/test_bench_device.sh — `numaspan bench device` measures against fair baselines (issue 13):
# every allocation case carries the unaggregated, warp-aggregated and work-group-aggregated bumps,
# its ratio is taken against the fastest of them, the steady-state case reports steady against
# fresh, and each row carries the heap's refill / forced / lost counters. The bench itself checks
# that every baseline handed out disjoint ranges (it exits 1 otherwise) and that the steady
# state's live handles are distinct. Out of memory at 256 MiB returns its null with >= 95% of the
# heap usable and 0 lost (issue 13; its time, target <= 50 ms, is printed, not asserted), and on
# a CPU device the claims' prefetch of the next object is compiled in (below). Exit 77 (skipped, reason printed): no OpenCL device.
# usage: test_bench_device.sh <path to bench_device>
set -u
bench=$1
py=/usr/bin/python3
[ -x "$py" ] || py=python3
out=$(mktemp)
trap 'rm -f "$out"' EXIT
"$bench" --quick --reps 2 --max-n 4096 --only one,group,mixed,steady,oom --json >"$out"
rc=$?
[ "$rc" = 77 ] && { echo "skipped: no OpenCL device"; exit 77; }
[ "$rc" = 0 ] || { echo "FAIL: bench_device exited $rc"; exit 1; }
"$py" - "$out" <<'PY' || exit 1
import json, sys
d = json.load(open(sys.argv[1]))
errors = []
if not d.get("warp_bump"):
    errors.append("the header does not say which warp-aggregated bump the device compiled")
rows = d["rows"]
cases = {r["case"] for r in rows}
for c in ("one-size", "one-per-group", "group-entry", "mixed", "steady", "oom"):
    if c not in cases:
        errors.append("no %s row" % c)
names = {"bump": "bump_ms", "bump-warp": "bump_warp_ms", "bump-group": "bump_group_ms"}
for r in rows:
    tag = "%s n=%d %d-%d" % (r["case"], r["n"], r["size_lo"], r["size_hi"])
    if r["case"] == "oom":
        # issue 13's target at 256 MiB: the null in <= 50 ms (extra: a launch asking the full
        # heap once more per work-item), >= 95% of the heap usable, 0 lost. The time is printed
        # against its target, not asserted (a timed assertion flakes on a loaded machine: 59.9 ms
        # once under load; the bench's own table is where the target is measured); the null must
        # come back (a hang is CTest's timeout), with the heap usable and nothing lost
        print("%s: the null in %.3f ms (target <= 50 ms: %s)"
              % (tag, r["extra"], "met" if 0 < r["extra"] <= 50 else "missed in this run"))
        if not (r["extra"] > 0) or r["usable_pct"] < 95 or r["spurious_nulls"] or r["lost"]:
            errors.append("%s: null in %.3f ms, %.1f%% usable, %d spurious nulls, %d lost (want "
                          "a null, >= 95%%, 0, 0)" % (tag, r["extra"], r["usable_pct"],
                                                     r["spurious_nulls"], r["lost"]))
        continue
    for k in ("refills", "forced_refills", "lost", "null_oom", "steals", "reclaims"):
        if not isinstance(r.get(k), int) or r[k] < 0:
            errors.append("%s: counter %s missing or not a count: %r" % (tag, k, r.get(k)))
    times = {n: r.get(k, 0) for n, k in names.items()}
    if min(times.values()) <= 0:
        errors.append("%s: a baseline is missing: %s" % (tag, times))
        continue
    best = min(times, key=times.get)
    if r["baseline"] != best or abs(r["baseline_ms"] - times[best]) > 1e-6:
        errors.append("%s: baseline %s %.6f, but the fastest is %s %.6f"
                      % (tag, r["baseline"], r["baseline_ms"], best, times[best]))
    if abs(r["ratio_to_baseline"] - r["malloc_ms"] / times[best]) > 1e-3 * max(1, r["ratio_to_baseline"]):
        errors.append("%s: ratio_to_baseline %.3f is not malloc / baseline" % (tag, r["ratio_to_baseline"]))
    if r["spurious_nulls"] or r["lost"]:
        errors.append("%s: %d nulls, %d lost" % (tag, r["spurious_nulls"], r["lost"]))
    if r["case"] != "steady" and r["refills"] < 1:
        errors.append("%s: a fresh heap served mallocs without a refill: counters not read" % tag)
    if r["case"] == "steady":
        fresh = r["fresh_malloc_ms"] + r["fresh_free_ms"]
        if r["fresh_malloc_ms"] <= 0 or r["fresh_free_ms"] <= 0:
            errors.append("%s: no fresh-heap times beside the steady state" % tag)
        elif abs(r["extra"] - r["malloc_ms"] / fresh) > 1e-3 * max(1, r["extra"]):
            errors.append("%s: steady / fresh %.3f is not %.6f / %.6f" % (tag, r["extra"], r["malloc_ms"], fresh))
for e in errors:
    print("FAIL:", e)
print("%d rows checked, %d failures" % (len(rows), len(errors)))
sys.exit(1 if errors else 0)
PY

# On a CPU device on x86-64 a claim prefetches the next object of its span for writing
# (kernels/nsp_dheap.cl, NSP_PREFETCH_OBJECT): every claim is a locked add, which waits for the
# caller's store into the object it got before, a cache miss per object when sizes are mixed
# (77% of the mixed 16-4096 B case's malloc kernel sat on the slot word's lock xadd; with the
# prefetch the case runs in about 0.55x the time, README). Its speed cannot be asserted here
# (a timed A/B on the shared 2-CPU VM failed once in 20 runs under load), so this checks that it
# is compiled in: POCL's machine code for the malloc kernel (its kernel cache, a fresh one per
# build) holds prefetchw, and the same build with -DNSP_NO_OBJECT_PREFETCH does not (so the check
# can see the difference).
info=$("$py" -c 'import json,sys; d=json.load(open(sys.argv[1])); print("gpu" if d["gpu"] else "cpu")' "$out")
if [ "$info" != cpu ] || [ "$(uname -m)" != x86_64 ]; then
  echo "skipped the object-prefetch check: not a CPU device on x86-64 (it is a no-op elsewhere)"
  exit 0
fi
case "$("$py" -c 'import json,sys; print(json.load(open(sys.argv[1]))["device"])' "$out")" in
  *"Portable Computing Language"*) ;;
  *) echo "skipped the object-prefetch check: not POCL (its kernel cache is where the code is read)"; exit 0 ;;
esac
command -v objdump >/dev/null || { echo "skipped the object-prefetch check: no objdump"; exit 0; }
cache=$(mktemp -d)
trap 'rm -rf "$out" "$cache"' EXIT
prefetches() { # $1: build options; prints the prefetchw count in the malloc kernel's machine code
  rm -rf "$cache"/*
  POCL_CACHE_DIR=$cache POCL_KERNEL_CACHE=1 "$bench" --reps 1 --max-n 1024 --only mixed \
    --cl-options "$1" >/dev/null || { echo "FAIL: bench_device --cl-options '$1' exited $?" >&2; return 1; }
  so=$(find "$cache" -path '*k_malloc*' -name '*.so' | head -1)
  [ -n "$so" ] || { echo "FAIL: no machine code of k_malloc in POCL's cache ($cache)" >&2; return 1; }
  objdump -d "$so" | grep -c prefetchw || true
}
on=$(prefetches "") || exit 1
off=$(prefetches "-DNSP_NO_OBJECT_PREFETCH") || exit 1
echo "prefetchw in the malloc kernel: $on with the object prefetch, $off without"
if [ "$on" -lt 1 ] || [ "$off" -ne 0 ]; then
  echo "FAIL: the claims' prefetch of the next object is not compiled in as it should be"
  exit 1
fi
