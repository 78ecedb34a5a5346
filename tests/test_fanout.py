"""Prepared frames written straight to transports: order, bursts in slices, heartbeats and
closes between whole frames, acks (hub.py, frames.py)."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import struct
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

import service.hub
from service.frames import Prepared, http_chunk, sse_event, ws_text_frame
from service.inbox import close_all_inboxes
from service.keys import hub_key
from service.wire import CLOSE_GOING_AWAY

from .conftest import app_of, create_alert, create_object, eventually
from .test_inbox import connect, connected, receive
from .test_ws_hardening import RawSocket

Client = TestClient[Any, Any]


def test_frames_are_whole_and_unmasked() -> None:
    for size in (0, 125, 126, 65535, 65536):
        frame = ws_text_frame(b"x" * size)
        assert frame[0] == 0x81  # FIN, text, no RSV bits
        assert frame[1] & 0x80 == 0  # a server frame is not masked
        assert frame.endswith(b"x" * size)
        assert len(frame) == size + (2 if size < 126 else 4 if size < 65536 else 10)
    assert sse_event(b'{"a":1}', event_id=7) == b'id: 7\ndata: {"a":1}\n\n'
    assert sse_event(b"x\ny", event=b"ack") == b"event: ack\ndata: x\ndata: y\n\n"
    assert http_chunk(b"abc") == b"3\r\nabc\r\n"
    prepared = Prepared(3, b"{}")
    assert prepared.ws is prepared.ws  # built once, shared by every recipient
    assert prepared.sse_chunk is prepared.sse_chunk


async def test_a_burst_in_slices_keeps_every_stream_in_order(
    client: Client, monkeypatch: pytest.MonkeyPatch, db: asyncpg.Connection
) -> None:
    """alert_all bursts written 3 sockets at a time while small alerts commit meanwhile:
    every socket gets every alert of its object once, in id order."""
    monkeypatch.setattr(service.hub, "BURST", 3)
    monkeypatch.setattr(service.hub, "SLICE", 3)
    objects = [await create_object(client) for _ in range(8)]
    sockets = [await connect(client, obj["id"]) for obj in objects for _ in range(2)]
    for obj in objects:
        await connected(client, obj["id"], 2)

    async def post_bursts() -> None:
        for n in range(15):
            await create_alert(client, text=f"all {n}", alert_all=True)

    async def post_small(obj: dict[str, Any]) -> None:
        for n in range(15):
            await create_alert(client, text=f"small {n}", object_ids=[obj["id"]])

    await asyncio.gather(post_bursts(), *(post_small(o) for o in objects[:3]))
    for index, ws in enumerate(sockets):
        object_id = objects[index // 2]["id"]
        expected = [
            r["alert_id"]
            for r in await db.fetch(
                "SELECT alert_id FROM object_alerts WHERE object_id = $1 ORDER BY 1", object_id
            )
        ]
        got = [f["id"] for f in await receive(ws, len(expected))]
        assert got == expected
    # Each burst's span (NOTIFY to its last frame) is measured once: 15 alerts to everyone.
    assert sum(app_of(client)[hub_key].meter.burst_counts) == 15
    for ws in sockets:
        await ws.close()


class Transport:
    """What a session writes to: every write kept, never backed up."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def set_write_buffer_limits(self, high: int, low: int) -> None:
        pass

    def is_closing(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return 0

    def write(self, data: bytes) -> None:
        self.writes.append(data)


async def test_frames_written_beside_a_burst_are_timed_apart(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An alert published while a burst is being written goes ahead of the burst's rest, and
    its frames' latency is counted in a histogram of their own (the bench reads it) as well as
    in the one of every frame; the burst's own frames are not."""
    monkeypatch.setattr(service.hub, "BURST", 3)
    monkeypatch.setattr(service.hub, "SLICE", 3)
    hub = service.hub.Hub()
    transports = {}
    for object_id in range(1, 9):
        session = service.hub.Session(object_id, 0, 100, lambda _s: None)
        transports[object_id] = transport = Transport()
        session.attach(transport, asyncio.sleep)  # type: ignore[arg-type]
        session.start_live(0)
        hub.add(session)

    def beside() -> int:
        return sum(hub.meter.beside_counts)

    hub.meter.notified(1)
    assert hub.publish(1, b"all", range(1, 9)) == 8  # 3 now, the rest in slices
    assert beside() == 0
    hub.meter.notified(2)
    hub.publish(2, b"small", [7, 8])  # the burst's frame first, then its own
    assert transports[8].writes == [ws_text_frame(b"all"), ws_text_frame(b"small")]
    assert beside() == 2
    await eventually(lambda: all(len(t.writes) >= 1 for t in transports.values()))
    hub.meter.notified(3)
    hub.publish(3, b"later", [1])  # no burst in progress any more
    assert beside() == 2
    assert sum(hub.meter.latency_counts) == 8 + 2 + 1
    await hub.stop()


async def test_frames_interleave_with_heartbeats_and_a_close_whole(make_client: Any) -> None:
    """A raw client parses every byte: pings every 20 ms among a burst of alerts, then the
    server's close frame; every frame is whole, ids increase, nothing follows the close."""
    client = await make_client(WS_HEARTBEAT="0.02", ALERT_TEXT_MAX_LENGTH="20000")
    app = app_of(client)
    obj = await create_object(client)
    raw = await RawSocket.open(client.server.host, client.server.port, f"/inbox/{obj['id']}")
    await connected(client, obj["id"])
    ids: list[int] = []
    pings = 0
    close_code: int | None = None

    async def read() -> None:
        nonlocal pings, close_code
        while True:
            opcode, payload = await raw.frame()
            assert close_code is None, "a frame after the close frame"
            if opcode == 0x1:
                ids.append(json.loads(payload)["id"])
            elif opcode == 0x9:
                pings += 1
                # Answer, masked as a client must, so the heartbeat keeps the socket open.
                mask = os.urandom(4)
                body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
                raw.writer.write(struct.pack("!BB", 0x8A, 0x80 | len(payload)) + mask + body)
            elif opcode == 0x8:
                close_code = struct.unpack("!H", payload[:2])[0]
                return
            else:
                raise AssertionError(f"unexpected opcode {opcode}")

    reading = asyncio.create_task(read())
    posted = []
    for n in range(60):
        # Sizes across the 7-bit, 16-bit and 64-bit length forms.
        text = "y" * (10 if n % 3 == 0 else 300 if n % 3 == 1 else 17000)
        posted.append((await create_alert(client, text=text, object_ids=[obj["id"]]))["id"])
        if n % 10 == 0:
            await asyncio.sleep(0.03)  # let a ping or two go out among the frames
    await eventually(lambda: len(ids) == len(posted))
    await close_all_inboxes(app)
    await asyncio.wait_for(reading, 5)
    raw.close()
    assert ids == posted
    assert pings > 0
    assert close_code == CLOSE_GOING_AWAY


async def test_publish_ack_reaches_every_open_inbox_of_the_object(client: Client) -> None:
    """A notice, not an alert: delivered even when its id is below what the socket has seen,
    and only to that object's inboxes."""
    obj, other = await create_object(client), await create_object(client)
    alerts = [await create_alert(client, object_ids=[obj["id"]]) for _ in range(3)]
    first, second = await connect(client, obj["id"]), await connect(client, obj["id"])
    bystander = await connect(client, other["id"])
    await connected(client, obj["id"], 2)
    await connected(client, other["id"])
    for ws in (first, second):
        assert [f["id"] for f in await receive(ws, 3)] == [a["id"] for a in alerts]
    hub = app_of(client)[hub_key]
    hub.publish_ack(obj["id"], alerts[0]["id"], 2)
    hub.publish_ack(obj["id"], alerts[0]["id"], 2)  # repeated: not de-duplicated either
    for ws in (first, second):
        assert await receive(ws, 2) == [{"acked_alert_id": alerts[0]["id"], "unread": 2}] * 2
    later = await create_alert(client, object_ids=[obj["id"]])
    assert [f["id"] for f in await receive(first, 1)] == [later["id"]]
    with pytest.raises(asyncio.TimeoutError):
        await bystander.receive(timeout=0.3)
    for ws in (first, second, bystander):
        await ws.close()


async def test_backlog_and_live_stay_in_order_under_a_concurrent_burst(
    make_client: Any, db: asyncpg.Connection
) -> None:
    """Sockets connect with a backlog of several pages while alerts commit as fast as they
    can: each receives the object's alerts once, in order."""
    client = await make_client(WS_QUEUE_SIZE="50")  # pages of 50: the backlog is many pages
    obj = await create_object(client)
    for _ in range(120):
        await create_alert(client, object_ids=[obj["id"]])
    stop = asyncio.Event()

    async def keep_posting() -> None:
        while not stop.is_set():
            await create_alert(client, object_ids=[obj["id"]])

    posters = [asyncio.create_task(keep_posting()) for _ in range(3)]
    sockets = []
    for _ in range(4):
        sockets.append(await connect(client, obj["id"]))
        await asyncio.sleep(0.02)
    stop.set()
    await asyncio.gather(*posters)
    expected = [
        r["alert_id"]
        for r in await db.fetch(
            "SELECT alert_id FROM object_alerts WHERE object_id = $1 ORDER BY 1", obj["id"]
        )
    ]
    for ws in sockets:
        assert [f["id"] for f in await receive(ws, len(expected))] == expected
        with pytest.raises(asyncio.TimeoutError):
            await ws.receive(timeout=0.2)
        await ws.close()


async def test_a_backed_up_socket_queues_and_catches_up_in_order(make_client: Any) -> None:
    """A client that pauses reading: its frames queue (the transport is past its mark), a
    drain task writes them once it reads again; nothing lost, nothing reordered, and a
    socket that keeps up is written to directly all along."""
    client = await make_client(ALERT_TEXT_MAX_LENGTH="20000")
    app = app_of(client)
    obj = await create_object(client)
    raw = await RawSocket.open(client.server.host, client.server.port, f"/inbox/{obj['id']}")
    reader = await connect(client, obj["id"])
    await connected(client, obj["id"], 2)
    sessions = app[hub_key].sessions()
    posted = []
    for _ in range(200):
        posted.append((await create_alert(client, text="q" * 20000, object_ids=[obj["id"]]))["id"])
        assert [f["id"] for f in await receive(reader, 1)] == posted[-1:]
        if any(s.queue for s in sessions):
            break
    assert any(s.queue for s in sessions), "the paused client never backed up"
    for _ in range(5):  # more while it is backed up: they queue behind
        posted.append((await create_alert(client, text="after", object_ids=[obj["id"]]))["id"])
        assert [f["id"] for f in await receive(reader, 1)] == posted[-1:]
    got = []
    while len(got) < len(posted):
        opcode, payload = await asyncio.wait_for(raw.frame(), 5)
        if opcode == 0x1:
            got.append(json.loads(payload)["id"])
    assert got == posted
    assert not any(s.queue for s in sessions)
    assert not any(s.overflowed for s in sessions)
    raw.close()
    await reader.close()


async def test_up_to_date_clients_connecting_during_a_burst_miss_nothing(
    client: Client, db: asyncpg.Connection
) -> None:
    """A client resuming from the newest id it knows skips the backlog query when nothing
    newer has been heard of; alerts committing around its connect still reach it once."""
    obj = await create_object(client)
    await create_alert(client, object_ids=[obj["id"]])
    stop = asyncio.Event()

    async def keep_posting() -> None:
        while not stop.is_set():
            await create_alert(client, object_ids=[obj["id"]])

    posters = [asyncio.create_task(keep_posting()) for _ in range(3)]
    sockets = []
    try:
        for _ in range(12):
            after = await db.fetchval("SELECT max(id) FROM alerts")
            sockets.append((after, await connect(client, obj["id"], after=after)))
    finally:
        stop.set()
        await asyncio.gather(*posters)
    every = [
        r["alert_id"]
        for r in await db.fetch(
            "SELECT alert_id FROM object_alerts WHERE object_id = $1 ORDER BY 1", obj["id"]
        )
    ]
    for after, ws in sockets:
        expected = [i for i in every if i > after]
        assert [f["id"] for f in await receive(ws, len(expected))] == expected
        with pytest.raises(asyncio.TimeoutError):
            await ws.receive(timeout=0.1)
        await ws.close()


async def test_a_wave_of_sockets_is_frozen_and_thawed_once_half_of_it_ended(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As a wave of connections comes, the objects alive are kept out of full garbage
    collections (gc.freeze, every FREEZE_AFTER sessions); once half as many sessions as were
    open have ended, they are thawed so the cycles of the ended ones can be collected.
    Delivery is not affected."""
    monkeypatch.setattr(service.hub, "FREEZE_AFTER", 3)
    assert gc.get_freeze_count() == 0
    obj = await create_object(client)
    sockets = [await connect(client, obj["id"]) for _ in range(2)]
    await connected(client, obj["id"], 2)
    assert gc.get_freeze_count() == 0  # 2 sessions: not yet
    sockets.append(await connect(client, obj["id"]))
    await connected(client, obj["id"], 3)
    assert gc.get_freeze_count() > 0  # the 3rd: frozen at once, with no pause to wait for
    sockets += [await connect(client, obj["id"]) for _ in range(3)]
    await connected(client, obj["id"], 6)  # the 6th: frozen again, 6 open
    for ws in sockets[:2]:
        await ws.close()
    await eventually(lambda: app_of(client)[hub_key].count_for(obj["id"]) == 4)
    await asyncio.sleep(0.1)
    assert gc.get_freeze_count() > 0  # 2 of the 6 ended: still frozen
    await sockets[2].close()
    await eventually(lambda: gc.get_freeze_count() == 0)  # 3 of the 6: thawed
    alert = await create_alert(client, object_ids=[obj["id"]])
    for ws in sockets[3:]:
        assert [f["id"] for f in await receive(ws, 1)] == [alert["id"]]
        await ws.close()


async def test_a_hub_that_stops_thaws_what_it_froze(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service.hub, "FREEZE_AFTER", 2)
    obj = await create_object(client)
    sockets = [await connect(client, obj["id"]) for _ in range(3)]
    await connected(client, obj["id"], 3)
    await eventually(lambda: gc.get_freeze_count() > 0)
    await close_all_inboxes(app_of(client))
    assert gc.get_freeze_count() == 0
    for ws in sockets:
        await ws.close()
