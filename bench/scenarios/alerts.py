"""2 POST /alert to 10 recipients, group-committed (service/batch.py).

- Capacity (32 in flight) against the one-alert-per-transaction raw ceiling (the same statement
  through asyncpg, one alert per transaction: NOTIFY serialises those commits) and against the
  stack's own ceiling, a bare aiohttp handler doing the alert's work with the same group commit
  (bare_writes.py). Target: >= 3x the raw ceiling, or, where that is more than HTTP on these
  cores can carry, >= 0.7 of the bare reference; both are reported, and which one binds.
- At half capacity, open loop, with one inbox socket per recipient: POST p99 (against the raw
  one-alert path at the same rate) and POST -> frame p99 (<= 50 ms).
- Several workers add capacity: with W > 1, the capacity against that of 1 worker measured
  earlier in the same run (>= 1), and, as a note, the alerts per group commit over the service's
  phases (counted by the service itself): what tells whether the workers' committers share
  commits or split them.
- Overload: 2x capacity offered for `overload_seconds`: completed >= 0.9x capacity, accepted
  p99 <= 1 s, refusals 503 server_busy in <= 50 ms p99, no other error, 0 frames lost or
  duplicated for the accepted alerts.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

from ..database import reset
from ..plan import progress
from ..procs import Server
from ..session import Bench
from ..writes import bare_capacity, delivered_alerts

SCENARIO = "2 POST /alert (10 recipients)"


async def run(bench: Bench, server: Server, workers: int) -> None:
    check = bench.results.check
    ids = await reset(bench.db.url, 1_000)
    span = (ids[0], ids[-1])
    before = await group_commits(server)
    service, raw = await bench.request_pair(server, workers, "alert", SCENARIO, recipients=span)
    after = await group_commits(server)
    commits, alerts = after[0] - before[0], after[1] - before[1]
    bench.results.notes.append(
        f"2 POST /alert, {workers} worker(s): {alerts / max(commits, 1):.1f} alerts per group "
        f"commit ({commits:.0f} commits of {alerts:.0f} alerts) over the service's capacity and "
        "half-capacity phases (inbox_writes_batched_total / inbox_write_batches_total)"
    )
    one = next(
        (
            f["throughput_rps"]
            for f in bench.results.figures
            if f["scenario"] == SCENARIO
            and f["workers"] == 1
            and f["target"].startswith("service capacity")
        ),
        None,
    )
    if workers > 1 and one:
        check(
            f"2 POST /alert capacity, {workers} workers / 1 worker (same run)",
            round(service / one, 3),
            ">= 1",
            service >= one,
            workers,
        )
    bare = await bare_capacity(bench, workers, "alert", SCENARIO, recipients=span)
    to_raw, to_bare = service / raw, service / bare
    binds = "raw" if 3 * raw <= bare else "bare"  # 3x raw is within what the stack can carry
    check(
        "2 POST /alert capacity / one-alert-per-transaction ceiling (raw tx)"
        + (" [binds]" if binds == "raw" else ""),
        round(to_raw, 3),
        ">= 3 (stretch 5)",
        to_raw >= 3,
        workers,
    )
    check(
        "2 POST /alert capacity / bare aiohttp doing the alert's work"
        + (" [binds]" if binds == "bare" else ""),
        round(to_bare, 3),
        ">= 0.7",
        to_bare >= 0.7,
        workers,
    )
    progress(
        f"2 POST /alert workers={workers}: {service:.0f}/s; raw one-per-tx {raw:.0f}/s "
        f"(x{to_raw:.2f}); bare aiohttp {bare:.0f}/s ({to_bare:.2f}); binding: {binds}"
    )

    rate = round(0.5 * service, -1) or 10
    progress(f"2 POST /alert workers={workers}: {rate:.0f}/s with inbox sockets ...")
    half = await delivered_alerts(bench, server, workers, ids, rate=rate, seconds=bench.plan.phase)
    record(bench, workers, f"service at {rate:.0f}/s, 1 socket per recipient", half)
    check(
        f"2 POST /alert at {rate:.0f}/s: POST -> frame p99",
        round(half["frame_p99_ms"], 2),
        "<= 50 ms",
        half["frame_p99_ms"] <= 50,
        workers,
    )
    one_alert = next(
        f["p99_ms"]
        for f in reversed(bench.results.figures)
        if f["scenario"] == SCENARIO and f["target"] == f"reference at {rate:.0f}/s"
    )
    check(
        f"2 POST /alert at {rate:.0f}/s: POST p99 / one-alert-per-transaction p99 (raw)",
        round(half["post_p99_ms"] / one_alert, 3),
        "<= 1",
        half["post_p99_ms"] <= one_alert,
        workers,
    )

    offered = 2 * service
    progress(f"2 POST /alert workers={workers}: overload, {offered:.0f}/s offered ...")
    over = await delivered_alerts(
        bench,
        server,
        workers,
        ids,
        rate=offered,
        seconds=bench.plan.overload_seconds,
        posters=2,
        concurrency=256,
    )
    record(bench, workers, f"overload: {offered:.0f}/s offered (2x capacity)", over)
    completed = over["throughput_rps"] / service
    refusal_p99 = over["refusal_p99_ms"] or 0.0
    check(
        "2 overload: completed / capacity", round(completed, 3), ">= 0.9", completed >= 0.9, workers
    )
    check(
        "2 overload: accepted p99",
        round(over["p99_ms"], 1),
        "<= 1000 ms",
        over["p99_ms"] <= 1000,
        workers,
    )
    check(
        "2 overload: refusals (503 server_busy) p99",
        round(refusal_p99, 1),
        "<= 50 ms",
        refusal_p99 <= 50,
        workers,
    )
    check(
        "2 overload: other errors + lost + duplicated frames",
        over["errors"] + over["lost"] + over["duplicated"],
        "== 0",
        over["errors"] + over["lost"] + over["duplicated"] == 0,
        workers,
    )
    progress(
        f"2 overload workers={workers}: {over['throughput_rps']:.0f}/s completed "
        f"({completed:.2f} of capacity), p99 {over['p99_ms']:.0f} ms, "
        f"{over['refused_per_s']:.0f}/s refused (p99 {refusal_p99:.1f} ms), "
        f"errors {over['errors']}, lost {over['lost']}, dup {over['duplicated']}"
    )


def record(bench: Bench, workers: int, label: str, data: dict[str, Any]) -> None:
    bench.record(SCENARIO, label, workers, data)


async def group_commits(server: Server) -> tuple[float, float]:
    """(alert batches committed, alerts in them) so far, over every worker. A worker copies its
    counts to the shared files every second: wait for the last second of every worker first."""
    await asyncio.sleep(1.5)
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{server.url}/metrics") as response,
    ):
        text = await response.text()
    found = {}
    for line in text.splitlines():
        for name in ("inbox_write_batches_total", "inbox_writes_batched_total"):
            if line.startswith(name + '{kind="alerts"}'):
                found[name] = float(line.rsplit(" ", 1)[1])
    return found.get("inbox_write_batches_total", 0.0), found.get("inbox_writes_batched_total", 0.0)
