"""4 connect storm: new inbox sockets at a fixed rate (the handshake's cost), then one inbox
that already holds a backlog of 10,000 alerts read to the end, repeatedly."""

from __future__ import annotations

import asyncio

from ..common import summarize_ms
from ..database import SEED_BACKLOG, analyze, reset, sql
from ..plan import progress
from ..procs import Server
from ..session import Bench


async def run(bench: Bench, server: Server, workers: int) -> None:
    plan = bench.plan
    n = int(plan.storm_rate * plan.storm_seconds)
    ids = await reset(bench.db.url, n + 1)
    progress(
        f"4 connect storm workers={workers}: {plan.storm_rate:.0f}/s for "
        f"{plan.storm_seconds:.0f} s ..."
    )
    storm = await bench.load(
        "storm",
        url=server.url,
        object_ids=ids[:n],
        rate=plan.storm_rate,
        duration=plan.storm_seconds,
    )
    out, cpu = await bench.measure(server, storm)
    data = {
        "throughput_rps": out["completed"] / out["elapsed"],
        **summarize_ms(out["latencies"]),
        **cpu,
        "lost": 0,
        "duplicated": 0,
        "errors": out["errors"],
        "first_error": out["first_error"],
        "_latencies": out["latencies"],
    }
    bench.record(
        "4 connect storm (handshake)", f"service, {plan.storm_rate:.0f} new/s", workers, data
    )
    await asyncio.sleep(1.0)
    await backlog(bench, server, workers, ids[-1])


async def backlog(bench: Bench, server: Server, workers: int, object_id: int) -> None:
    plan = bench.plan
    await sql(bench.db.url, SEED_BACKLOG, object_id, plan.backlog)
    await analyze(bench.db.url, "alerts, object_alerts")
    await asyncio.sleep(0.5)  # the listener skims the burst of notifications
    progress(f"4 backlog workers={workers}: {plan.backlog} alerts x{plan.backlog_repeats} ...")
    reader = await bench.load(
        "backlog",
        url=server.url,
        object_id=object_id,
        expect=plan.backlog,
        repeats=plan.backlog_repeats,
    )
    out, cpu = await bench.measure(server, reader)
    data = {
        "throughput_rps": plan.backlog * len(out["latencies"]) / sum(out["latencies"]),
        **summarize_ms(out["latencies"]),
        **cpu,
        "lost": out["lost"],
        "duplicated": out["duplicated"],
        "errors": 0,
        "_latencies": out["latencies"],
    }
    fig = bench.record("4 backlog of 10,000 (time to all)", "service", workers, data)
    bench.results.check(
        "4 backlog of 10,000 received (p50 of repeats)",
        round(fig["p50_ms"], 1),
        "< 300 ms",
        fig["p50_ms"] < 300,
        workers,
    )
    progress(f"4 backlog workers={workers}: p50={fig['p50_ms']:.0f} ms max={fig['max_ms']:.0f} ms")
