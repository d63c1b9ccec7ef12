#!/usr/bin/env python3
"""experiments/exp.py — numaspan as an instrument (DESIGN.md §7): the built programs over many
topologies, accounting modes, allocators and devices, into CSV, PNG plots and results/REPORT.md.

  python3 experiments/exp.py [--quick | --full] [--only NAME,..] [--list] [--out DIR]

Experiments (--list): topology, host, locality, pacer-trace, accounting, device, mpi. Each writes
results/<experiment>/*.csv and *.png; the report shows every table and plot with one sentence on
what it shows, and a headline table that the main job prints at its end. The default set is sized
for under 10 minutes on 2 CPUs, --quick for under 2, --full runs the whole matrix. A progress line
(elapsed, estimate of time left) goes to stderr. Needs the build (tools/build.sh) and
python3-matplotlib; experiments/run installs and builds first.
"""
import argparse
import csv
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.environ.get("NSP_BUILD", os.path.join(ROOT, "build"))
TOOL = os.path.join(BUILD, "numaspan")
BENCH = os.path.join(BUILD, "bench")
LIB = os.path.join(BUILD, "libnumaspan.so")

import matplotlib  # noqa: E402  (Debian's python3-matplotlib)

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

# The topologies: the real machine; synthetic N nodes x M cores (virtual cores); a 2-package
# machine with two NUMA nodes per package, whose first node is small (a tight node limit).
SYNTH = [
    ("1x2", "synthetic:pack:1 numa:1 core:2 pu:1", 2),
    ("2x4", "synthetic:pack:2 numa:1 core:4 pu:1", 8),
    ("4x8", "synthetic:pack:4 numa:1 core:8 pu:1", 32),
    ("8x16", "synthetic:pack:8 numa:1 core:16 pu:1", 128),
]
TWO_PACK = ("2pack-small-node", "synthetic:pack:2 [numa] [numa] core:4 pu:1", 8)
TWO_PACK_ENV = {"NSP_NODE_LIMITS": "0=64M"}


class Run:
    """The experiment run: where results go, the mode, the progress line."""

    def __init__(self, out, mode, names):
        self.out = out
        self.mode = mode  # quick | default | full
        self.names = names
        self.t0 = time.time()
        self.report = []  # (experiment, markdown)
        self.headline = []  # (what, value, where)
        self.done_weight = 0.0
        self.total_weight = sum(EXPERIMENTS[n][1][mode] for n in names)
        self.current = None

    def dir(self, name):
        d = os.path.join(self.out, name)
        os.makedirs(d, exist_ok=True)
        return d

    def progress(self, what, frac=0.0):
        el = time.time() - self.t0
        w = self.done_weight + frac * EXPERIMENTS[self.current][1][self.mode]
        # the planned seconds left, scaled by how fast this machine has gone so far
        speed = el / w if el > 5 and w > 0 else 1.0
        left = (self.total_weight - w) * speed
        sys.stderr.write("\r[%s] %-48s elapsed %4.0fs, about %4.0fs left   " %
                         (self.current, what[:48], el, max(0.0, left)))
        sys.stderr.flush()


def sh(cmd, env=None, timeout=900):
    """Runs a command; returns stdout; raises with its stderr on failure."""
    e = dict(os.environ)
    if env:
        e.update(env)
    p = subprocess.run(cmd, env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                       timeout=timeout)
    if p.returncode != 0:
        raise RuntimeError("%s failed (%d): %s" % (" ".join(cmd), p.returncode, p.stderr[-2000:]))
    return p.stdout


def write_csv(path, rows, cols):
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow(r)


def md_table(rows, cols):
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        out.append("| " + " | ".join(str(r.get(c, "")) for c in cols) + " |")
    return "\n".join(out)


def save(fig, path):
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def rel(run, path):
    return os.path.relpath(path, run.out)


# ---- topology -------------------------------------------------------------------------------


def exp_topology(run):
    d = run.dir("topology")
    rows = []
    tops = [("real", "real", None)] + [(n, s, None) for n, s, _ in SYNTH] + [TWO_PACK[:2] + (None,)]
    for i, (name, spec, _) in enumerate(tops):
        run.progress(name, i / len(tops))
        j = json.loads(sh([TOOL, "topo", "--topology", spec, "--json"]))
        with open(os.path.join(d, name + ".json"), "w") as f:
            json.dump(j, f, indent=1)
        nodes = j.get("nodes", [])
        rows.append({"topology": name, "spec": spec, "nodes": len(nodes),
                     "caches": j.get("ncaches", j.get("caches", "")),
                     "distance_source": j.get("distance_source", ""),
                     "binding": "real" if j.get("thissystem", j.get("is_thissystem")) else "recorded"})
    cols = ["topology", "spec", "nodes", "caches", "distance_source", "binding"]
    write_csv(os.path.join(d, "topologies.csv"), rows, cols)
    run.report.append(("topology", "The topologies every experiment runs over (`topology/topologies.csv`, "
                       "and `numaspan topo --json` of each beside it):\n\n" + md_table(rows, cols)))


# ---- host -------------------------------------------------------------------------------------


