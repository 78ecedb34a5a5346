"""2 POST /alert to 10 recipients: the service against the same raw transaction, whose
NOTIFY serialises commits (the ceiling the service can reach)."""

from __future__ import annotations

from ..database import reset
from ..plan import progress
from ..procs import Server
from ..session import Bench


async def run(bench: Bench, server: Server, workers: int) -> None:
    ids = await reset(bench.db.url, 1_000)
    span = (ids[0], ids[-1])
    service, reference = await bench.request_pair(
        server, workers, "alert", "2 POST /alert (10 recipients)", recipients=span
    )
    ratio = service / reference
    bench.results.check(
        "2 POST /alert capacity / NOTIFY-serialised ceiling (raw tx)",
        round(ratio, 3),
        ">= 0.9",
        ratio >= 0.9,
        workers,
    )
    progress(
        f"2 POST /alert workers={workers}: {service:.0f}/s vs raw {reference:.0f}/s = {ratio:.2f}"
    )
