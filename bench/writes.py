"""What the write scenarios (scenarios/objects.py, scenarios/alerts.py) share: the bare aiohttp
write reference (bare_writes.py) at capacity, and alerts posted open loop to connected inbox
sockets, checked frame by frame (POST -> frame latency, lost, duplicated), with refusals
(503 server_busy) counted apart."""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

from .common import summarize_ms
from .database import last_alert_id
from .plan import progress
from .procs import Server, Worker, free_port, serve
from .session import Bench


async def bare_capacity(
    bench: Bench, workers: int, kind: str, scenario: str, recipients: tuple[int, int] = (1, 1)
) -> float:
    """The bare aiohttp reference (`workers` processes) at capacity, recorded; its req/s."""
    port = free_port()
    argv = [sys.executable, "-m", "bench.bare_writes", str(port), bench.db.url, str(workers)]
    progress(f"{scenario} workers={workers}: bare aiohttp reference capacity ...")
    with serve(argv, bench.service_log, port, "bare", "/readyz") as bare:
        data = await bench.requests(
            bare, target="http", kind=kind, mode="saturate", pool=10, recipients=recipients
        )
    data.pop("_latencies")
    bench.record(
        scenario,
        f"bare aiohttp reference capacity ({bench.plan.concurrency} in flight)",
        workers,
        data,
        lost=0,
        duplicated=0,
    )
    rps: float = data["throughput_rps"]
    return rps


async def delivered_alerts(
    bench: Bench,
    server: Server,
    workers: int,
    ids: list[int],
    *,
    rate: float,
    seconds: float,
    posters: int = 1,
    concurrency: int = 64,
) -> dict[str, Any]:
    """Alerts to 10 of `ids` at `rate`/s (from `posters` processes, refusals allowed) while one
    inbox socket for every tenth id listens (about one frame per alert: enough to check every
    accepted alert's delivery without making this a fan-out benchmark). Accepted POST latency
    is from the intended send time (open loop); refusal latency from the moment the refused
    request was sent."""
    after = await last_alert_id(bench.db.url)
    watched = set(ids[::10])
    clients = await bench.load(
        "clients", url=server.url, after=after, object_ids=sorted(watched), connect_concurrency=100
    )
    loads: list[Worker] = [
        await bench.load(
            "poster",
            url=server.url,
            object_ids=ids,
            subset=10,
            all_every=0,
            rate=rate / posters,
            duration=seconds,
            concurrency=concurrency,
            refusals=True,
            seed=n + 1,
        )
        for n in range(posters)
    ]
    meter = bench.meter(server, [*loads, clients])
    meter.start()
    await asyncio.gather(*(load.send("go") for load in loads))
    outs = await asyncio.gather(*(load.finish() for load in loads))
    expected = sum(len(watched.intersection(r[2])) for out in outs for r in out["records"])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        await clients.send("progress")
        if (await clients.event("progress", 30))["frames"] >= expected:
            break
        await asyncio.sleep(0.1)
    cpu = meter.stop()
    await clients.send("stop")
    frames = await clients.finish()
    await clients.close()
    for load in loads:
        await load.close()

    sent_at = {r[0]: r[1] for out in outs for r in out["records"]}
    to = {r[0]: watched.intersection(r[2]) for out in outs for r in out["records"]}
    seen: set[tuple[int, int]] = set()
    e2e: list[float] = []
    duplicated = unexpected = 0
    for oid, aid, t in zip(frames["object_ids"], frames["alert_ids"], frames["times"], strict=True):
        if aid not in to or oid not in to[aid]:
            unexpected += 1
        elif (oid, aid) in seen:
            duplicated += 1
        else:
            seen.add((oid, aid))
            e2e.append(t - sent_at[aid])
    accepted = [lat for out in outs for lat in out["latencies"]]
    refused = [lat for out in outs for lat in out["refused"]]
    elapsed = max(out["elapsed"] for out in outs)
    post = summarize_ms(accepted)
    frame = summarize_ms(e2e)
    await asyncio.sleep(1.0)  # the server notices the closed sockets
    return {
        "offered_rps": rate,
        "throughput_rps": len(accepted) / elapsed,
        **post,
        "post_p99_ms": post["p99_ms"],
        "frame_p50_ms": frame["p50_ms"],
        "frame_p99_ms": frame["p99_ms"],
        "refused_per_s": len(refused) / elapsed,
        "refusal_p99_ms": summarize_ms(refused)["p99_ms"] if refused else None,
        **cpu,
        "lost": expected - len(seen),
        "duplicated": duplicated + unexpected + frames["out_of_order"],
        "errors": sum(out["errors"] for out in outs) + frames["connect_errors"],
        "first_error": next((o["first_error"] for o in outs if o["first_error"]), None),
        "sockets": frames["connected"],
        "_latencies": accepted,
    }
