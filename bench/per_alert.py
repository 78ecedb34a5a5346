"""A measuring aid, not part of `make bench`: the server's CPU per alert without fan-out.

The fan-out scenario's poster (400 alerts at 50/s, one recipient each) against `inbox serve`,
then the bare write server (`bare_writes.py`: aiohttp with the alert's statement, group
committed, and nothing else: no validation, middleware, log line, LISTEN or dispatch), then the
bare broadcast reference, twice each (the service and the broadcast with no inbox open and with
the one recipient's inbox open): what each alert costs besides writing its frames. The bare
write server is the floor of the stack: a POST and its commit, each waking an idle event loop.

    .venv/bin/python -m bench.per_alert
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from .common import CpuMeter, Tree, raise_nofile
from .database import create_database, database_server, drop_database, last_alert_id, reset
from .plan import RESULTS
from .procs import Worker, free_port, serve, service_argv

RATE, SECONDS, OBJECTS = 50.0, 8.0, 1000


async def one(url: str, db_url: str, log: Any, tree: Tree, inbox: bool, name: str) -> None:
    ids = await reset(db_url, OBJECTS) if db_url else list(range(1, OBJECTS + 1))
    after = await last_alert_id(db_url) if db_url else 0
    clients = None
    if inbox:
        clients = await Worker.start("clients", log, url=url, after=after, object_ids=ids[:1])
    await asyncio.sleep(1.0)
    poster = await Worker.start(
        "poster",
        log,
        url=url,
        object_ids=ids[:1] if inbox else ids[1:],
        subset=1,
        all_every=0,
        rate=RATE,
        duration=SECONDS,
    )
    meter = CpuMeter({"server": [tree]})
    meter.start()
    await poster.send("go")
    result = await poster.finish()
    await asyncio.sleep(0.5)  # the last notifications dispatched
    cpu = meter.stop()["cpu_server_s"]
    await poster.close()
    done = result["completed"]
    print(f"{name}: {done} alerts, CPU {cpu:.2f} s = {cpu / done * 1e3:.2f} ms per alert")
    if clients is not None:
        await clients.send("stop")
        await clients.finish()
        await clients.close()


async def amain() -> None:
    raise_nofile()
    log = (RESULTS / "workers.log").open("ab")
    server_log = (RESULTS / "service.log").open("ab")
    with database_server() as (admin_url, _kind):
        db_url = await create_database(admin_url, "per_alert")
        try:
            port = free_port()
            argv = service_argv(1, port)
            with serve(argv, server_log, port, "service", "/readyz", DATABASE_URL=db_url) as s:
                for _ in range(2):
                    await one(s.url, db_url, log, s.tree, False, "service, no inbox open")
                    await one(s.url, db_url, log, s.tree, True, "service, its inbox open")
            port = free_port()
            argv = [sys.executable, "-m", "bench.bare_writes", str(port), db_url, "1"]
            with serve(argv, server_log, port, "bare_writes", "/alert") as floor:
                for _ in range(2):
                    await one(floor.url, db_url, log, floor.tree, False, "bare write server")
            port = free_port()
            argv = [sys.executable, "-m", "bench.broadcast", str(port)]
            with serve(argv, server_log, port, "bare", "/alert") as bare:
                for _ in range(2):
                    await one(bare.url, "", log, bare.tree, False, "bare, no inbox open")
                    await one(bare.url, "", log, bare.tree, True, "bare, its inbox open")
        finally:
            await drop_database(admin_url, db_url)


if __name__ == "__main__":
    asyncio.run(amain())
