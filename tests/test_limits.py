"""Limits not covered elsewhere: chunked bodies over MAX_BODY_BYTES, and the health figures
the soak test reads."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import asyncpg
from aiohttp.test_utils import TestClient

from service.keys import sockets_key

from .conftest import app_of, create_object, eventually

Client = TestClient[Any, Any]


async def test_chunked_body_over_the_limit_is_413(make_client: Any, db: asyncpg.Connection) -> None:
    """No Content-Length to check up front: the limit holds while the body streams in."""
    client = await make_client(MAX_BODY_BYTES="1000")

    async def body() -> AsyncIterator[bytes]:
        yield b'{"text": "'
        for _ in range(20):
            yield b"x" * 100
        yield b'", "alert_all": true}'

    response = await client.post(
        "/alert", data=body(), headers={"Content-Type": "application/json"}
    )
    assert response.status == 413
    assert (await response.json())["error"] == "payload_too_large"
    assert await db.fetchval("SELECT count(*) FROM alerts") == 0


async def test_healthz_reports_tasks_and_sockets(client: Client) -> None:
    idle = await (await client.get("/healthz")).json()
    assert idle["status"] == "ok"
    assert idle["sockets"] == 0
    assert isinstance(idle["tasks"], int)
    obj = await create_object(client)
    ws = await client.ws_connect(f"/inbox/{obj['id']}")
    busy = await (await client.get("/healthz")).json()
    assert busy["sockets"] == 1
    assert busy["tasks"] > idle["tasks"]  # the handler and its sender, reader and watchdog
    await ws.close()
    await eventually(lambda: not app_of(client)[sockets_key])
    # The handler task finishes just after its socket is unregistered.
    for _ in range(100):
        after = await (await client.get("/healthz")).json()
        if after["tasks"] == idle["tasks"]:
            break
    assert after == idle
