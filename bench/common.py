"""What the harness processes share: latency statistics, CPU accounting over process trees,
the file-descriptor limit, and the line protocol between the orchestrator and its workers.

Every worker (load generator, listener fleet, bare broadcast server) is a child process that
prints JSON lines on stdout: {"event": "ready", ...} once set up, {"event": "done", ...} with
its results. The orchestrator writes one command per line on its stdin ("go", "stop").
"""

from __future__ import annotations

import asyncio
import math
import resource
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import psutil


def raise_nofile(want: int = 0) -> int:
    """Lift the soft RLIMIT_NOFILE to the hard limit (10,000 sockets need as many fds), and
    the hard limit to `want` where allowed (root); children inherit both."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if want > hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
            return want
        except (ValueError, OSError):
            pass  # not privileged: the hard limit stays
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def install_uvloop() -> bool:
    """Load generators use uvloop when it is installed: a cheaper client measures more server."""
    try:
        import uvloop
    except ImportError:
        return False
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return True


# -- statistics -------------------------------------------------------------------------------


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values (q in 0..100); NaN when empty."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def summarize_ms(seconds: Iterable[float]) -> dict[str, float | int]:
    """p50 / p99 / max (and count) of latencies given in seconds, reported in milliseconds."""
    values = sorted(seconds)
    return {
        "n": len(values),
        "p50_ms": percentile(values, 50) * 1000,
        "p99_ms": percentile(values, 99) * 1000,
        "max_ms": (values[-1] * 1000) if values else math.nan,
    }


def sample(values: Sequence[float], limit: int = 20_000) -> list[float]:
    """An evenly strided subset, enough to draw a distribution without carrying every point."""
    if len(values) <= limit:
        return list(values)
    step = len(values) / limit
    return [values[int(i * step)] for i in range(limit)]


# -- CPU and memory of process trees ------------------------------------------------------------


@dataclass
class Tree:
    """A process and its descendants, found afresh at every reading (workers come and go).

    CPU time of children that already exited and were reaped by a member is included through
    the reaper's `children_user`/`children_system` (PostgreSQL backends end with their
    connection; the postmaster reaps them).
    """

    root: int

    def processes(self) -> list[psutil.Process]:
        try:
            root = psutil.Process(self.root)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def cpu_seconds(self) -> float:
        total = 0.0
        for proc in self.processes():
            try:
                t = proc.cpu_times()
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            total += t.user + t.system + t.children_user + t.children_system
        return total

    def rss_bytes(self) -> int:
        total = 0
        for proc in self.processes():
            try:
                total += proc.memory_info().rss
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        return total


class CpuMeter:
    """CPU seconds spent by named groups of process trees between `start()` and `stop()`."""

    def __init__(self, groups: dict[str, list[Tree]]) -> None:
        self.groups = groups
        self._before: dict[str, float] = {}

    def _read(self) -> dict[str, float]:
        return {name: sum(t.cpu_seconds() for t in trees) for name, trees in self.groups.items()}

    def start(self) -> None:
        self._before = self._read()

    def stop(self) -> dict[str, float]:
        after = self._read()
        return {
            f"cpu_{name}_s": round(after[name] - self._before.get(name, 0.0), 3) for name in after
        }


# -- the worker line protocol -----------------------------------------------------------------


def emit(event: str, **data: Any) -> None:
    sys.stdout.buffer.write(orjson.dumps({"event": event, **data}) + b"\n")
    sys.stdout.buffer.flush()


async def stdin_lines() -> asyncio.StreamReader:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 20)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


async def wait_command(reader: asyncio.StreamReader, expected: str) -> None:
    """Block until the orchestrator sends `expected` (or closes stdin, which means stop)."""
    while True:
        line = await reader.readline()
        if not line or line.strip().decode() == expected:
            return
