"""The run's outputs in `bench/results/`: a Markdown report, the same figures as JSON, and a
PNG of the latency distributions. Each run writes `bench-<time>.*` and copies them to
`latest.*`.
"""

from __future__ import annotations

import math
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from .plan import SCENARIOS

if TYPE_CHECKING:
    from .plan import Results

COMMAND = "make bench        # or: make bench-quick; DATABASE_URL=... make bench for your server"


def fmt(value: Any, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def extra(fig: dict[str, Any]) -> str:
    parts = []
    for key, label in (
        ("frames_per_s", "frames/s"),
        ("frames_per_service_cpu_s", "frames/service-CPU-s"),
        ("ratio_to_reference", "ratio to bare"),
        ("post_p50_ms", "POST p50 ms"),
        ("offered_rps", "offered/s"),
        ("frame_p50_ms", "POST -> frame p50 ms"),
        ("frame_p99_ms", "POST -> frame p99 ms"),
        ("refused_per_s", "refused/s"),
        ("refusal_p99_ms", "refusal p99 ms"),
        ("subset_frames_p50_ms", "subset-alert frames p50 ms"),
        ("subset_frames_p99_ms", "p99 ms"),
        ("beside_burst_frames", "subset frames written during a burst"),
        ("beside_burst_written_p99_le_ms", "their NOTIFY -> written p99 <= ms"),
        ("rss_per_idle_socket_kib", "KiB RSS/idle socket"),
        ("last_socket_p50_ms", "last socket p50 ms"),
        ("last_socket_max_ms", "last socket max ms"),
        ("notifications_per_s", "notifications/s delivered"),
        ("drain_after_last_commit_ms", "last listener done ms after producer"),
        ("sockets", "sockets"),
        ("errors", "errors"),
    ):
        if fig.get(key) not in (None, 0):
            digits = 2 if "ratio" in key else 1 if key.endswith("_ms") else 0
            parts.append(f"{label} {fmt(fig[key], digits)}")
    if fig.get("first_error"):
        parts.append(f"first error: {str(fig['first_error'])[:80]}")
    return "; ".join(parts)


def markdown(results: Results, plot_name: str) -> str:
    m = results.machine
    mode = "quick (`make bench-quick`)" if results.plan.quick else "full (`make bench`)"
    if results.plan.only != SCENARIOS:
        mode += f", only {', '.join(sorted(results.plan.only))}"
    met = sum(c["met"] for c in results.checks)
    lines = [
        "# inbox benchmark",
        "",
        f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {mode}, "
        f"{m['wall_seconds']:.0f} s wall.",
        f"Machine: {m['nproc']} cores ({m['cpu_model']}), {m['ram_gib']} GiB RAM, "
        f"Python {m['python']}, PostgreSQL {m.get('postgres_version', '?')} "
        f"({m['database']}), RLIMIT_NOFILE {m['rlimit_nofile']}.",
        f"Load average at start {m['load_avg_at_start']}, at end {m['load_avg_at_end']}: the "
        "service, PostgreSQL and the load generators share these cores with each other (and "
        "with anything else running), so compare figures within one run.",
        "",
        f"Reproduce: `{COMMAND}`",
        "",
        f"## Targets: {met} of {len(results.checks)} met",
        "",
        "| check | workers | measured | target | |",
        "| --- | --- | --- | --- | --- |",
    ]
    for c in results.checks:
        lines.append(
            f"| {c['name']} | {fmt(c['workers'])} | {fmt(c['value'], 3)} | {c['target']} | "
            f"{'met' if c['met'] else '**missed**'} |"
        )
    lines += [
        "",
        "## Figures",
        "",
        "Latency is p50 / p99 / max in ms: for open-loop rows from the intended send time, for "
        "capacity rows per request with a fixed number in flight, for fan-out from just before "
        "the POST to each frame received. CPU is seconds over the measured phase "
        "(psutil over each process tree).",
        "",
        "| scenario | measured | workers | ops/s | p50 | p99 | max | CPU service | CPU pg "
        "| CPU loadgen | lost | dup | other |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for f in results.figures:
        lines.append(
            f"| {f['scenario']} | {f['target']} | {fmt(f['workers'])} | "
            f"{fmt(f.get('throughput_rps'), 0)} | {fmt(f.get('p50_ms'), 2)} | "
            f"{fmt(f.get('p99_ms'), 2)} | {fmt(f.get('max_ms'), 2)} | "
            f"{fmt(f.get('cpu_service_s'), 2)} | {fmt(f.get('cpu_postgres_s'), 2)} | "
            f"{fmt(f.get('cpu_loadgen_s'), 2)} | {fmt(f.get('lost'))} | "
            f"{fmt(f.get('duplicated'))} | {extra(f)} |"
        )
    if results.notes:
        lines += ["", "## Notes", ""] + [f"- {note}" for note in results.notes]
    lines += ["", f"![latency distributions]({plot_name})", ""]
    return "\n".join(lines)


def plot(results: Results, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    groups: dict[str, list[tuple[str, list[float]]]] = {}
    for key, values in results.distributions.items():
        scenario, label = key.split(" | ", 1)
        groups.setdefault(scenario, []).append((label, values))
    cols = 3
    rows = max(1, math.ceil(len(groups) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(6 * cols, 4 * rows), squeeze=False)
    for ax, (scenario, series) in zip(axes.flat, sorted(groups.items()), strict=False):
        for label, values in series:
            if not values:
                continue
            ms = sorted(v * 1000 for v in values)
            pct = [100 * (i + 1) / len(ms) for i in range(len(ms))]
            ax.plot(ms, pct, label=label, linewidth=1.2)
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _pos: f"{v:g}"))
        ax.xaxis.set_minor_formatter(ticker.NullFormatter())
        ax.set_xlabel("latency (ms, log)")
        ax.set_ylabel("percentile")
        ax.set_title(scenario, fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=6)
    for ax in list(axes.flat)[len(groups) :]:
        ax.axis("off")
    fig.suptitle("inbox: latency distributions (CDF)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(results: Results, directory: Path) -> Path:
    """Write bench-<time>.{md,json,png} and copy them to latest.*; returns the Markdown path."""
    directory.mkdir(parents=True, exist_ok=True)
    stem = directory / time.strftime("bench-%Y%m%d-%H%M%S")
    png = stem.with_suffix(".png")
    plot(results, png)
    data = {
        "plan": {**asdict(results.plan), "only": sorted(results.plan.only)},
        "machine": results.machine,
        "checks": results.checks,
        "figures": results.figures,
        "notes": results.notes,
    }
    stem.with_suffix(".json").write_bytes(
        orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY)
    )
    md = stem.with_suffix(".md")
    md.write_text(markdown(results, "latest.png"))
    for suffix in (".md", ".json", ".png"):
        shutil.copyfile(stem.with_suffix(suffix), directory / f"latest{suffix}")
    return directory / "latest.md"