def exp_host(run):
    d = run.dir("host")
    tops = {"quick": SYNTH[:2], "default": SYNTH[:3], "full": SYNTH}[run.mode]
    works = {"quick": ["larson", "prodcons"], "default": ["larson", "prodcons", "mixed"],
             "full": ["larson", "prodcons", "mixed", "falseshare", "churn"]}[run.mode]
    reps = {"quick": 1, "default": 5, "full": 7}[run.mode]
    secs = {"quick": "0.15", "default": "0.4", "full": "0.5"}[run.mode]
    modes = {"quick": [], "default": ["under", "exact"], "full": ["under", "exact"]}[run.mode]
    raw = []  # one row per (topology, workload, allocator, repetition)
    n = len(tops) * len(works) * reps
    k = 0
    for name, spec, cores in tops:
        for w in works:
            for rep in range(reps):
                run.progress("%s %s (%d threads) rep %d" % (w, name, cores, rep + 1), k / n)
                k += 1
                # every allocator in one bench_host call, which alternates them; then numaspan
                # under the other accounting modes (the ledger's cost, side by side)
                calls = [("", {"NSP_TOPOLOGY": spec}, [])] + \
                        [("-" + m, {"NSP_TOPOLOGY": spec, "NSP_ACCOUNTING": m},
                          ["--allocators", "numaspan"]) for m in modes]
                for suffix, env, extra in calls:
                    out = json.loads(sh([os.path.join(BENCH, "bench_host"), "--threads", str(cores),
                                         "--only", w, "--reps", "1", "--seconds", secs, "--json",
                                         "--lib", LIB] + extra, env=env))
                    for r in out["results"]:
                        # one round: flagged_runs is 1 when the driver flagged the run (low-free,
                        # unfinished); seed repeats the call's order of allocators (--seed)
                        raw.append({"topology": name, "virtual_cores": cores, "workload": w,
                                    "unit": r["unit"], "higher_better": r["higher_better"],
                                    "allocator": r["allocator"] + suffix, "value": r["median"],
                                    "peak_rss_kb": r["peak_rss_kb"], "rep": rep,
                                    "flagged": 1 if r.get("flagged_runs") else 0,
                                    "seed": out.get("seed", ""), "extra": " ".join(extra),
                                    "env": env})
    rows = []
    keys = sorted({(r["topology"], r["virtual_cores"], r["workload"], r["allocator"]) for r in raw},
                  key=lambda x: (x[1], x[2], x[3]))
    for key in keys:
        v = [r for r in raw if (r["topology"], r["virtual_cores"], r["workload"], r["allocator"]) == key]
        # as the driver does: flagged runs are left out of the cell's median, min, max and RSS;
        # a cell whose every run was flagged keeps them, marked suspect
        kept = [r for r in v if not r["flagged"]] or v
        vals = [r["value"] for r in kept]
        flagged = sum(r["flagged"] for r in v)
        rows.append({"topology": key[0], "virtual_cores": key[1], "workload": key[2],
                     "unit": v[0]["unit"], "allocator": key[3],
                     "median": round(statistics.median(vals), 4), "min": round(min(vals), 4),
                     "max": round(max(vals), 4), "higher_better": v[0]["higher_better"],
                     "peak_rss_kb": int(statistics.median(r["peak_rss_kb"] for r in kept)),
                     "reps": len(v), "flagged_runs": flagged, "suspect": int(flagged == len(v))})
    for r in rows:
        g = next((x["median"] for x in rows if x["allocator"] == "glibc" and
                  (x["topology"], x["workload"]) == (r["topology"], r["workload"])), None)
        r["ratio_to_glibc"] = round(r["median"] / g if r["higher_better"] else g / r["median"], 4) \
            if g and r["median"] else ""
    cols = ["topology", "virtual_cores", "workload", "unit", "allocator", "median", "min", "max",
            "ratio_to_glibc", "peak_rss_kb", "reps", "flagged_runs", "suspect"]
    write_csv(os.path.join(d, "host.csv"), rows, cols)
    write_csv(os.path.join(d, "host_runs.csv"), raw,
              ["topology", "virtual_cores", "workload", "unit", "allocator", "rep", "value",
               "peak_rss_kb", "flagged", "seed"])
    ncols = min(3, len(works))
    nrows = (len(works) + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.6 * ncols, 3.9 * nrows), squeeze=False)
    for ax in axes.flat[len(works):]:
        ax.set_visible(False)
    for ax, w in zip(axes.flat, works):
        unit = next(r["unit"] for r in rows if r["workload"] == w)
        for alloc in sorted({r["allocator"] for r in rows}):
            pts = sorted((r["virtual_cores"], r["median"], r["min"], r["max"]) for r in rows
                         if r["workload"] == w and r["allocator"] == alloc)
            ax.errorbar([p[0] for p in pts], [p[1] for p in pts],
                        yerr=[[p[1] - p[2] for p in pts], [p[3] - p[1] for p in pts]],
                        marker="o", ms=4, capsize=2, lw=2.4 if alloc == "numaspan" else 1.2,
                        ls=":" if alloc.startswith("numaspan-") else "-", label=alloc)
        sus = [r for r in rows if r["workload"] == w and r["suspect"]]
        if sus:  # a ring on each point whose every run was flagged
            ax.plot([r["virtual_cores"] for r in sus], [r["median"] for r in sus], "o", ms=11,
                    mfc="none", mec="red", mew=1.5)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("virtual cores (threads)")
        ax.set_ylabel("throughput (%s)" % unit)
        ax.set_title(w)
        ax.grid(alpha=0.3)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    if any(r["suspect"] for r in rows):
        handles.append(matplotlib.lines.Line2D([], [], ls="", marker="o", ms=9, mfc="none",
                                               mec="red", mew=1.5))
        labels.append("suspect: every run flagged")
    axes.flat[0].legend(handles, labels, fontsize=7)
    fig.suptitle("Host workloads against virtual cores, median and min-max of %d runs "
                 "(%d CPUs: the threads share them)" % (reps, os.cpu_count() or 0), fontsize=10)
    png = os.path.join(d, "throughput.png")
    save(fig, png)
    top = tops[-1][0]
    sel = [r for r in rows if r["topology"] == top]

    def mark(r):  # the driver's marks: '?' every run of the cell flagged, '*' some left out
        return "?" if r["suspect"] else "*" if r["flagged_runs"] else ""
    flagged = [r for r in raw if r["flagged"]]
    suspect = [r for r in rows if r["suspect"]]
    flag_text = ("%d of %d runs flagged by the driver (`low-free`: a producer/consumer run whose "
                 "consumers were starved; `unfinished`: a Larson run whose threads did not all "
                 "report) and left out of their cells' median, min and max (`flagged` in "
                 "`host/host_runs.csv`); %d cells suspect (every run flagged: the median is of "
                 "them, marked `?` in the table and ringed in red in the plot; `*`: some runs left "
                 "out). Each run's `seed` repeats its call's order of allocators (`bench_host "
                 "--seed`)." % (len(flagged), len(raw), len(suspect)))
    calls = {}  # the flagged runs by the call that ran them (its seed repeats it)
    for r in flagged:
        key = (r["workload"], r["topology"], r["virtual_cores"], r["rep"], r["extra"],
               tuple(sorted(r["env"].items())), r["seed"])
        calls.setdefault(key, []).append(r["allocator"])
    lines = []
    for (work, topo, cores, rep, extra, env, seed), allocs in list(calls.items())[:12]:
        cmd = "%s %s --threads %d --only %s --reps 1 --seconds %s --json --lib %s%s --seed %s" % (
            " ".join("%s='%s'" % kv for kv in env),
            os.path.relpath(os.path.join(BENCH, "bench_host"), ROOT), cores, work, secs,
            os.path.relpath(LIB, ROOT), " " + extra if extra else "", seed)
        lines.append("- %s at %s, rep %d, under %s: `%s`" % (work, topo, rep + 1,
                                                            ", ".join(allocs), cmd))
    if len(calls) > 12:
        lines.append("- ... %d more calls in `host/host_runs.csv`" % (len(calls) - 12))
    if lines:
        flag_text += " Flagged, each under the call that repeats it:\n\n" + "\n".join(lines)
    run.report.append(("host",
                       "Throughput of the host workloads against the number of virtual cores (one "
                       "thread per core of the synthetic machine), one line per allocator (numaspan "
                       "dotted under the `under` and `exact` accounting modes), median with the "
                       "min-max of %d runs as bars; numaspan is placed by the synthetic topology, "
                       "the others ignore it (`host/host.csv`, every run in `host/host_runs.csv`). "
                       "%s\n\n![host](%s)\n\nAt %s:\n\n%s" %
                       (reps, flag_text, rel(run, png), top,
                        md_table([dict(r, median="%s%s" % (r["median"], mark(r))) for r in sel],
                                 ["workload", "allocator", "median", "min", "max", "unit",
                                  "ratio_to_glibc", "peak_rss_kb", "flagged_runs"]))))
    for w in works:
        r = [x for x in sel if x["workload"] == w and x["allocator"] == "numaspan"]
        if r:
            run.headline.append(("host %s at %s, numaspan / glibc" % (w, top),
                                 "%.2fx%s" % (r[0]["ratio_to_glibc"], mark(r[0])),
                                 "host/host.csv"))
    run.headline.append(("host runs flagged by the driver (low-free, unfinished)",
                         "%d of %d" % (len(flagged), len(raw)), "host/host_runs.csv"))


