#!/usr/bin/env bash
# tests/test_experiments.sh — the experiment scripts themselves: a quick run of every experiment
# (the MPI one with 2 ranks), then checks of what it wrote: each CSV has its columns and rows of
# numbers, each plot is a valid non-empty PNG, the report references every plot and table and no
# experiment failed. Then the host experiment alone with every producer/consumer run starved
# (bench_host's NSP_BENCH_TEST_STARVE): each such run is flagged in host_runs.csv with its call's
# seed, each such cell suspect in host.csv and marked '?' in the report's table, and the report
# counts the flagged runs.
# usage: test_experiments.sh BUILD_DIR
set -euo pipefail
build=$1
root=$(cd "$(dirname "$0")/.." && pwd)
py=/usr/bin/python3
[ -x "$py" ] || py=python3
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
NSP_BUILD=$build "$py" "$root/experiments/exp.py" --quick --out "$out" 2>"$out/progress.log" \
  || { cat "$out/progress.log" >&2; cat "$out/REPORT.md" >&2 || true; exit 1; }
"$py" - "$out" <<'PY'
import csv, os, struct, sys
out = sys.argv[1]
want = {
    "topology/topologies.csv": ["topology", "spec", "nodes", "caches", "distance_source", "binding"],
    "host/host.csv": ["topology", "virtual_cores", "workload", "unit", "allocator", "median", "min",
                      "max", "ratio_to_glibc", "peak_rss_kb", "reps", "flagged_runs", "suspect"],
    "host/host_runs.csv": ["topology", "virtual_cores", "workload", "unit", "allocator", "rep",
                           "value", "peak_rss_kb", "flagged", "seed"],
    "locality/locality.csv": ["topology", "nodes", "caches", "threads", "mops", "refills", "spills",
                              "local_share", "node_limits"],
    "pacer-trace/trace.csv": ["time_ns", "node", "heap_live", "trigger", "goal", "limit", "event"],
    "pacer-trace/events.csv": ["event", "lines"],
    "accounting/accounting.csv": ["caches", "live", "mode", "runs", "censored_runs", "cycles",
                                  "cycles_p25", "cycles_p75", "cycles_over_exact", "peak",
                                  "peak_ledger", "goal", "cached", "c_over_live", "peak_over_live",
                                  "predicted_peak_over_live", "ok_share", "peak_goal_p95",
                                  "early_med", "lead_med", "lead_max", "predicted_early",
                                  "predicted_early_no_budget", "live_err_max", "backstop",
                                  "rss_kb", "pause_ms", "cycle_cpu_ms", "collector_ms"],
    "accounting/peak_goal_cycles.csv": ["caches", "live_mib", "mode", "cycles", "share_le_1.05",
                                        "p50", "p95", "max"],
    "accounting/sweeps.csv": ["sweep", "percent", "heap_min", "caches", "live", "mode", "runs",
                              "censored_runs", "cycles", "cycles_p25", "cycles_p75",
                              "cycles_over_exact", "peak", "goal", "ok_share", "lead_med",
                              "predicted_early", "live_err_max", "cycle_cpu_ms", "collector_ms",
                              "rss_kb"],
    "device/device.csv": ["where", "device", "case", "n", "size_lo", "size_hi", "malloc_ms",
                          "free_ms", "bump_ms", "allocs_per_s", "ratio_to_bump", "usable_pct",
                          "spurious_nulls"],
    "mpi/ranks.csv": ["rank", "host", "cpu", "node", "numaspan", "seconds", "mops", "mallocs",
                      "refills", "spills", "remote_frees", "bytes_in_use", "rss_kb"],
}
numeric = {"nodes", "caches", "virtual_cores", "median", "ratio_to_glibc", "peak_rss_kb", "threads",
           "mops", "refills", "spills", "local_share", "time_ns", "node", "heap_live", "lines",
           "live", "peak", "goal", "cached", "cycles", "c_over_live", "peak_over_live", "n",
           "malloc_ms", "bump_ms", "rank", "mallocs", "rss_kb", "flagged_runs", "suspect",
           "flagged", "seed"}
errors = []
for path, cols in want.items():
    p = os.path.join(out, path)
    if not os.path.exists(p):
        errors.append("%s: missing" % path)
        continue
    with open(p) as f:
        r = csv.DictReader(f)
        if r.fieldnames != cols:
            errors.append("%s: columns %s, expected %s" % (path, r.fieldnames, cols))
            continue
        rows = list(r)
    if not rows:
        errors.append("%s: no rows" % path)
    for i, row in enumerate(rows):
        for c in cols:
            if c in numeric and row[c] != "":
                try:
                    float(row[c])
                except ValueError:
                    errors.append("%s row %d: %s=%r is not a number" % (path, i, c, row[c]))
