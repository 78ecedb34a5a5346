"""What one run measures and what it found: the plan (sizes, durations, which scenarios), the
results (figures, checks, latency distributions, the machine), and where they are written.

The scenario names here are the registry: each is a module `bench/scenarios/<name>.py` with
`async def run(...)` (see scenarios/__init__.py), run in this order.
"""

from __future__ import annotations

import contextlib
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
EMBEDDED_DIR = ROOT / ".pgdata-bench"

# Run against each `inbox serve --workers W`, in this order.
SERVICE_SCENARIOS = ("fanout", "objects", "alerts", "storm", "alert_all")
# Need no service: run once, after the service scenarios.
STANDALONE_SCENARIOS = ("lock", "scaleout", "sockets50k")
SCENARIOS = frozenset(SERVICE_SCENARIOS + STANDALONE_SCENARIOS)


@dataclass(frozen=True)
class Plan:
    """Sizes and durations; `--quick` shrinks them to a smoke run of under two minutes."""

    quick: bool
    workers: tuple[int, ...] = (1, 2)
    phase: float = 4.0  # seconds per request-rate phase
    concurrency: int = 32  # requests in flight, service and reference alike
    fanout_k: tuple[int, ...] = (1_000, 10_000)
    fanout_seconds: float = 8.0
    fanout_frames_per_s: int = 10_000
    alert_rate: float = 50.0  # alerts/s in the fan-out
    storm_rate: float = 1_000.0
    storm_seconds: float = 3.0
    backlog: int = 10_000
    backlog_repeats: int = 5
    all_objects: int = 100_000
    all_sockets: int = 1_000
    all_repeats: int = 4
    scale_sockets: int = 50_000  # sockets50k: inbox sockets over 2 workers
    listeners: tuple[int, ...] = (1, 10, 100)
    listen_seconds: float = 3.0
    lock_rounds: int = 3
    overload_seconds: float = 10.0  # 2x the POST /alert capacity offered, for this long
    only: frozenset[str] = SCENARIOS
    profile: bool = False  # run the service under py-spy (its CPU then includes py-spy's)

    def runs(self, name: str) -> bool:
        return name in self.only

    @classmethod
    def make(cls, quick: bool, only: frozenset[str], workers: tuple[int, ...]) -> Plan:
        if not quick:
            return cls(quick=False, only=only, workers=workers)
        return cls(
            quick=True,
            only=only,
            workers=workers,
            phase=1.2,
            fanout_k=(1_000,),
            fanout_seconds=2.5,
            storm_seconds=1.0,
            backlog_repeats=3,
            all_repeats=2,
            scale_sockets=5_000,
            listen_seconds=1.2,
            lock_rounds=1,
            overload_seconds=3.0,
        )


@dataclass
class Results:
    plan: Plan
    figures: list[dict[str, Any]] = field(default_factory=list)
    checks: list[dict[str, Any]] = field(default_factory=list)
    distributions: dict[str, list[float]] = field(default_factory=dict)
    machine: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def figure(self, **data: Any) -> dict[str, Any]:
        self.figures.append(data)
        return data

    def check(self, name: str, value: float, target: str, met: bool, workers: int | None) -> None:
        self.checks.append(
            {"name": name, "workers": workers, "value": value, "target": target, "met": met}
        )


def progress(text: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def machine() -> dict[str, Any]:
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_avg_at_start": [round(x, 2) for x in os.getloadavg()],
    }
