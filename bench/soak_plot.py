#!/usr/bin/env python3
"""Draws the soak's figures per interval (the JSON `warren-bench soak`
writes with --soak-series) as one PNG: completed workflows a second beside
the offered load, p50 and p99 latency, scheduler and worker RSS, and the
store's size, one line per run (e.g. SQLite and PostgreSQL). The shaded
bands are what the plateau verdicts compare: the second quarter's peak
against the last quarter's; the dotted line is the end of the warm-up.

Outside the build on purpose (the product needs no plotting crate):

    python3 -m pip install matplotlib
    python3 bench/soak_plot.py -o docs/img/soak.png sqlite.json postgres.json
    python3 bench/soak_plot.py --markdown sqlite.json   # the rows as a table
"""

import argparse
import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

MB = 1024 * 1024
COLOURS = ["tab:blue", "tab:orange", "tab:green", "tab:red"]


def label(run, given):
    if given:
        return given
    return {"sqlite": "SQLite", "postgres": "PostgreSQL"}.get(run["store"], run["store"])


def minutes(run):
    return [r["end_s"] / 60 for r in run["rows"]]


def values(run, key, scale=1.0):
    return [float("nan") if r[key] is None else r[key] / scale for r in run["rows"]]


def bands(ax, run):
    """The quarters the plateau verdicts compare, and the warm-up's end."""
    interval = run["interval_s"] / 60
    n, first = run["window"]["intervals"], run["window"]["first"]
    ax.axvspan(n // 4 * interval, n // 2 * interval, color="0.92", zorder=0)
    ax.axvspan((n - n // 4) * interval, n * interval, color="0.92", zorder=0)
    ax.axvline(first * interval, color="0.5", linestyle=":", linewidth=1)


def verdict_line(run, name):
    failed = [v["name"].split(":")[0] for v in run["verdicts"] if not v["passed"]]
    return f"{name}: " + ("every verdict passed" if not failed else "FAILED " + "; ".join(failed))


def markdown(run):
    """The rows as a Markdown table, as docs/benchmarks.md shows them."""
    def mb(v):
        return "-" if v is None else f"{v / MB:.1f}"

    lines = [
        "| min | wf/s | tasks/s | p50 ms | p99 ms | scheduler MB | worker MB | store MB | pruned | load |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in run["rows"]:
        lines.append(
            f"| {r['end_s'] / 60:g} | {r['workflows_per_s']:.1f} | {r['tasks_per_s']:.0f} "
            f"| {r['latency_p50_ms']:.0f} | {r['latency_p99_ms']:.0f} | {mb(r['scheduler_rss'])} "
            f"| {mb(r['worker_rss'])} | {mb(r['store'])} | {r['pruned'] if r['pruned'] is not None else '-'} "
            f"| {r['load'] if r['load'] is not None else '-'} |"
        )
    lines.append("")
    for v in run["verdicts"]:
        lines.append(f"- {'pass' if v['passed'] else '**FAIL**'}: {v['name']}: {v['detail']}")
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("series", nargs="+", help="JSON files written by --soak-series")
    p.add_argument("-o", "--output", help="the PNG to write")
    p.add_argument("--markdown", action="store_true",
                   help="print each run's rows and verdicts as Markdown instead")
    p.add_argument("--labels", help="comma-separated names for the runs (default: their store)")
    p.add_argument("--title", default="Warren soak")
    args = p.parse_args()
    runs = [json.load(open(f)) for f in args.series]
    names = args.labels.split(",") if args.labels else [None] * len(runs)
    names = [label(r, n) for r, n in zip(runs, names)]
    if args.markdown:
        for run, name in zip(runs, names):
            print(f"{name}:\n\n{markdown(run)}\n")
        return
    if not args.output:
        p.error("give -o FILE (or --markdown)")

    fig, axes = plt.subplots(4, 1, figsize=(10, 12), sharex=True)
    thr, lat, rss, store = axes
    for i, (run, name) in enumerate(zip(runs, names)):
        c = COLOURS[i % len(COLOURS)]
        x = minutes(run)
        thr.plot(x, values(run, "workflows_per_s"), color=c, marker=".", label=f"{name}: completed")
        thr.axhline(run["offered_per_s"], color=c, linestyle="--", linewidth=0.8,
                    label=f"{name}: offered {run['offered_per_s']:g}/s")
        lat.plot(x, values(run, "latency_p99_ms"), color=c, marker=".", label=f"{name}: p99")
        lat.plot(x, values(run, "latency_p50_ms"), color=c, linestyle="--", label=f"{name}: p50")
        rss.plot(x, values(run, "scheduler_rss", MB), color=c, marker=".", label=f"{name}: scheduler")
        rss.plot(x, values(run, "worker_rss", MB), color=c, linestyle="--", label=f"{name}: worker")
        store.plot(x, values(run, "store", MB), color=c, marker=".", label=name)
    for ax in axes:
        bands(ax, runs[0])
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    thr.set_ylabel("workflows/s")
    thr.set_ylim(0, 1.25 * max(r["offered_per_s"] for r in runs))
    lat.set_ylabel("latency, submit to outcome (ms)")
    lat.set_ylim(bottom=0)
    rss.set_ylabel("RSS, peak per interval (MB)")
    rss.set_ylim(bottom=0)
    store.set_ylabel("store on disk, peak (MB)")
    store.set_ylim(bottom=0)
    store.set_xlabel("minutes (grey: the second and last quarters the plateau verdicts compare;"
                     " dotted: end of the warm-up)")
    subtitle = "\n".join(verdict_line(r, n) for r, n in zip(runs, names))
    fig.suptitle(f"{args.title}\n{subtitle}", fontsize=10)
    fig.tight_layout()
    fig.savefig(args.output, dpi=90)


if __name__ == "__main__":
    main()
