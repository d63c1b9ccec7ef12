#!/usr/bin/env python3
"""The host fast path's cost with the pacer on and off (issue 12's target: "host fast path cost
unchanged within noise", `numaspan bench host`'s pairs).

Runs `bench_host run WORKLOAD` in fresh processes with libnumaspan.so preloaded, alternating the
configurations (A B [C] A B [C] ...) so that a loaded machine slows them alike, and reports per
workload the median of each configuration and the median [interquartile range] of the ratios
taken within each round (paired runs: the spread is the noise of the comparison itself):
  off      nothing paced: no pacer thread, no reservation budget, no trigger
  on       NSP_MEMORY_LIMIT (default 8G, far above what the workload holds): the pacer thread,
           a trigger, the reservation budget on every refill, housekeeping on the thread
  before   (--before-lib LIB) another build of the library, nothing paced: before vs after
usage: pacer_fastpath.py [--build DIR] [--reps R] [--seconds S] [--only W,..] [--before-lib LIB]
                         [--limit SIZE] [--json]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

# bench_host's metrics (bench/bench_host.c): ns per pair, lower is better; loops, higher
UNITS = {"pairs-16": "ns/pair", "pairs-64": "ns/pair", "pairs-256": "ns/pair",
         "loops": "Mpairs/s"}
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_one(bench, lib, workload, seconds, env_extra):
    env = dict(os.environ)
    for k in list(env):
        if k.startswith("NSP_"):
            del env[k]
    env.update(env_extra)
    env["LD_PRELOAD"] = lib
    out = subprocess.run([bench, "run", workload, "--threads", "1", "--seconds", str(seconds)],
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         timeout=120)
    if out.returncode != 0:
        raise RuntimeError("%s under %s failed: %s" % (workload, lib, out.stderr[-500:]))
    return json.loads(out.stdout.strip().splitlines()[-1])


def quartiles(v):
    v = sorted(v)
    if len(v) < 2:
        return (v[0], v[0], v[0]) if v else (0, 0, 0)
    q = statistics.quantiles(v, n=4, method="inclusive")
    return q[0], statistics.median(v), q[2]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--seconds", type=float, default=0.3)
    ap.add_argument("--only", default="pairs-16,pairs-64,pairs-256,loops")
    ap.add_argument("--before-lib")
    ap.add_argument("--limit", default="8G")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    bench = os.path.join(a.build, "bench", "bench_host")
    lib = os.path.join(a.build, "libnumaspan.so")
    for p in [bench, lib] + ([a.before_lib] if a.before_lib else []):
        if not os.path.exists(p):
            sys.stderr.write("pacer_fastpath.py: %s missing (build first)\n" % p)
            return 1
    configs = [("off", lib, {}), ("on", lib, {"NSP_MEMORY_LIMIT": a.limit})]
    if a.before_lib:
        configs.append(("before", a.before_lib, {}))
    rows = []
    for w in a.only.split(","):
        vals = {c[0]: [] for c in configs}
        unit = ""
        for r in range(a.reps):
            order = configs if r % 2 == 0 else configs[::-1]
            for name, l, env in order:
                j = run_one(bench, l, w, a.seconds, env)
                vals[name].append(j["value"])
                unit = j.get("unit", unit)
            sys.stderr.write("\r%s: %d/%d rounds   " % (w, r + 1, a.reps))
        row = {"workload": w, "unit": UNITS.get(w, unit), "reps": a.reps}
        for name, _, _ in configs:
            row[name] = round(statistics.median(vals[name]), 3)
        for name in [c[0] for c in configs if c[0] != "off"]:
            ratios = [x / y for x, y in zip(vals[name], vals["off"]) if y]
            p25, med, p75 = quartiles(ratios)
            row["%s/off" % name] = round(med, 3)
            row["%s/off_iqr" % name] = "%.3f-%.3f" % (p25, p75)
        rows.append(row)
    sys.stderr.write("\n")
    if a.json:
        print(json.dumps({"limit": a.limit, "rows": rows}))
        return 0
    cols = list(rows[0].keys())
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(str(r[c]) for c in cols) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
