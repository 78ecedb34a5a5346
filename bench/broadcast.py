"""The fan-out reference: a bare aiohttp WebSocket broadcast server, no database.

`python -m bench.broadcast PORT` serves the two routes the fan-out scenario uses, with the same
shapes as the service: WS /inbox/{object_id} and POST /alert {"text", "object_ids",
"alert_all"}. An alert gets the next id, is encoded once into a frame of the same fields (and so
the same size) as the service's, and is queued to each recipient's socket; one sender task per
socket drains its own queue, so no client waits for another. What it leaves out is what the
service adds: validation, the transaction, NOTIFY, LISTEN and the frame lookup.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import sys
from datetime import UTC, datetime

import orjson
from aiohttp import web

from .common import raise_nofile

SOCKETS = web.AppKey("sockets", dict[int, set[asyncio.Queue[str]]])
IDS = web.AppKey("ids", itertools.count)


async def post_alert(request: web.Request) -> web.Response:
    body = orjson.loads(await request.read())
    sockets = request.app[SOCKETS]
    alert_all = bool(body.get("alert_all"))
    object_ids = list(sockets) if alert_all else list(dict.fromkeys(body["object_ids"]))
    alert = {
        "id": next(request.app[IDS]),
        "text": body["text"],
        "alert_all": alert_all,
        "number_of_objects_receiving_alert": len(object_ids),
        "created_at": datetime.now(UTC).isoformat(),
    }
    frame = orjson.dumps(alert).decode()
    for object_id in object_ids:
        for queue in sockets.get(object_id, ()):
            with contextlib.suppress(asyncio.QueueFull):  # the client sees the gap by id
                queue.put_nowait(frame)
    return web.Response(
        body=orjson.dumps({**alert, "object_ids": None if alert_all else object_ids}),
        content_type="application/json",
    )


async def inbox(request: web.Request) -> web.WebSocketResponse:
    object_id = int(request.match_info["object_id"])
    ws = web.WebSocketResponse(heartbeat=30, max_msg_size=4096)
    await ws.prepare(request)
    queue: asyncio.Queue[str] = asyncio.Queue(maxsize=1024)
    registry = request.app[SOCKETS].setdefault(object_id, set())
    registry.add(queue)

    async def sender() -> None:
        while True:
            await ws.send_str(await queue.get())

    task = asyncio.create_task(sender())
    try:
        async for _msg in ws:
            pass
    finally:
        registry.discard(queue)
        task.cancel()
    return ws


def main() -> None:
    raise_nofile()
    app = web.Application()
    app[SOCKETS] = {}
    app[IDS] = itertools.count(1)
    app.router.add_post("/alert", post_alert)
    app.router.add_get("/inbox/{object_id}", inbox)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)


if __name__ == "__main__":
    main()
