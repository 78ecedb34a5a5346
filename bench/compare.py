"""`python -m bench.compare OLD.json NEW.json`: the figures and checks that moved between two runs.

Reads two `bench/results/*.json` (report.py writes one per run; `latest.json` is committed) and
prints, for every figure present in both, each measure whose ratio new/old moved by more than
`--threshold` (10 % by default), and every check whose verdict changed. Figures are matched by
scenario, worker count and target, with the request rate in a target ("service at 690/s")
ignored, since each run derives its open-loop rate from its own capacity. Runs on a shared
machine are noisy: compare runs made alike (`--quick` with `--quick`), and trust ratios within a
run more than ratios across runs.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path
from typing import Any

# Measures worth comparing; for the latency and CPU ones lower is better.
MEASURES = (
    "throughput_rps",
    "frames_per_s",
    "notifications_per_s",
    "p50_ms",
    "p99_ms",
    "max_ms",
    "cpu_service_s",
    "cpu_postgres_s",
    "frames_per_service_cpu_s",
    "ratio_to_reference",
    "rss_per_idle_socket_kib",
    "last_socket_p50_ms",
    "last_socket_max_ms",
    "lost",
    "duplicated",
    "errors",
)
RATE = re.compile(r"\bat [0-9][0-9,.]*/s\b")

Key = tuple[str, str, Any]


def key(figure: dict[str, Any]) -> Key:
    return (figure["scenario"], RATE.sub("at N/s", figure["target"]), figure["workers"])


def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def ratio(old: float, new: float) -> float:
    if old == 0:
        return math.inf if new else 1.0
    return new / old


def moved(old: dict[str, Any], new: dict[str, Any], threshold: float) -> list[list[str]]:
    """Rows (scenario, target, workers, measure, old, new, new/old) of what moved, in the
    order of the new run's figures."""
    rows = []
    before = {key(f): f for f in old["figures"]}
    for figure in new["figures"]:
        previous = before.get(key(figure))
        if previous is None:
            continue
        for measure in MEASURES:
            a, b = previous.get(measure), figure.get(measure)
            if not isinstance(a, int | float) or not isinstance(b, int | float):
                continue
            if math.isnan(a) or math.isnan(b):
                continue
            r = ratio(a, b)
            if abs(r - 1) > threshold:
                scenario, target, workers = key(figure)
                who = "-" if workers is None else str(workers)
                rows.append([scenario, target, who, measure, f"{a:.4g}", f"{b:.4g}", f"{r:.2f}"])
    return rows


def verdicts(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Checks met in one run and missed in the other."""
    before = {(c["name"], c["workers"]): c for c in old["checks"]}
    lines = []
    for check in new["checks"]:
        previous = before.get((check["name"], check["workers"]))
        if previous is not None and previous["met"] != check["met"]:
            now = "met" if check["met"] else "MISSED"
            lines.append(
                f"{check['name']} (workers {check['workers']}): {previous['value']} -> "
                f"{check['value']} ({check['target']}): now {now}"
            )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.compare", description=__doc__)
    parser.add_argument("old", type=Path)
    parser.add_argument("new", type=Path)
    parser.add_argument("--threshold", type=float, default=0.10, help="report |new/old - 1| above")
    args = parser.parse_args(argv)
    old, new = load(args.old), load(args.new)
    if old["plan"].get("quick") != new["plan"].get("quick"):
        print("note: one run is --quick and the other is not; sizes differ", file=sys.stderr)
    rows = moved(old, new, args.threshold)
    header = ["scenario", "target", "workers", "measure", "old", "new", "new/old"]
    print(f"{len(rows)} measures moved by more than {args.threshold:.0%}")
    if rows:
        print("| " + " | ".join(header) + " |")
        print("|" + " --- |" * len(header))
        for row in rows:
            print("| " + " | ".join(row) + " |")
    changed = verdicts(old, new)
    print(f"{len(changed)} checks changed verdict")
    for line in changed:
        print(f"- {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
