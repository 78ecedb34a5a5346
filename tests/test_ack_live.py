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

import service.hub
from service.app import create_app
from service.keys import hub_key, listener_key

from .conftest import app_of, create_alert, create_object, eventually, make_config
from .proxy import FaultyProxy
from .test_inbox import assert_silent, connect, connected
from .test_sse import SSE, EventStream

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


# -- acks sent on the socket, ?after=acked, SSE --------------------------------------------------


async def test_a_websocket_client_acks_by_sending_ack(client: Client) -> None:
    obj = await create_object(client)
    ids = [(await create_alert(client, object_ids=[obj["id"]]))["id"] for _ in range(3)]
    phone, laptop = await connect(client, obj["id"]), await connect(client, obj["id"])
    await connected(client, obj["id"], 2)
    for ws in (phone, laptop):
        await frames(ws, 3)
    await phone.send_str(json.dumps({"ack": ids[1]}))
    for ws in (phone, laptop):  # the sender is told too: one rule for every inbox
        assert await frames(ws, 1) == [{"acked_alert_id": ids[1], "unread": 1}]
    assert await unread(client, obj["id"]) == (ids[1], 1)
    await phone.send_str(json.dumps({"ack": ids[0]}))  # lower: accepted, nothing moves
    await assert_silent(laptop)
    await assert_silent(phone)


@pytest.mark.parametrize(
    ("message", "code"),
    [
        ('{"ack": "1"}', "validation_failed"),
        ('{"ack": null}', "validation_failed"),
        ('{"ack": 0}', "validation_failed"),
        ('{"ack": 1.5}', "validation_failed"),
        ('{"ack": 1, "also": 2}', "validation_failed"),
        ("OTHER", "validation_failed"),  # another object's alert
        ("NONE", "validation_failed"),  # no such alert
    ],
)
async def test_a_bad_socket_ack_gets_an_error_frame_and_the_socket_stays(
    client: Client, message: str, code: str
) -> None:
    obj, other = await create_object(client), await create_object(client)
    mine = (await create_alert(client, object_ids=[obj["id"]]))["id"]
    theirs = (await create_alert(client, object_ids=[other["id"]]))["id"]
    message = {"OTHER": f'{{"ack": {theirs}}}', "NONE": f'{{"ack": {theirs + 50}}}'}.get(
        message, message
    )
    ws = await connect(client, obj["id"])
    await connected(client, obj["id"])
    await frames(ws, 1)
    await ws.send_str(message)
    (error,) = await frames(ws, 1)
    assert error["error"] == code
    assert error["message"]
    assert await unread(client, obj["id"]) == (0, 1)
    await ws.send_str(json.dumps({"ack": mine}))  # still open, and still listening
    assert await frames(ws, 1) == [{"acked_alert_id": mine, "unread": 0}]


@pytest.mark.parametrize("message", ["not json", "[1]", "{}", '{"alert_id": 1}', '"ack"'])
async def test_socket_messages_that_are_not_acks_are_ignored(client: Client, message: str) -> None:
    obj = await create_object(client)
    ws = await connect(client, obj["id"])
    await connected(client, obj["id"])
    await ws.send_str(message)
    await assert_silent(ws)
    assert await unread(client, obj["id"]) == (0, 0)
    alert = await create_alert(client, object_ids=[obj["id"]])
    assert [f["id"] for f in await frames(ws, 1)] == [alert["id"]]


async def test_after_acked_sends_exactly_the_unread_alerts(client: Client) -> None:
    obj = await create_object(client)
    ids = [(await create_alert(client, object_ids=[obj["id"]]))["id"] for _ in range(5)]
    await ack(client, obj["id"], ids[2])
    ws = await connect(client, obj["id"], after="acked")
    assert [f["id"] for f in await frames(ws, 2)] == ids[3:]
    await assert_silent(ws)
    response = await client.get(f"/inbox/{obj['id']}", params={"after": "acked"}, headers=SSE)
    assert response.status == 200
    stream = EventStream(response)
    try:
        assert [f["id"] for f in await stream.alerts(2)] == ids[3:]
    finally:
        stream.close()