# ---- locality --------------------------------------------------------------------------------


def exp_locality(run):
    d = run.dir("locality")
    tops = [("real", "real", None, {})] + [(n, s, c, {}) for n, s, c in SYNTH[:3]]
    if run.mode == "full":
        tops.append(SYNTH[3] + ({},))
    tops.append(TWO_PACK + (TWO_PACK_ENV,))
    secs = {"quick": "0.3", "default": "1", "full": "2"}[run.mode]
    rows = []
    for i, (name, spec, _, env) in enumerate(tops):
        run.progress(name, i / len(tops))
        e = {"NSP_TOPOLOGY": spec}
        e.update(env)
        live = "65536" if env else "4096"
        j = json.loads(sh([os.path.join(BENCH, "bench_locality"), "--seconds", secs, "--live", live],
                          env=e))
        rows.append({"topology": name, "nodes": j["nodes"], "caches": j["caches"],
                     "threads": j["threads"], "mops": round(j["mops"], 3), "refills": j["refills"],
                     "spills": j["spills"], "local_share": j["local_share"],
                     "node_limits": env.get("NSP_NODE_LIMITS", "")})
    cols = ["topology", "nodes", "caches", "threads", "mops", "refills", "spills", "local_share",
            "node_limits"]
    write_csv(os.path.join(d, "locality.csv"), rows, cols)
    fig, ax = plt.subplots(figsize=(7, 3.8))
    names = [r["topology"] for r in rows]
    vals = [100 * r["local_share"] for r in rows]
    bars = ax.bar(names, vals, color=["#4477aa" if v >= 99.9 else "#cc6677" for v in vals])
    for b, v in zip(bars, vals):
        ax.text(b.get_x() + b.get_width() / 2, v + 0.5, "%.1f%%" % v, ha="center", fontsize=8)
    ax.set_ylim(min(vals) - 5 if min(vals) < 95 else 90, 101.5)
    ax.set_ylabel("spans from the core's own node (%)")
    ax.set_xlabel("topology")
    ax.set_title("Share of refills served from the requesting core's own node")
    ax.grid(axis="y", alpha=0.3)
    png = os.path.join(d, "local_share.png")
    save(fig, png)
    run.report.append(("locality",
                       "Share of span refills served from the requesting core's own NUMA node, per "
                       "topology (one thread per core cache, 16 B-4 KiB objects, 1/8 freed by "
                       "another thread); on `%s` node 0 may map 64 MiB (`NSP_NODE_LIMITS=0=64M`), so "
                       "its cores spill to their package's second node (`locality/locality.csv`):"
                       "\n\n![locality](%s)\n\n%s" %
                       (TWO_PACK[0], rel(run, png), md_table(rows, cols))))
    worst = min(rows, key=lambda r: r["local_share"])
    run.headline.append(("lowest local share (%s)" % worst["topology"],
                         "%.1f%%" % (100 * worst["local_share"]), "locality/locality.csv"))


# ---- pacer trace ---------------------------------------------------------------------------------


