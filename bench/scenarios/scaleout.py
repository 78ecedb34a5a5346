"""7 scale-out: one NOTIFY per commit delivered to N listening processes (1, 10, 100), with a
raw alert transaction producer: what more service processes cost PostgreSQL."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from ..common import CpuMeter, summarize_ms
from ..database import last_alert_id, reset
from ..plan import progress
from ..session import Bench


async def run(bench: Bench) -> None:
    db = bench.db
    await reset(db.url, 1_000)
    for n in bench.plan.listeners:
        if n + 20 > db.max_connections:
            bench.results.notes.append(
                f"7: {n} listeners skipped: max_connections is {db.max_connections}"
            )
            continue
        await listeners(bench, n)


async def listeners(bench: Bench, n: int) -> None:
    db = bench.db
    progress(f"7 scale-out: {n} LISTEN processes ...")
    fleet = await bench.load("listeners", dsn=db.url, channel="alerts", n=n)
    producer = await bench.load(
        "requests",
        target="raw",
        kind="alert",
        mode="saturate",
        duration=bench.plan.listen_seconds,
        concurrency=8,
        pool=8,
        dsn=db.url,
        recipients=(1, 1_000),
        url="",
        rate=0,
    )
    # The fleet's tree holds its forked listeners.
    meter = CpuMeter({"postgres": [db.pg], "loadgen": [producer.tree, fleet.tree]})
    before = await last_alert_id(db.url)
    await fleet.send(f"go {before}")
    committed = 0
    delivered_in = 0.0

    async def delivered(_produced: dict[str, Any]) -> None:
        nonlocal committed, delivered_in
        committed = await last_alert_id(db.url) - before
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # until every listener has every alert
            await fleet.send("progress")
            counts = (await fleet.event("progress", 30))["counts"]
            if min(counts) >= committed:
                break
            await asyncio.sleep(0.05)
        delivered_in = time.monotonic() - deadline + 10

    produced, cpu = await bench.measure(None, producer, meter=meter, settle=delivered)
    await fleet.send("stop")
    out = await fleet.finish()
    await fleet.close()
    received = sum(out["counts"])
    lat = produced.pop("latencies")
    data = {
        "throughput_rps": produced["completed"] / produced["elapsed"],
        "notifications_per_s": received / produced["elapsed"],
        **summarize_ms(lat),
        **cpu,
        "cpu_service_s": 0.0,
        "lost": sum(max(0, committed - c) for c in out["counts"]),
        "drain_after_last_commit_ms": delivered_in * 1000,
        "duplicated": 0,
        "errors": produced["errors"],
        "listeners": n,
        "_latencies": lat,
    }
    fig = bench.record(
        "7 scale-out: NOTIFY to N listeners (raw alert tx, 8 in flight)",
        f"{n} listening processes",
        None,
        data,
    )
    progress(
        f"7 scale-out n={n}: {fig['throughput_rps']:.0f} commits/s, "
        f"{fig['notifications_per_s']:.0f} notifications/s delivered, "
        f"lost={fig['lost']}"
    )
