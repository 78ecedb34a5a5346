"""The orchestrator behind `make bench`: database, service, scenarios, report.

One run: start a fresh database (the embedded PostgreSQL in `.pgdata-bench/`, or a throwaway
database on the server in DATABASE_URL), migrate it, start `inbox serve` as a subprocess with 1
and then 2 worker processes, drive every scenario (scenarios/) with load generators in their
own processes (loadgen.py), and measure each figure next to its reference in the same run. CPU
seconds of the service, PostgreSQL and the load generators are read with psutil over their
process trees. Results go to `bench/results/` (report.py).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from dataclasses import replace
from pathlib import Path

from . import report
from .common import Tree, raise_nofile
from .database import (
    BenchDatabase,
    create_database,
    database_server,
    drop_database,
    server_facts,
    sql,
)
from .plan import (
    RESULTS,
    SCENARIOS,
    SERVICE_SCENARIOS,
    STANDALONE_SCENARIOS,
    Plan,
    Results,
    machine,
    progress,
)
from .procs import free_port, serve, service_argv
from .scenarios import runner
from .session import Bench


async def per_workers(bench: Bench, workers: int) -> None:
    """Every service scenario against one `inbox serve --workers W`."""
    port = free_port()
    progress(f"starting inbox serve --workers {workers}")
    with serve(
        service_argv(workers, port, bench.plan.profile),
        bench.service_log,
        port,
        "service",
        "/readyz",
        DATABASE_URL=bench.db.url,
    ) as server:
        for name in SERVICE_SCENARIOS:
            if bench.plan.runs(name):
                await runner(name)(bench, server, workers)


async def amain(plan: Plan) -> Path:
    nofile = raise_nofile()
    results = Results(plan)
    results.machine = machine()
    results.machine["rlimit_nofile"] = nofile
    started = time.monotonic()
    with database_server() as (admin_url, kind):
        results.machine["database"] = kind
        url = await create_database(admin_url, "main")
        try:
            pg_pid, max_conn = await server_facts(url)
            results.machine["postgres_version"] = (await sql(url, "SHOW server_version"))[0][0]
            bench = Bench(plan, BenchDatabase(admin_url, url, Tree(pg_pid), max_conn), results)
            if plan.only & set(SERVICE_SCENARIOS):
                for workers in plan.workers:
                    await per_workers(bench, workers)
            for name in STANDALONE_SCENARIOS:
                if plan.runs(name):
                    await runner(name)(bench)
        finally:
            await drop_database(admin_url, url)
    results.machine["load_avg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    results.machine["wall_seconds"] = round(time.monotonic() - started, 1)
    path = report.write(results, RESULTS)
    progress(f"done in {results.machine['wall_seconds']:.0f} s: {path}")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a smoke run of under two minutes")
    parser.add_argument(
        "--only",
        default=",".join(sorted(SCENARIOS)),
        help=f"comma-separated subset of {', '.join(sorted(SCENARIOS))} (default: all)",
    )
    parser.add_argument(
        "--profile", action="store_true", help="record the service with py-spy (raw stacks)"
    )
    parser.add_argument("--workers", default="1,2", help="worker counts to serve with (1,2)")
    args = parser.parse_args(argv)
    only = frozenset(args.only.split(","))
    if only - SCENARIOS:
        parser.error(f"unknown scenario(s): {', '.join(sorted(only - SCENARIOS))}")
    workers = tuple(int(w) for w in args.workers.split(","))
    plan = replace(Plan.make(args.quick, only, workers), profile=args.profile)
    print(asyncio.run(amain(plan)))
    return 0
