#!/usr/bin/env bash
# tests/test_bench_device.sh — `numaspan bench device` measures against fair baselines (issue 13):
# every allocation case carries the unaggregated, warp-aggregated and work-group-aggregated bumps,
# its ratio is taken against the fastest of them, the steady-state case reports steady against
# fresh, and each row carries the heap's refill / forced / lost counters. The bench itself checks
# that every baseline handed out disjoint ranges (it exits 1 otherwise) and that the steady
# state's live handles are distinct. Out of memory at 256 MiB meets issue 13's target (the null
# in <= 50 ms, >= 95% usable, 0 lost), and on a CPU device the claims' prefetch of the next object
# still pays (below). Exit 77 (skipped, reason printed): no OpenCL device.
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
        # heap once more per work-item), >= 95% of the heap usable, 0 lost
        if not (0 < r["extra"] <= 50) or r["usable_pct"] < 95 or r["spurious_nulls"] or r["lost"]:
            errors.append("%s: null in %.3f ms, %.1f%% usable, %d lost (want <= 50 ms, >= 95%%, 0)"
                          % (tag, r["extra"], r["usable_pct"], r["spurious_nulls"]))
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
# (77% of the mixed 16-4096 B case's malloc kernel sat on the slot word's lock xadd). The case
# with the prefetch against the same build without it (-DNSP_NO_OBJECT_PREFETCH), alternating
# seven times, on one thread (a launch on two waits for whichever other jobs preempt): the fastest
# run of each (load only adds time) must stay clearly apart (measured 0.37-0.55x on the 2-CPU VM; the bound 0.8 leaves room for noise).
info=$("$py" -c 'import json,sys; d=json.load(open(sys.argv[1])); print("gpu" if d["gpu"] else "cpu")' "$out")
if [ "$info" != cpu ] || [ "$(uname -m)" != x86_64 ]; then
  echo "skipped the object-prefetch check: not a CPU device on x86-64 (it is a no-op elsewhere)"
  exit 0
fi
ab=$(mktemp)
trap 'rm -f "$out" "$ab"' EXIT
for i in 1 2 3 4 5 6 7; do
  for o in "" "-DNSP_NO_OBJECT_PREFETCH"; do
    POCL_MAX_PTHREAD_COUNT=1 "$bench" --reps 3 --max-n 65536 --heap-mib 512 --only mixed --json --cl-options "$o" >"$ab.run" \
      || { echo "FAIL: bench_device --cl-options '$o' exited $?"; exit 1; }
    "$py" -c 'import json,sys
d = json.load(open(sys.argv[1]))
print(sys.argv[2] or "on", [r["malloc_ms"] for r in d["rows"] if r["case"] == "mixed" and r["size_hi"] == 4096][0])' \
      "$ab.run" "$o" >>"$ab"
  done
done
rm -f "$ab.run"
"$py" - "$ab" <<'PY'
import sys
on, off = [], []
for line in open(sys.argv[1]):
    k, v = line.split()
    (on if k == "on" else off).append(float(v))
m_on, m_off = min(on), min(off)
print("mixed 16-4096 B malloc, fastest of 7: %.3f ms with the object prefetch, %.3f ms without (%.2fx)"
      % (m_on, m_off, m_on / m_off))
if m_on > 0.8 * m_off:
    print("FAIL: the next object's prefetch no longer pays on this CPU device (%s vs %s)" % (on, off))
    sys.exit(1)
PY
