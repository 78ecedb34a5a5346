"""The write references: a bare aiohttp server that does the writes' database work and nothing
else (no validation, no middleware, no access log, no metrics).

`python -m bench.bare_writes PORT DSN WORKERS` serves, on WORKERS processes sharing the port
(SO_REUSEPORT, as `inbox serve --workers` does):

- POST /object: parse the JSON, run the service's INSERT (sql/insert_object.sql), answer the row;
- POST /alert: parse the JSON and write it as the service does, group-committed: one committer
  per process writes whatever queued while the previous batch committed, with the service's
  own statement (sql/insert_alerts_to_ids.sql). That is the alert's work (filter, count,
  object_alerts, the id lock, one NOTIFY per alert) at the rate HTTP on these cores allows:
  the stack's own ceiling.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import orjson
from aiohttp import web

from service.db import SERVER_SETTINGS, load_queries

from .common import raise_nofile

Q = load_queries()
POOL = web.AppKey("pool", asyncpg.Pool)
QUEUE = web.AppKey("queue", list[tuple[str, list[int], asyncio.Future[dict[str, Any]]]])
WAKE = web.AppKey("wake", asyncio.Event)


def dump(row: Any) -> bytes:
    return orjson.dumps({k: v for k, v in dict(row).items() if k != "misplaced"})


async def post_object(request: web.Request) -> web.Response:
    body = orjson.loads(await request.read())
    row = await request.app[POOL].fetchrow(Q.insert_object, body["email"], body["phone_number"])
    return web.Response(body=dump(row), content_type="application/json")


async def post_alert(request: web.Request) -> web.Response:
    body = orjson.loads(await request.read())
    answer: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
    request.app[QUEUE].append((body["text"], sorted(set(body["object_ids"])), answer))
    request.app[WAKE].set()
    return web.Response(body=orjson.dumps(await answer), content_type="application/json")


async def committer(app: web.Application) -> None:
    queue, wake, pool = app[QUEUE], app[WAKE], app[POOL]
    while True:
        await wake.wait()
        wake.clear()
        while queue:
            batch = queue[:]
            queue.clear()
            owners = [n for n, (_, ids, _) in enumerate(batch, start=1) for _ in ids]
            wanted = [i for _, ids, _ in batch for i in ids]
            rows = await pool.fetch(
                Q.insert_alerts_to_ids, [t for t, _, _ in batch], owners, wanted
            )
            for (_, _, answer), row in zip(batch, rows, strict=True):
                answer.set_result({k: v for k, v in dict(row).items() if k != "misplaced"})


def app_for(dsn: str) -> web.Application:
    async def resources(app: web.Application) -> AsyncIterator[None]:
        app[POOL] = await asyncpg.create_pool(
            dsn, min_size=2, max_size=10, server_settings=SERVER_SETTINGS
        )
        task = asyncio.create_task(committer(app))
        yield
        task.cancel()
        await app[POOL].close()

    app = web.Application()
    app[QUEUE] = []
    app[WAKE] = asyncio.Event()
    app.router.add_post("/object", post_object)
    app.router.add_post("/alert", post_alert)
    app.cleanup_ctx.append(resources)
    return app


def main() -> None:
    raise_nofile()
    port, dsn, workers = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    # The other processes are plain children; they go when this one stops.
    others = [
        subprocess.Popen([sys.executable, "-m", "bench.bare_writes", str(port), dsn, "1"])
        for _ in range(workers - 1)
    ]
    try:
        web.run_app(
            app_for(dsn),
            host="127.0.0.1",
            port=port,
            reuse_port=True,
            access_log=None,
            print=None,
        )
    finally:
        for child in others:
            child.terminate()
        for child in others:
            child.wait(10)


if __name__ == "__main__":
    main()