@pytest.mark.parametrize("headers", [SSE, {}])
@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        ("/inbox/999?after=acked", 404, "not_found"),
        ("/inbox/1?after=ACKED", 400, "malformed_request"),
        ("/inbox/1?after=acked1", 400, "malformed_request"),
    ],
)
async def test_after_acked_refusals_come_before_any_stream(
    client: Client, path: str, status: int, code: str, headers: dict[str, str]
) -> None:
    await create_object(client)
    response = await client.get(path, headers=headers)
    assert response.status == status
    assert (await response.json())["error"] == code


async def test_an_event_stream_is_told_with_an_ack_event(client: Client) -> None:
    obj = await create_object(client)
    ids = [(await create_alert(client, object_ids=[obj["id"]]))["id"] for _ in range(2)]
    response = await client.get(f"/inbox/{obj['id']}", headers=SSE)
    stream = EventStream(response)
    try:
        assert [f["id"] for f in await stream.alerts(2)] == ids
        await connected(client, obj["id"])
        await ack(client, obj["id"], ids[0])
        event = await stream.next()
        assert event["event"] == "ack"
        assert "id" not in event  # a notice never moves the client's resume point
        assert json.loads(event["data"]) == {"acked_alert_id": ids[0], "unread": 1}
    finally:
        stream.close()


async def test_ack_frames_keep_their_place_among_alert_bursts(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """alert_all bursts written 3 sockets at a time while every object acks what it has:
    each ack frame comes after the alert it acks, and its count is the alerts received
    before it above the cursor."""
    monkeypatch.setattr(service.hub, "BURST", 3)
    monkeypatch.setattr(service.hub, "SLICE", 3)
    objects = [(await create_object(client))["id"] for _ in range(8)]
    sockets = [(oid, await connect(client, oid)) for oid in objects for _ in range(2)]
    for oid in objects:
        await connected(client, oid, 2)
    posted: list[int] = []

    async def post_bursts() -> None:
        for n in range(20):
            posted.append((await create_alert(client, text=f"all {n}", alert_all=True))["id"])

    async def acker(oid: int) -> None:
        for _ in range(20):
            if posted:
                await ack(client, oid, posted[-1])
            await asyncio.sleep(0)

    await asyncio.gather(post_bursts(), *(acker(oid) for oid in objects))
    final = posted[-1]
    for oid in objects:
        await ack(client, oid, final)
    for oid, ws in sockets:
        received: list[int] = []
        while True:
            frame = (await frames(ws, 1))[0]
            if "id" in frame:
                received.append(frame["id"])
                continue
            assert frame["acked_alert_id"] in received, (oid, frame, received)
            cursor = frame["acked_alert_id"]
            assert frame["unread"] == sum(i > cursor for i in received), (oid, frame, received)
            if cursor == final and len(received) == len(posted):
                break
        assert received == posted


async def test_an_ack_published_during_a_burst_follows_the_burst(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hub is told an ack while an alert to everyone is still being written in slices:
    every socket still gets the alert first (the ack counts it)."""
    monkeypatch.setattr(service.hub, "BURST", 3)
    monkeypatch.setattr(service.hub, "SLICE", 3)
    objects = [(await create_object(client))["id"] for _ in range(6)]
    sockets = [(oid, await connect(client, oid)) for oid in objects for _ in range(2)]
    for oid in objects:
        await connected(client, oid, 2)
    hub = app_of(client)[hub_key]
    alert = await create_alert(client, alert_all=True)
    for _, ws in sockets:  # delivered as usual
        assert [f["id"] for f in await frames(ws, 1)] == [alert["id"]]
    # The same frame shape again, as a later alert to everyone, then at once an ack of it.
    later = alert["id"] + 1000
    hub.publish(later, json.dumps({"id": later}).encode(), objects)
    for oid in objects:
        hub.publish_ack(oid, later, 0)
    for _, ws in sockets:
        assert await frames(ws, 2) == [{"id": later}, {"acked_alert_id": later, "unread": 0}]
