"""1 POST /object: the service's capacity and open-loop latency against a raw asyncpg INSERT."""

from __future__ import annotations

from ..database import reset
from ..plan import progress
from ..procs import Server
from ..session import Bench


async def run(bench: Bench, server: Server, workers: int) -> None:
    await reset(bench.db.url)
    service, reference = await bench.request_pair(server, workers, "object", "1 POST /object")
    ratio = service / reference
    bench.results.check(
        "1 POST /object capacity / raw asyncpg INSERT",
        round(ratio, 3),
        ">= 0.7",
        ratio >= 0.7,
        workers,
    )
    progress(
        f"1 POST /object workers={workers}: {service:.0f}/s vs raw {reference:.0f}/s = {ratio:.2f}"
    )