def exp_pacer_trace(run):
    d = run.dir("pacer-trace")
    trace = os.path.join(d, "trace.csv")
    if os.path.exists(trace):
        os.remove(trace)
    secs = {"quick": "0.5", "default": "1.5", "full": "3"}[run.mode]
    env = {"NSP_TOPOLOGY": TWO_PACK[1], "NSP_TRACE": trace, "NSP_MEMORY_LIMIT": "512M"}
    env.update(TWO_PACK_ENV)
    run.progress("bench_locality with NSP_TRACE")
    j = json.loads(sh([os.path.join(BENCH, "bench_locality"), "--seconds", secs, "--live", "65536"],
                      env=env))
    rows = []
    with open(trace) as f:
        for r in csv.DictReader(f):
            rows.append({k: (int(v) if k != "event" else v) for k, v in r.items()})
    t0 = rows[0]["time_ns"] if rows else 0
    nodes = sorted({r["node"] for r in rows if r["node"] >= 0})
    fig, ax = plt.subplots(figsize=(8, 5))
    mib = 1 << 20
    for n in nodes:
        pts = [r for r in rows if r["node"] == n and r["event"] in ("sample", "cycle_start", "cycle_end")]
        ax.plot([(r["time_ns"] - t0) / 1e6 for r in pts], [r["heap_live"] / mib for r in pts],
                lw=1.3, label="heapLive node %d" % n)
    tot = [r for r in rows if r["node"] < 0]
    if tot:
        ts = [(r["time_ns"] - t0) / 1e6 for r in tot]
        ax.step(ts, [r["trigger"] / mib if r["trigger"] >= 0 else float("nan") for r in tot],
                where="post", ls="--", color="k", lw=1, label="trigger (total)")
        ax.step(ts, [r["goal"] / mib for r in tot], where="post", ls=":", color="#ee7733", lw=2,
                label="goal (total)")
        lim = tot[-1]["limit"]
        if lim > 0:
            ax.axhline(lim / mib, color="#aa3377", lw=1, ls="-.", label="memory limit")
    cyc = [(r["time_ns"] - t0) / 1e6 for r in rows if r["node"] < 0 and r["event"] == "cycle_end"]
    for i, c in enumerate(cyc):
        ax.axvline(c, color="#999999", lw=0.6, alpha=0.6, label="cycle end" if i == 0 else None)
    sp = [r for r in rows if r["event"] == "spill"]
    if sp:
        ax.scatter([(r["time_ns"] - t0) / 1e6 for r in sp], [r["heap_live"] / mib for r in sp],
                   marker="x", s=8, alpha=0.35, color="#cc6677", label="spill (%d)" % len(sp),
                   zorder=3)
    ax.set_xlabel("time (ms)")
    ax.set_ylabel("bytes (MiB)")
    ax.set_title("heapLive per node from NSP_TRACE (%s, node 0 limited to 64 MiB)" % TWO_PACK[0],
                 fontsize=10)
    ax.legend(fontsize=7, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.14))
    ax.grid(alpha=0.3)
    png = os.path.join(d, "heaplive.png")
    save(fig, png)
    counts = {}
    for r in rows:
        counts[r["event"]] = counts.get(r["event"], 0) + 1
    summary = [{"event": k, "lines": v} for k, v in sorted(counts.items())]
    write_csv(os.path.join(d, "events.csv"), summary, ["event", "lines"])
    run.report.append(("pacer-trace",
                       "heapLive of each node over time as the pacer's trace records it "
                       "(`pacer-trace/trace.csv`: `time_ns,node,heap_live,trigger,goal,limit,event`), "
                       "with the total's trigger and goal, the memory limit (512 MiB), the end of "
                       "each cycle and the spills of node 0's cores; %d cycles, %d spills (lines per event in "
                       "`pacer-trace/events.csv`):\n\n![trace](%s)\n\n%s" % (j["cycles"], j["spills"], rel(run, png),
                                               md_table(summary, ["event", "lines"]))))
    pacer_trace_accounting(run, d)


def pacer_trace_accounting(run, d):
    """The accounting experiment's program traced: one run per mode at 512 caches and 8 MiB
    live, heapLive, trigger and goal over time from NSP_TRACE (the pacer's view), so that the
    storm-free `over` and the overshooting `under` can be seen cycle by cycle."""
    caches, live = 512, 8 << 20
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    mib = 1 << 20
    notes = []
    for ax, mode in zip(axes, ("over", "under")):
        trace = os.path.join(d, "accounting-%s.csv" % mode)
        if os.path.exists(trace):
            os.remove(trace)
        env = {"NSP_TOPOLOGY": "synthetic:pack:1 numa:1 core:%d pu:1" % caches,
               "NSP_ACCOUNTING": mode, "NSP_PACER": "concurrent", "NSP_HEAP_MIN": "64K",
               "NSP_IDLE_RELEASE_MS": "0", "NSP_TRACE": trace}
        run.progress("bench_pacer run (%s) with NSP_TRACE" % mode)
        j = json.loads(sh([os.path.join(BENCH, "bench_pacer"), "run", "--caches", str(caches),
                           "--live", str(live), "--seed", "1", "--threads", "4"], env=env))
        with open(trace) as f:
            every = list(csv.DictReader(f))
        rows = [r for r in every if r["node"] == "-1"]
        node0 = [r for r in every if r["node"] == "0"]  # one node: its samples are the total's
        t0 = int(every[0]["time_ns"]) if every else 0
        ts = [(int(r["time_ns"]) - t0) / 1e6 for r in rows]
        ax.plot([(int(r["time_ns"]) - t0) / 1e6 for r in node0],
                [int(r["heap_live"]) / mib for r in node0], lw=1.2, label="heapLive")
        ax.step(ts, [int(r["trigger"]) / mib if int(r["trigger"]) >= 0 else float("nan")
                     for r in rows], where="post", ls="--", color="k", lw=1, label="trigger")
        ax.step(ts, [int(r["goal"]) / mib for r in rows], where="post", ls=":", color="#ee7733",
                lw=2, label="goal")
        ax.set_title("%s: %d cycles, peak %.1f MiB, ok %.0f%%" %
                     (mode, j["cycles"], j["peak_real"] / mib, 100 * j["ok_share"]), fontsize=10)
        ax.set_xlabel("time (ms)")
        ax.grid(alpha=0.3)
        notes.append({"mode": mode, "cycles": j["cycles"], "peak_mib": round(j["peak_real"] / mib, 2),
                      "goal_mib": round(j["goal"] / mib, 2), "ok_share": j["ok_share"],
                      "backstop": j["backstop"]})
    axes[0].set_ylabel("bytes (MiB)")
    axes[0].legend(fontsize=7)
    fig.suptitle("the accounting experiment's program from NSP_TRACE: %d caches, %d MiB live, "
                 "4 threads" % (caches, live >> 20), fontsize=10)
    png = os.path.join(d, "accounting_trace.png")
    save(fig, png)
    run.report.append(("pacer-trace (accounting)",
                       "heapLive, trigger and goal over time as NSP_TRACE records them for the "
                       "accounting experiment's program (`pacer-trace/accounting-over.csv`, "
                       "`pacer-trace/accounting-under.csv`): `over` cycles at its trigger with "
                       "its peak at the goal; `under` sees less than is allocated and rarely "
                       "cycles.\n\n![accounting trace](%s)\n\n%s" %
                       (rel(run, png), md_table(notes, ["mode", "cycles", "peak_mib", "goal_mib",
                                                        "ok_share", "backstop"]))))


