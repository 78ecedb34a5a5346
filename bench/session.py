"""One run's context, handed to every scenario: the plan, the database, the results, the logs,
and the one way to measure: start a load generator, meter CPU while it runs, collect its result.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from .common import CpuMeter, sample, summarize_ms
from .database import BenchDatabase
from .plan import RESULTS, Plan, Results, progress
from .procs import Server, Worker


class Bench:
    def __init__(self, plan: Plan, db: BenchDatabase, results: Results) -> None:
        self.plan = plan
        self.db = db
        self.results = results
        RESULTS.mkdir(parents=True, exist_ok=True)
        self.log = (RESULTS / "workers.log").open("ab")
        self.service_log = (RESULTS / "service.log").open("ab")
        # The bare broadcast reference by K, measured once and compared with every worker count.
        self.bare_fanout: dict[int, dict[str, Any]] = {}

    def meter(self, server: Server | None, workers: Sequence[Worker]) -> CpuMeter:
        return CpuMeter(
            {
                "service": [server.tree] if server else [],
                "postgres": [self.db.pg],
                "loadgen": [w.tree for w in workers],
            }
        )

    async def load(self, which: str, **cfg: Any) -> Worker:
        """A load generator of mode `which` (loadgen.py), set up and waiting for "go"."""
        return await Worker.start(which, self.log, **cfg)

    async def measure(
        self,
        server: Server | None,
        load: Worker,
        *,
        watchers: Sequence[Worker] = (),
        meter: CpuMeter | None = None,
        settle: Callable[[dict[str, Any]], Awaitable[None]] | None = None,
    ) -> tuple[dict[str, Any], dict[str, float]]:
        """Send `load` "go" and collect its result, with CPU metered over the service,
        PostgreSQL, `load` and `watchers` (or `meter`) from just before "go" until the load is
        done and `settle(result)` has waited for its effects (frames reaching the watchers).
        Returns (result, cpu); `load` is closed, the watchers are the caller's to stop."""
        meter = meter or self.meter(server, [load, *watchers])
        try:
            meter.start()
            await load.send("go")
            result = await load.finish()
            if settle is not None:
                await settle(result)
            cpu = meter.stop()
        finally:
            await load.close()
        return result, cpu

    async def requests(
        self,
        server: Server | None,
        *,
        target: str,
        kind: str,
        mode: str,
        rate: float = 0,
        dsn: str = "",
        pool: int = 10,
        recipients: tuple[int, int] = (1, 1),
    ) -> dict[str, Any]:
        worker = await self.load(
            "requests",
            target=target,
            kind=kind,
            mode=mode,
            rate=rate,
            duration=self.plan.phase,
            concurrency=self.plan.concurrency,
            pool=pool,
            dsn=dsn or self.db.url,
            url=server.url if server else "",
            recipients=recipients,
        )
        result, cpu = await self.measure(server, worker)
        lat = result.pop("latencies")
        return {
            "throughput_rps": result["completed"] / result["elapsed"],
            **summarize_ms(lat),
            **cpu,
            "errors": result["errors"],
            "first_error": result["first_error"],
            "_latencies": lat,
        }

    def record(
        self, scenario: str, label: str, workers: int | None, data: dict[str, Any], **extra: Any
    ) -> dict[str, Any]:
        lat = data.pop("_latencies", None)
        if lat is not None:
            who = "" if workers is None else f", {workers} worker{'s' if workers > 1 else ''}"
            self.results.distributions[f"{scenario} | {label}{who}"] = sample(sorted(lat))
        return self.results.figure(
            scenario=scenario, target=label, workers=workers, **data, **extra
        )

    async def request_pair(
        self,
        server: Server,
        workers: int,
        kind: str,
        scenario: str,
        recipients: tuple[int, int] = (1, 1),
    ) -> tuple[float, float]:
        """The service and its raw asyncpg reference, at capacity and then both open-loop at
        half the service's capacity; returns the two capacities."""
        pool = 10 * workers  # the service's pools: DB_POOL_MAX_SIZE per worker
        caps = {}
        for target in ("service", "reference"):
            progress(f"{scenario} workers={workers}: {target} capacity ...")
            data = await self.requests(
                server if target == "service" else None,
                target="http" if target == "service" else "raw",
                kind=kind,
                mode="saturate",
                pool=pool,
                recipients=recipients,
            )
            data.pop("_latencies")
            caps[target] = data["throughput_rps"]
            self.record(
                scenario,
                f"{target} capacity ({self.plan.concurrency} in flight)",
                workers,
                data,
                lost=0,
                duplicated=0,
            )
        rate = round(0.5 * caps["service"], -1) or 10
        for target in ("service", "reference"):
            progress(f"{scenario} workers={workers}: {target} at {rate:.0f}/s open loop ...")
            data = await self.requests(
                server if target == "service" else None,
                target="http" if target == "service" else "raw",
                kind=kind,
                mode="rate",
                rate=rate,
                pool=pool,
                recipients=recipients,
            )
            self.record(scenario, f"{target} at {rate:.0f}/s", workers, data, lost=0, duplicated=0)
        return caps["service"], caps["reference"]
