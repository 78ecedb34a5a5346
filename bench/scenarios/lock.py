"""2b the advisory lock's cost: the same raw alert transaction on two scratch databases, with
and without the lock in alerts_assign_id, alternated so that a noisy neighbour hits both alike."""

from __future__ import annotations

import statistics

from ..database import NO_LOCK, create_database, drop_database, reset, sql
from ..plan import progress
from ..session import Bench


async def run(bench: Bench) -> None:
    plan = bench.plan
    variants = {"advisory lock (as migrated)": "", "plain nextval (lock removed)": NO_LOCK}
    urls: dict[str, str] = {}
    try:
        for label, ddl in variants.items():
            urls[label] = await create_database(bench.db.admin_url, "lock")
            if ddl:
                await sql(urls[label], ddl)
        ids = {label: await reset(url, 1_000) for label, url in urls.items()}
        caps: dict[str, list[float]] = {label: [] for label in variants}
        for round_ in range(plan.lock_rounds):
            for label, url in urls.items():
                progress(f"2 lock cost: raw transaction, {label} (round {round_ + 1}) ...")
                data = await bench.requests(
                    None,
                    target="raw",
                    kind="alert",
                    mode="saturate",
                    dsn=url,
                    pool=10,
                    recipients=(ids[label][0], ids[label][-1]),
                )
                data.pop("_latencies")
                caps[label].append(data["throughput_rps"])
                bench.record(
                    "2b advisory-lock cost (raw tx, scratch db)",
                    f"{label}, round {round_ + 1}",
                    None,
                    data,
                    lost=0,
                    duplicated=0,
                )
        with_lock, without = (statistics.median(c) for c in caps.values())
        bench.results.notes.append(
            f"Advisory lock in alerts_assign_id: raw alert transactions {with_lock:.0f}/s "
            f"with the lock vs {without:.0f}/s with a plain nextval (medians of "
            f"{plan.lock_rounds} alternated rounds; lock cost "
            f"{(1 - with_lock / without) * 100:+.1f}%) at {plan.concurrency} in "
            "flight, pool 10, no listener."
        )
    finally:
        for url in urls.values():
            await drop_database(bench.db.admin_url, url)