# ---- accounting ------------------------------------------------------------------------------


def exp_accounting(run):
    d = run.dir("accounting")
    args = {"quick": ["--quick", "--reps", "1"], "default": ["--reps", "3"],
            "full": ["--reps", "10"]}[run.mode]
    run.progress("bench_pacer %s" % " ".join(args))
    j = json.loads(sh([os.path.join(BENCH, "bench_pacer"), "--json"] + args, timeout=3600))
    rows = [dict(r) for r in j["results"]]
    # C/live as the caches' capacity in `under` (nothing bounds it there: the x of the figure)
    cap = {(r["caches"], r["live"]): r["cached"] for r in rows if r["mode"] == "under"}
    over_peak = {(r["caches"], r["live"]): r["peak"] for r in rows if r["mode"] == "over"}
    for r in rows:
        key = (r["caches"], r["live"])
        r["c_over_live"] = round(cap.get(key, r["cached"]) / r["live"], 4)
        r["peak_over_live"] = round(r["peak"] / r["live"], 4)
        # predicted for under: over's peak plus the caches' free capacity C (DESIGN.md section 6)
        r["predicted_peak_over_live"] = round((over_peak[key] + r["cached"]) / r["live"], 4) \
            if r["mode"] == "under" else ""
    cols = ["caches", "live", "mode", "runs", "censored_runs", "cycles", "cycles_p25",
            "cycles_p75", "cycles_over_exact", "peak", "peak_ledger", "goal", "cached",
            "c_over_live", "peak_over_live", "predicted_peak_over_live", "ok_share",
            "peak_goal_p95", "early_med", "lead_med", "lead_max", "predicted_early",
            "predicted_early_no_budget", "live_err_max", "backstop", "rss_kb", "pause_ms",
            "cycle_cpu_ms", "collector_ms"]
    write_csv(os.path.join(d, "accounting.csv"), rows, cols)
    lives = sorted({r["live"] for r in rows})
    fig, axes = plt.subplots(2, len(lives), figsize=(4.6 * len(lives), 7.6), squeeze=False)
    colors = {"over": "#4477aa", "under": "#cc6677", "exact": "#228833"}
    for col, live in enumerate(lives):
        ax, bx = axes[0][col], axes[1][col]
        sel = [r for r in rows if r["live"] == live]
        for m in ("over", "under", "exact"):
            pts = sorted((r["c_over_live"], r["peak"] / r["goal"] if r["goal"] else 0)
                         for r in sel if r["mode"] == m)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", color=colors[m],
                    label="%s (measured)" % m)
            pts = sorted((r["c_over_live"], r["cycles_over_exact"], r["cycles_p25"],
                          r["cycles_p75"], r["cycles"]) for r in sel if r["mode"] == m)
            bx.plot([p[0] for p in pts], [p[1] for p in pts], "o-", color=colors[m], label=m)
        pts = sorted((r["c_over_live"], (r["predicted_peak_over_live"] * r["live"]) / r["goal"]
                      if r["goal"] else 0) for r in sel if r["mode"] == "under")
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "s--", color=colors["under"], alpha=0.6,
                mfc="none", label="under, predicted bound (over + C)")
        ax.axhline(1.05, color="k", lw=0.8, ls=":", label="1.05 x goal")
        bx.axhline(1.5, color="k", lw=0.8, ls=":", label="target: 1.5 x exact")
        for a in (ax, bx):
            a.set_xscale("log")
            a.set_xlabel("cached capacity over live heap, C / live")
            a.grid(alpha=0.3, which="both")
        ax.set_yscale("log")
        ax.set_ylabel("peak heap / goal")
        bx.set_ylabel("cycles / exact's cycles")
        ax.set_title("live heap %d MiB" % (live >> 20), fontsize=10)
    axes[0][0].legend(fontsize=7)
    axes[1][0].legend(fontsize=7)
    fig.suptitle("golang/go#53738 on numaspan: peak over goal and cycles per accounting mode "
                 "(caches 2..512, %s threads)" % j.get("threads", "?"), fontsize=10)
    png = os.path.join(d, "peak_vs_cached.png")
    save(fig, png)
    over = [r for r in rows if r["mode"] == "over"]
    worst_ratio = max((r["cycles_over_exact"] for r in over), default=0)
    worst_ok = min((r["ok_share"] for r in over), default=1)
    censored = sum(1 for r in rows if r["censored_runs"])
    run.report.append(("accounting",
                       "Each accounting mode under the concurrent pacer, %s threads allocating at "
                       "once (`accounting/accounting.csv`, median of %s seeds with interquartile "
                       "ranges; kappa %s). Top: peak heap over the goal against the caches' free "
                       "capacity over the live heap, with the bound predicted for `under`; bottom: "
                       "cycles against exact's. `over`: at most %.2fx exact's cycles, %.0f%% of "
                       "cycles or more at <= 1.05 x goal; %d censored rows (backstop frees)."
                       "\n\n![accounting](%s)\n\n%s" %
                       (j.get("threads", "?"), j.get("reps", "?"), j.get("kappa", "?"), worst_ratio,
                        100 * worst_ok, censored, rel(run, png),
                        md_table(rows, ["caches", "live", "mode", "c_over_live", "cycles",
                                        "cycles_over_exact", "peak_over_live", "ok_share",
                                        "early_med", "lead_med", "predicted_early",
                                        "live_err_max", "cycle_cpu_ms", "collector_ms", "rss_kb",
                                        "censored_runs"]))))
    big = max(rows, key=lambda r: r["c_over_live"])
    by = {r["mode"]: r for r in rows if (r["caches"], r["live"]) == (big["caches"], big["live"])}
    run.headline.append(("peak/goal at C/live=%.0f: over / under / exact" % big["c_over_live"],
                         "%.2f / %.2f / %.2f" % tuple(by[m]["peak"] / by[m]["goal"]
                                                      if by[m]["goal"] else 0
                                                      for m in ("over", "under", "exact")),
                         "accounting/accounting.csv"))
    run.headline.append(("over: cycles / exact's (worst cell), censored rows",
                         "%.2f, %d" % (worst_ratio, censored), "accounting/accounting.csv"))
    accounting_cycles(run, d)
    accounting_sweeps(run, d)


