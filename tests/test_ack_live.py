"""Read-cursor moves reach open inboxes: every socket of the object, in commit order with its
alerts, also after the LISTEN connection was lost while the cursor moved."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from aiohttp import ClientWebSocketResponse, WSMsgType
from aiohttp.test_utils import TestClient

from service.app import create_app
from service.keys import listener_key

from .conftest import app_of, create_alert, create_object, eventually, make_config
from .proxy import FaultyProxy
from .test_inbox import assert_silent, connect, connected

Client = TestClient[Any, Any]


async def frames(ws: ClientWebSocketResponse, count: int) -> list[dict[str, Any]]:
    got = []
    for _ in range(count):
        msg = await ws.receive(timeout=5)
        assert msg.type == WSMsgType.TEXT, msg
        got.append(json.loads(msg.data))
    return got


async def ack(client: Client, object_id: int, alert_id: int) -> dict[str, Any]:
    response = await client.post(f"/object/{object_id}/ack", json={"alert_id": alert_id})
    assert response.status == 200, await response.text()
    body: dict[str, Any] = await response.json()
    return body


async def unread(client: Client, object_id: int) -> tuple[int, int]:
    body = await (await client.get(f"/object/{object_id}")).json()
    return body["acked_alert_id"], body["unread"]


async def test_an_ack_reaches_every_open_inbox_of_the_object_and_no_other(
    client: Client,
) -> None:
    mine, other = await create_object(client), await create_object(client)
    alerts = [(await create_alert(client, alert_all=True))["id"] for _ in range(3)]
    phone, laptop = await connect(client, mine["id"]), await connect(client, mine["id"])
    stranger = await connect(client, other["id"])
    await connected(client, mine["id"], 2)
    await connected(client, other["id"])
    for ws in (phone, laptop, stranger):
        assert [f["id"] for f in await frames(ws, 3)] == alerts

    await ack(client, mine["id"], alerts[1])
    for ws in (phone, laptop):
        assert await frames(ws, 1) == [{"acked_alert_id": alerts[1], "unread": 1}]
    await assert_silent(stranger)
    assert await unread(client, mine["id"]) == (alerts[1], 1)

    await ack(client, mine["id"], alerts[0])  # does not move: nobody is told
    await assert_silent(phone)
    await assert_silent(laptop)


async def test_acks_and_alerts_reach_a_socket_in_commit_order(client: Client) -> None:
    """The unread count in each ack frame matches the alerts the socket got before it."""
    obj = await create_object(client)
    ws = await connect(client, obj["id"])
    await connected(client, obj["id"])
    sent: list[int] = []
    expected: list[dict[str, Any]] = []
    for round_ in range(6):
        for i in range(round_ % 3 + 1):
            alert = await create_alert(client, text=f"{round_}.{i}", object_ids=[obj["id"]])
            sent.append(alert["id"])
            expected.append({"id": alert["id"]})
        target = sent[-2] if len(sent) > 1 else sent[-1]  # higher every round
        await ack(client, obj["id"], target)
        expected.append({"acked_alert_id": target, "unread": sum(a > target for a in sent)})
    got = await frames(ws, len(expected))
    assert [{"id": f["id"]} if "id" in f else f for f in got] == expected
    await assert_silent(ws)


async def test_racing_acks_tell_the_socket_the_maximum_last(client: Client) -> None:
    obj = await create_object(client)
    ids = [(await create_alert(client, object_ids=[obj["id"]]))["id"] for _ in range(20)]
    ws = await connect(client, obj["id"], after=ids[-1])
    await connected(client, obj["id"])
    await asyncio.gather(*(ack(client, obj["id"], i) for i in reversed(ids)))
    await asyncio.gather(*(ack(client, obj["id"], i) for i in ids))
    told = []
    while True:
        try:
            msg = await ws.receive(timeout=0.5)
        except TimeoutError:
            break
        told.append(json.loads(msg.data))
    assert told, "no ack frame arrived"
    cursors = [f["acked_alert_id"] for f in told]
    assert cursors == sorted(set(cursors))  # each move told once, in the order they committed
    assert told[-1] == {"acked_alert_id": ids[-1], "unread": 0}
    assert await unread(client, obj["id"]) == (ids[-1], 0)


@pytest.fixture
async def listen_proxy(database_url: str) -> AsyncIterator[FaultyProxy]:
    pg = FaultyProxy(database_url)
    await pg.start()
    try:
        yield pg
    finally:
        await pg.close()


async def test_acks_missed_while_not_listening_are_told_after_the_catch_up(
    aiohttp_client: Any, database_url: str, listen_proxy: FaultyProxy, db: asyncpg.Connection
) -> None:
    """Only the LISTEN connection goes through the proxy: while it is cut, the cursor moves
    twice and an alert commits. Once back, the socket gets the alert, then the cursor as it
    stands, once, with the right count."""
    config = make_config(
        database_url, LISTEN_DATABASE_URL=listen_proxy.url, LISTEN_RECONNECT_MAX="0.2"
    )
    client = await aiohttp_client(create_app(config, database_url))
    listener = app_of(client)[listener_key]
    obj = await create_object(client)
    ids = [(await create_alert(client, object_ids=[obj["id"]]))["id"] for _ in range(3)]
    ws = await connect(client, obj["id"])
    await connected(client, obj["id"])
    assert [f["id"] for f in await frames(ws, 3)] == ids

    listen_proxy.cut()
    await eventually(lambda: not listener.ready)
    await ack(client, obj["id"], ids[0])
    await ack(client, obj["id"], ids[1])
    late = (await create_alert(client, object_ids=[obj["id"]]))["id"]
    listen_proxy.restore()
    await eventually(lambda: listener.ready, timeout=15)

    alert, told = await frames(ws, 2)
    assert alert["id"] == late
    assert told == {"acked_alert_id": ids[1], "unread": 2}
    await assert_silent(ws)
    await ack(client, obj["id"], late)
    assert await frames(ws, 1) == [{"acked_alert_id": late, "unread": 0}]
