"""1 POST /object: the service's capacity and open-loop latency against a raw asyncpg INSERT
(no HTTP at all) and against a bare aiohttp handler that parses the same JSON and runs the same
INSERT (bare_writes.py): the ceiling of the stack, and the reference the target is set on."""

from __future__ import annotations

from ..database import reset
from ..plan import progress
from ..procs import Server
from ..session import Bench
from ..writes import bare_capacity

SCENARIO = "1 POST /object"


async def run(bench: Bench, server: Server, workers: int) -> None:
    await reset(bench.db.url)
    service, raw = await bench.request_pair(server, workers, "object", SCENARIO)
    await reset(bench.db.url)
    bare = await bare_capacity(bench, workers, "object", SCENARIO)
    ratio = service / bare
    bench.results.check(
        "1 POST /object capacity / bare aiohttp + INSERT",
        round(ratio, 3),
        ">= 0.7",
        ratio >= 0.7,
        workers,
    )
    progress(
        f"{SCENARIO} workers={workers}: {service:.0f}/s vs bare aiohttp {bare:.0f}/s = "
        f"{ratio:.2f} (raw asyncpg INSERT {raw:.0f}/s)"
    )