def accounting_cycles(run, d):
    """Per-cycle peak/goal distributions (issue 12, Deliver 8): every cycle of runs at the two
    cells where C/live is largest and smallest among 512 caches, per mode, pooled over seeds,
    as empirical CDFs beside the 1.05 x goal line."""
    seeds = {"quick": 1, "default": 3, "full": 10}[run.mode]
    cells = [(512, 1 << 20), (512, 8 << 20)]
    colors = {"over": "#4477aa", "under": "#cc6677", "exact": "#228833"}
    fig, axes = plt.subplots(1, len(cells), figsize=(5.2 * len(cells), 4.2), squeeze=False)
    rows = []
    for ax, (caches, live) in zip(axes[0], cells):
        for mode in ("over", "under", "exact"):
            vals = []
            for seed in range(seeds):
                out = os.path.join(d, "cycles-%d-%d-%s-%d.csv" % (caches, live >> 20, mode, seed))
                env = {"NSP_TOPOLOGY": "synthetic:pack:1 numa:1 core:%d pu:1" % caches,
                       "NSP_ACCOUNTING": mode, "NSP_PACER": "concurrent", "NSP_HEAP_MIN": "64K",
                       "NSP_IDLE_RELEASE_MS": "0", "NSP_PACE_RESERVE": "0.25"}
                run.progress("bench_pacer run --cycles-out (%d caches, %d MiB, %s, seed %d)" %
                             (caches, live >> 20, mode, seed))
                sh([os.path.join(BENCH, "bench_pacer"), "run", "--caches", str(caches),
                    "--live", str(live), "--seed", str(1000 + seed), "--threads", "4",
                    "--cycles-out", out], env=env)
                with open(out) as f:
                    vals += [float(r["peak_goal"]) for r in csv.DictReader(f)]
            vals.sort()
            n = len(vals)
            if n:
                ax.step(vals, [(i + 1) / n for i in range(n)], where="post", color=colors[mode],
                        label="%s (%d cycles)" % (mode, n))
            rows.append({"caches": caches, "live_mib": live >> 20, "mode": mode, "cycles": n,
                         "share_le_1.05": round(sum(1 for v in vals if v <= 1.05) / n, 4) if n else "",
                         "p50": round(vals[n // 2], 4) if n else "",
                         "p95": round(vals[min(n - 1, int(0.95 * n))], 4) if n else "",
                         "max": round(vals[-1], 4) if n else ""})
        ax.axvline(1.05, color="k", lw=0.8, ls=":", label="1.05 x goal")
        ax.set_xscale("log")
        ax.set_xlabel("peak / goal, per cycle")
        ax.set_title("%d caches, %d MiB live" % (caches, live >> 20), fontsize=10)
        ax.grid(alpha=0.3, which="both")
    axes[0][0].set_ylabel("share of cycles")
    axes[0][0].legend(fontsize=7)
    fig.suptitle("per-cycle peak over goal (empirical CDF, %d seed%s per mode)" %
                 (seeds, "" if seeds == 1 else "s"), fontsize=10)
    png = os.path.join(d, "peak_goal_cdf.png")
    save(fig, png)
    cols = ["caches", "live_mib", "mode", "cycles", "share_le_1.05", "p50", "p95", "max"]
    write_csv(os.path.join(d, "peak_goal_cycles.csv"), rows, cols)
    run.report.append(("accounting: per-cycle peak/goal",
                       "Every cycle's peak (bytes really allocated and not freed) over the goal in "
                       "force, pooled over %d seed(s), 4 threads, for the cells of 512 caches "
                       "(`accounting/cycles-*.csv`, one line per cycle; summary in "
                       "`accounting/peak_goal_cycles.csv`). Target: `over` at most 1.05 x goal in "
                       "95%% of cycles.\n\n![peak/goal CDF](%s)\n\n%s" %
                       (seeds, rel(run, png), md_table(rows, cols))))


def accounting_sweeps(run, d):
    """The percent and heap-minimum sweeps (Deliver 8): `over` against `exact` as the goal's
    percent and the minimum heap change, with caches few and many."""
    reps = {"quick": 1, "default": 3, "full": 10}[run.mode]
    sweeps = {"quick": [("percent", "50"), ("heap_min", "1M")],
              "default": [("percent", "25,50,200,400"), ("heap_min", "1M,4M,16M")],
              "full": [("percent", "25,50,200,400"), ("heap_min", "1M,4M,16M")]}[run.mode]
    cells = ["--caches", "512", "--live", "1M"] if run.mode == "quick" else \
        ["--caches", "2,512", "--live", "1M,8M"]
    rows = []
    for what, values in sweeps:
        args = ["--json", "--reps", str(reps)] + cells + ["--" + what.replace("_", "-"), values]
        run.progress("bench_pacer %s" % " ".join(args))
        j = json.loads(sh([os.path.join(BENCH, "bench_pacer")] + args, timeout=3600))
        for r in j["results"]:
            r = dict(r)
            r["sweep"] = what
            rows.append(r)
    cols = ["sweep", "percent", "heap_min", "caches", "live", "mode", "runs", "censored_runs",
            "cycles", "cycles_p25", "cycles_p75", "cycles_over_exact", "peak", "goal", "ok_share",
            "lead_med", "predicted_early", "live_err_max", "cycle_cpu_ms", "collector_ms",
            "rss_kb"]
    write_csv(os.path.join(d, "sweeps.csv"), rows, cols)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), squeeze=False)
    for ax, (what, _) in zip(axes[0], sweeps):
        sel = [r for r in rows if r["sweep"] == what and r["mode"] == "over"]
        for caches in sorted({r["caches"] for r in sel}):
            for live in sorted({r["live"] for r in sel}):
                pts = [r for r in sel if r["caches"] == caches and r["live"] == live]
                key = (lambda r: float(r["percent"])) if what == "percent" else \
                      (lambda r: parse_size(r["heap_min"]))
                pts.sort(key=key)
                ax.plot([key(r) / (1 if what == "percent" else 1 << 20) for r in pts],
                        [r["cycles_over_exact"] for r in pts], "o-",
                        label="%d caches, %d MiB live" % (caches, live >> 20))
        ax.axhline(1.5, color="k", lw=0.8, ls=":", label="target: 1.5 x exact")
        ax.set_xscale("log")
        ax.set_xlabel("NSP_PACE_PERCENT" if what == "percent" else "NSP_HEAP_MIN (MiB)")
        ax.set_ylabel("over: cycles / exact's")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    fig.suptitle("over against exact across percent and heap minimum (median of %d seeds)" % reps,
                 fontsize=10)
    png = os.path.join(d, "sweeps.png")
    save(fig, png)
    over = [r for r in rows if r["mode"] == "over"]
    run.report.append(("accounting: percent and heap-minimum sweeps",
                       "`numaspan bench pacer --percent P,.. / --heap-min SIZE,..` with 2 and 512 "
                       "caches, 1 and 8 MiB live (`accounting/sweeps.csv`, median of %d seeds). "
                       "`over`: at most %.2fx exact's cycles, %.0f%% of cycles or more at <= 1.05 x "
                       "goal, %d censored rows.\n\n![sweeps](%s)\n\n%s" %
                       (reps, max((r["cycles_over_exact"] for r in over), default=0),
                        100 * min((r["ok_share"] for r in over), default=1),
                        sum(1 for r in rows if r["censored_runs"]), rel(run, png),
                        md_table(rows, ["sweep", "percent", "heap_min", "caches", "live", "mode",
                                        "cycles", "cycles_over_exact", "ok_share", "lead_med",
                                        "censored_runs"]))))