# the accounting experiment's rows must be the pacer's, not its backstop's (issue 12)
for name in ("accounting/accounting.csv", "accounting/sweeps.csv"):
    acct = os.path.join(out, name)
    if os.path.exists(acct):
        for row in csv.DictReader(open(acct)):
            if row.get("censored_runs") not in ("0", "0.0"):
                errors.append("%s: censored row %s" % (name, row))
# and the per-cycle distributions come from cycles, one line each (bench_pacer --cycles-out)
cyc = os.path.join(out, "accounting/peak_goal_cycles.csv")
if os.path.exists(cyc):
    for row in csv.DictReader(open(cyc)):
        if row["mode"] == "over" and int(row["cycles"]) < 5:
            errors.append("accounting/peak_goal_cycles.csv: over with %s cycles" % row["cycles"])
ranks = list(csv.DictReader(open(os.path.join(out, "mpi/ranks.csv"))))
if len(ranks) != 2 or any(r["numaspan"] != "True" for r in ranks):
    errors.append("mpi/ranks.csv: expected 2 ranks on numaspan, got %s" % ranks)
pngs = []
for d, _, files in os.walk(out):
    for f in files:
        if f.endswith(".png"):
            pngs.append(os.path.relpath(os.path.join(d, f), out))
expected_pngs = {"host/throughput.png", "locality/local_share.png", "pacer-trace/heaplive.png",
                 "accounting/peak_vs_cached.png", "accounting/peak_goal_cdf.png",
                 "accounting/sweeps.png", "device/scaling.png"}
for m in expected_pngs - set(pngs):
    errors.append("%s: plot missing" % m)
for p in pngs:
    data = open(os.path.join(out, p), "rb").read()
    if len(data) < 5000 or data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        errors.append("%s: not a valid non-empty PNG (%d bytes)" % (p, len(data)))
    else:
        w, h = struct.unpack(">II", data[16:24])
        if w < 300 or h < 200:
            errors.append("%s: %dx%d is too small to read" % (p, w, h))
report = open(os.path.join(out, "REPORT.md")).read()
for p in pngs:
    if "](%s)" % p not in report:
        errors.append("REPORT.md does not show %s" % p)
for path in want:
    if "`%s`" % path not in report:
        errors.append("REPORT.md does not name %s" % path)
if "**Failed**" in report or "Skipped" in report:
    errors.append("an experiment failed or was skipped:\n" + report)
if "## Headline" not in report:
    errors.append("REPORT.md has no headline table")
if errors:
    print("\n".join(errors))
    sys.exit(1)
print("experiments: %d CSV files, %d plots, report checked" % (len(want), len(pngs)))
PY
out2=$out/starved
NSP_BENCH_TEST_STARVE=1 NSP_BUILD=$build "$py" "$root/experiments/exp.py" --quick --only host \
  --out "$out2" 2>"$out/starved.log" >/dev/null \
  || { cat "$out/starved.log" >&2; cat "$out2/REPORT.md" >&2 || true; exit 1; }
"$py" - "$out2" <<'PY'
import csv, os, re, sys
out = sys.argv[1]
errors = []
runs = list(csv.DictReader(open(os.path.join(out, "host/host_runs.csv"))))
cells = list(csv.DictReader(open(os.path.join(out, "host/host.csv"))))
starved = [r for r in runs if r["workload"] == "prodcons"]
if not starved:
    errors.append("host_runs.csv: no prodcons runs")
for r in starved:
    if r.get("flagged") != "1" or not (r.get("seed") or "").isdigit():
        errors.append("host_runs.csv: a starved run not flagged, or without its seed: %s" % r)
for r in cells:
    if r["workload"] == "prodcons" and (r.get("suspect") != "1" or
                                        r.get("flagged_runs") != r["reps"]):
        errors.append("host.csv: a cell of starved runs only is not suspect: %s" % r)
report = open(os.path.join(out, "REPORT.md")).read()
marked = re.findall(r"^\| prodcons \| [\w-]+ \| [0-9.e+-]+\? \|", report, re.M)
if len(marked) != len({r["allocator"] for r in starved}):
    errors.append("REPORT.md: %d prodcons rows of the table marked '?', expected %d" %
                  (len(marked), len({r["allocator"] for r in starved})))
m = re.search(r"(\d+) of (\d+) runs flagged", report)
nflag = sum(r.get("flagged") == "1" for r in runs)
if not m or int(m.group(1)) != nflag or int(m.group(2)) != len(runs) or nflag < len(starved):
    errors.append("REPORT.md does not count the %d flagged runs of %d" % (nflag, len(runs)))
if errors:
    print("\n".join(errors))
    sys.exit(1)
print("experiments, starved prodcons runs: %d flagged, %d cells suspect, marked in the report" %
      (len(starved), sum(r["workload"] == "prodcons" for r in cells)))
PY
