#!/usr/bin/env bash
# tests/test_bench_device.sh — `numaspan bench device` measures against fair baselines (issue 13):
# every allocation case carries the unaggregated, warp-aggregated and work-group-aggregated bumps,
# its ratio is taken against the fastest of them, the steady-state case reports steady against
# fresh, and each row carries the heap's refill / forced / lost counters. The bench itself checks
# that every baseline handed out disjoint ranges (it exits 1 otherwise) and that the steady
# state's live handles are distinct. Exit 77 (skipped, reason printed): no OpenCL device.
# usage: test_bench_device.sh <path to bench_device>
set -u
bench=$1
py=/usr/bin/python3
[ -x "$py" ] || py=python3
out=$(mktemp)
trap 'rm -f "$out"' EXIT
"$bench" --quick --reps 2 --max-n 4096 --only one,group,mixed,steady --json >"$out"
rc=$?
[ "$rc" = 77 ] && { echo "skipped: no OpenCL device"; exit 77; }
[ "$rc" = 0 ] || { echo "FAIL: bench_device exited $rc"; exit 1; }
"$py" - "$out" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
errors = []
if not d.get("warp_bump"):
    errors.append("the header does not say which warp-aggregated bump the device compiled")
rows = d["rows"]
cases = {r["case"] for r in rows}
for c in ("one-size", "one-per-group", "group-entry", "mixed", "steady"):
    if c not in cases:
        errors.append("no %s row" % c)
names = {"bump": "bump_ms", "bump-warp": "bump_warp_ms", "bump-group": "bump_group_ms"}
for r in rows:
    tag = "%s n=%d %d-%d" % (r["case"], r["n"], r["size_lo"], r["size_hi"])
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