def parse_size(text):
    """'64K', '4M', '1G' or a number of bytes."""
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:].upper(), 1)
    return int(text[:-1] if mult > 1 else text) * mult


# ---- device ----------------------------------------------------------------------------------


def exp_device(run):
    d = run.dir("device")
    js = os.path.join(d, "device.json")
    args = {"quick": ["--quick", "--reps", "2"], "default": ["--reps", "5"],
            "full": ["--reps", "20"]}[run.mode]
    run.progress("bench_device --only scaling,one,mixed,oom")
    try:
        txt = sh([os.path.join(BENCH, "bench_device"), "--only", "scaling,one,mixed,oom", "--json-out",
                  js] + args, timeout=1800)
    except (RuntimeError, FileNotFoundError) as e:
        run.report.append(("device", "Skipped: %s" % str(e).splitlines()[0]))
        return
    with open(os.path.join(d, "device.txt"), "w") as f:
        f.write(txt)
    sets = [("this machine", json.load(open(js)))]
    gpu = os.path.join(ROOT, "docs", "device-h200", "device.json")
    if os.path.exists(gpu):
        sets.append(("NVIDIA H200 (committed run, docs/device-h200)", json.load(open(gpu))))
    # bump_ms / ratio_to_bump: the strongest baseline of the run (the fastest of the unaggregated,
    # warp- and group-aggregated bumps); a run from before those has only the unaggregated one
    fair = {}
    for label, j in sets:
        fair[label] = all("baseline_ms" in r for r in j["rows"])
        for r in j["rows"]:
            if r.get("baseline_ms", 0) > 0:
                r["bump_ms"], r["ratio_to_bump"] = r["baseline_ms"], r["ratio_to_baseline"]
    rows = []
    for label, j in sets:
        for r in j["rows"]:
            r = dict(r)
            r["device"] = j["device"]
            r["where"] = label
            rows.append(r)
    cols = ["where", "device", "case", "n", "size_lo", "size_hi", "malloc_ms", "free_ms", "bump_ms",
            "allocs_per_s", "ratio_to_bump", "usable_pct", "spurious_nulls"]
    write_csv(os.path.join(d, "device.csv"), rows, cols)
    fig, axes = plt.subplots(1, len(sets), figsize=(6 * len(sets), 4.2), squeeze=False)
    for ax, (label, j) in zip(axes[0], sets):
        sc = [r for r in j["rows"] if r["case"] == "scaling"]
        for size in sorted({r["size_lo"] for r in sc}):
            pts = sorted((r["n"], r["n"] / (r["malloc_ms"] * 1e-3)) for r in sc if r["size_lo"] == size)
            line, = ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", ms=3,
                            label="heap %d B" % size)
            bpts = sorted((r["n"], r["n"] / (r["bump_ms"] * 1e-3)) for r in sc if r["size_lo"] == size)
            ax.plot([p[0] for p in bpts], [p[1] for p in bpts], "--", color=line.get_color(),
                    alpha=0.6, lw=1, label="%s %d B" % ("best bump" if fair[label] else
                                                        "bump (unaggregated)", size))
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("work-items (one allocation each)")
        ax.set_ylabel("allocations per second")
        ax.set_title("%s\n%s" % (label, j["device"][:60]), fontsize=9)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7, ncol=2)
    png = os.path.join(d, "scaling.png")
    save(fig, png)
    mine = [r for r in rows if r["where"] == "this machine" and r["case"] in ("one-size", "mixed", "oom")]
    run.report.append(("device",
                       "Device heap allocation throughput against work-items, one line per size, the "
                       "strongest bump kernel on the same device dashed (the fastest of an "
                       "unaggregated, a warp-aggregated and a work-group-aggregated bump; "
                       "`bump_ms` and `ratio_to_bump` in `device/device.csv` are against it; the "
                       "H200 panel is the committed GPU run, whose only bump is the unaggregated "
                       "one where it predates them):\n\n![device](%s)\n\n%s" %
                       (rel(run, png), md_table(mine, ["case", "n", "size_lo", "size_hi", "malloc_ms",
                                                       "free_ms", "bump_ms", "ratio_to_bump",
                                                       "usable_pct", "spurious_nulls"]))))
    big = max((r for r in rows if r["where"] == "this machine" and r["case"] == "one-size"
               and r["size_lo"] == 16), key=lambda r: r["n"], default=None)
    if big:
        dev = big["device"].split(" / ")[-1][:40]
        run.headline.append(("device %d x 16 B malloc / best bump (%s)" % (big["n"], dev),
                             "%.2fx" % big["ratio_to_bump"], "device/device.csv"))


