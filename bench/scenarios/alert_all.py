"""5 alert_all over 100,000 objects: the POST answers once all rows are committed; 1,000 of the
objects watch their inboxes, and the last of them to receive each alert is timed too."""

from __future__ import annotations

import asyncio
from typing import Any

from ..common import summarize_ms
from ..database import last_alert_id, reset
from ..plan import progress
from ..procs import Server
from ..session import Bench


async def run(bench: Bench, server: Server, workers: int) -> None:
    plan = bench.plan
    progress(f"5 alert_all over {plan.all_objects} objects workers={workers} ...")
    ids = await reset(bench.db.url, plan.all_objects)
    after = await last_alert_id(bench.db.url)
    step = len(ids) // plan.all_sockets
    watched = ids[::step][: plan.all_sockets]
    client = await bench.load("clients", url=server.url, after=after, object_ids=watched)
    poster = await bench.load(
        "poster",
        url=server.url,
        object_ids=watched,
        subset=1,
        all_every=1,
        rate=0.5,
        duration=plan.all_repeats / 0.5,
    )

    async def delivered(_posted: dict[str, Any]) -> None:
        await asyncio.sleep(2.0)

    posted, cpu = await bench.measure(server, poster, watchers=[client], settle=delivered)
    await client.send("stop")
    out = await client.finish()
    await client.close()
    sent_at = {r[0]: r[1] for r in posted["records"]}
    last_at: dict[int, float] = {}
    got: dict[int, set[int]] = {}
    for oid, aid, t in zip(out["object_ids"], out["alert_ids"], out["times"], strict=True):
        last_at[aid] = max(last_at.get(aid, 0.0), t)
        got.setdefault(aid, set()).add(oid)
    reach = [last_at[a] - sent_at[a] for a in sent_at if a in last_at]
    lost = sum(out["connected"] - len(got.get(a, ())) for a in sent_at)
    post = summarize_ms(posted["latencies"])
    data = {
        "throughput_rps": posted["completed"] / posted["elapsed"],
        **post,
        **cpu,
        "lost": lost,
        "duplicated": len(out["alert_ids"]) - sum(map(len, got.values())),
        "errors": posted["errors"],
        "first_error": posted["first_error"],
        "last_socket_p50_ms": summarize_ms(reach)["p50_ms"],
        "last_socket_max_ms": summarize_ms(reach)["max_ms"],
        "sockets": out["connected"],
        "_latencies": posted["latencies"],
    }
    fig = bench.record(
        f"5 alert_all over {plan.all_objects:,} (POST = committed)", "service", workers, data
    )
    bench.results.check(
        "5 alert_all over 100k committed (POST max)",
        round(fig["max_ms"], 1),
        "< 1000 ms",
        fig["max_ms"] < 1000,
        workers,
    )
    progress(
        f"5 alert_all workers={workers}: POST p50={fig['p50_ms']:.0f} ms "
        f"max={fig['max_ms']:.0f} ms, last socket max={fig['last_socket_max_ms']:.0f} ms"
        f" lost={lost}"
    )
