"""The database goes away and comes back: requests get 503 (never a hang or a 500), open
sockets stay open, and every alert committed meanwhile is delivered once when it is back."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from service.app import create_app
from service.keys import listener_key

from .conftest import app_of, create_alert, create_object, eventually, make_config
from .proxy import FaultyProxy
from .test_inbox import assert_silent, connect, connected, receive

Client = TestClient[Any, Any]


@pytest.fixture
async def proxy(database_url: str) -> AsyncIterator[FaultyProxy]:
    proxy = FaultyProxy(database_url)
    await proxy.start()
    yield proxy
    await proxy.close()


@pytest.fixture
async def proxied_client(aiohttp_client: Any, proxy: FaultyProxy) -> Client:
    config = make_config(
        proxy.url, DB_TIMEOUT="1", LISTEN_RECONNECT_MAX="0.2", LISTEN_PROBE_INTERVAL="0.5"
    )
    client: Client = await aiohttp_client(create_app(config, proxy.url))
    return client


async def test_requests_during_an_outage_get_503_then_recover(
    proxied_client: Client, proxy: FaultyProxy
) -> None:
    client = proxied_client
    obj = await create_object(client)
    proxy.cut()
    for method, path, body in [
        ("POST", "/object", {"email": "a@example.com", "phone_number": "212-555-1234"}),
        ("POST", "/alert", {"text": "x", "object_ids": [obj["id"]]}),
        ("GET", f"/object/{obj['id']}", None),
        ("GET", f"/alert/{obj['id']}", None),
        ("GET", f"/inbox/{obj['id']}", None),
    ]:
        started = time.monotonic()
        response = await client.request(method, path, json=body)
        assert response.status == 503, (path, await response.text())
        error = await response.json()
        assert error["error"] == "database_unavailable"
        assert time.monotonic() - started < 5, "a request hung on the dead database"
    ready = await client.get("/readyz")
    assert ready.status == 503
    assert (await ready.json())["status"] == "unavailable"

    proxy.restore()
    await eventually(lambda: app_of(client)[listener_key].ready, timeout=10)
    assert (await client.get("/readyz")).status == 200
    await create_object(client)  # the service recovered by itself


async def test_alerts_committed_during_an_outage_arrive_once_afterwards(
    proxied_client: Client, proxy: FaultyProxy, db: asyncpg.Connection
) -> None:
    client = proxied_client
    obj = await create_object(client)
    ws = await connect(client, obj["id"])
    await connected(client, obj["id"])
    before = await create_alert(client, text="before", object_ids=[obj["id"]])
    assert (await receive(ws, 1))[0]["id"] == before["id"]

    proxy.cut()
    listener = app_of(client)[listener_key]
    await eventually(lambda: not listener.ready)
    during = []
    for i in range(5):  # committed straight into the database, which the service cannot see
        async with db.transaction():
            alert_id = await db.fetchval(
                "INSERT INTO alerts (text) VALUES ($1) RETURNING id", f"during {i}"
            )
            await db.execute("INSERT INTO object_alerts VALUES ($1, $2)", obj["id"], alert_id)
        during.append(alert_id)
    await assert_silent(ws)

    proxy.restore()
    frames = await receive(ws, len(during), timeout=10)
    assert [f["id"] for f in frames] == during
    after = await create_alert(client, text="after", object_ids=[obj["id"]])
    assert (await receive(ws, 1))[0]["id"] == after["id"]
    await assert_silent(ws)
    assert not ws.closed


async def test_a_silently_dead_listen_connection_is_noticed(
    proxied_client: Client, proxy: FaultyProxy, db: asyncpg.Connection
) -> None:
    """No reset, no error: the network path just stops. The probe notices, the listener
    reconnects, and what was committed meanwhile is delivered."""
    client = proxied_client
    obj = await create_object(client)
    ws = await connect(client, obj["id"])
    await connected(client, obj["id"])
    first = await create_alert(client, object_ids=[obj["id"]])
    assert (await receive(ws, 1))[0]["id"] == first["id"]  # the backlog read is behind us
    listener = app_of(client)[listener_key]
    reconnects = listener.reconnects
    proxy.freeze()
    async with db.transaction():
        alert_id = await db.fetchval("INSERT INTO alerts (text) VALUES ('unheard') RETURNING id")
        await db.execute("INSERT INTO object_alerts VALUES ($1, $2)", obj["id"], alert_id)
    await eventually(lambda: listener.reconnects > reconnects, timeout=10)
    proxy.cut()  # the frozen connections are gone for good
    proxy.restore()
    (frame,) = await receive(ws, 1, timeout=10)
    assert frame["id"] == alert_id