# ---- MPI -------------------------------------------------------------------------------------


def exp_mpi(run):
    d = run.dir("mpi")
    prog = os.path.join(BENCH, "bench_mpi")
    mpirun = shutil.which("mpirun")
    if not mpirun or not os.path.exists(prog):
        run.report.append(("mpi", "Skipped: %s." % ("no mpirun (Debian's openmpi-bin)" if not mpirun
                                                     else "bench_mpi not built (libopenmpi-dev)")))
        return
    ranks = {"quick": 2, "default": 2, "full": max(2, os.cpu_count() or 2)}[run.mode]
    secs = {"quick": "0.3", "default": "1", "full": "2"}[run.mode]
    env = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
           "OMPI_MCA_btl_vader_single_copy_mechanism": "none"}
    run.progress("mpirun -n %d" % ranks)
    bind = ["--bind-to", "core", "--map-by", "core"] if ranks <= (os.cpu_count() or 1) else \
        ["--oversubscribe", "--bind-to", "none"]
    out = sh([mpirun, "-n", str(ranks)] + bind + ["-x", "LD_PRELOAD=" + LIB, prog, "--seconds", secs],
             env=env, timeout=600)
    rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    cols = ["rank", "host", "cpu", "node", "numaspan", "seconds", "mops", "mallocs", "refills",
            "spills", "remote_frees", "bytes_in_use", "rss_kb"]
    write_csv(os.path.join(d, "ranks.csv"), rows, cols)
    run.report.append(("mpi",
                       "%d MPI ranks (`mpirun %s -x LD_PRELOAD=libnumaspan.so`), each running an "
                       "allocation workload with numaspan preloaded and reading its own stats; rank 0 "
                       "gathered one row per rank (`mpi/ranks.csv`):\n\n%s" %
                       (ranks, " ".join(bind), md_table(rows, cols))))
    run.headline.append(("MPI ranks on numaspan", "%d of %d" % (sum(1 for r in rows if r["numaspan"]),
                                                               ranks), "mpi/ranks.csv"))


# The experiments: function, expected seconds on 2 CPUs per mode (for the progress estimate),
# what --list says of it.
EXPERIMENTS = {
    "topology": (exp_topology, {"quick": 2, "default": 2, "full": 2}, "the topologies"),
    "host": (exp_host, {"quick": 5, "default": 110, "full": 600},
             "host workloads x allocators x virtual cores"),
    "locality": (exp_locality, {"quick": 5, "default": 12, "full": 25},
                 "share of refills from the own node"),
    "pacer-trace": (exp_pacer_trace, {"quick": 2, "default": 3, "full": 5},
                    "heapLive per node over time (NSP_TRACE)"),
    "accounting": (exp_accounting, {"quick": 25, "default": 200, "full": 900},
                   "peak heap per accounting mode vs C/live"),
    "device": (exp_device, {"quick": 15, "default": 40, "full": 120},
               "device heap vs bump kernel, scaling"),
    "mpi": (exp_mpi, {"quick": 3, "default": 4, "full": 6}, "N ranks under mpirun, stats gathered"),
}


def write_report(run, machine):
    lines = ["# numaspan experiments", "",
             "Mode `%s`, on %s, %s; %.0f s. Every table and plot below is produced by "
             "`experiments/exp.py` from the built programs; CSV beside each plot." %
             (run.mode, machine, time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              time.time() - run.t0), "",
             "## Headline", "", md_table([{"what": a, "value": b, "data": c} for a, b, c in run.headline],
                                         ["what", "value", "data"]), ""]
    for name, text in run.report:
        lines += ["## " + name, "", text, ""]
    path = os.path.join(run.out, "REPORT.md")
    with open(path, "w") as f:
        f.write("\n".join(lines))
    return path


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--quick", action="store_true", help="under 2 minutes")
    g.add_argument("--full", action="store_true", help="the whole matrix")
    ap.add_argument("--only", help="comma-separated experiments (see --list)")
    ap.add_argument("--list", action="store_true", help="list the experiments")
    ap.add_argument("--out", default=os.path.join(ROOT, "results"))
    a = ap.parse_args()
    if a.list:
        for n, (_, secs, what) in EXPERIMENTS.items():
            print("%-12s %s (about %ds by default)" % (n, what, secs["default"]))
        return 0
    names = list(EXPERIMENTS)
    if a.only:
        names = [n.strip() for n in a.only.split(",") if n.strip()]
        bad = [n for n in names if n not in EXPERIMENTS]
        if bad:
            sys.stderr.write("exp.py: unknown experiment(s) %s; --list shows them\n" % ", ".join(bad))
            return 2
    for p in (TOOL, LIB):
        if not os.path.exists(p):
            sys.stderr.write("exp.py: %s missing: build first (bash tools/build.sh)\n" % p)
            return 1
    mode = "quick" if a.quick else "full" if a.full else "default"
    os.makedirs(a.out, exist_ok=True)
    run = Run(a.out, mode, names)
    failed = []
    for n in names:
        run.current = n
        run.progress("starting")
        try:
            EXPERIMENTS[n][0](run)
        except Exception as e:  # one experiment failing does not lose the others
            failed.append(n)
            run.report.append((n, "**Failed**: `%s`" % str(e).splitlines()[0][:300]))
        run.done_weight += EXPERIMENTS[n][1][mode]
    sys.stderr.write("\n")
    machine = "%s (%d CPUs)" % (os.uname().nodename, os.cpu_count() or 0)
    report = write_report(run, machine)
    print("report: %s" % report)
    print(md_table([{"what": w, "value": v, "data": c} for w, v, c in run.headline],
                   ["what", "value", "data"]))
    if failed:
        sys.stderr.write("exp.py: failed: %s (see the report)\n" % ", ".join(failed))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
