"""WS /inbox/{id}: backlog then live, exactly once, in order, for every way an alert is made."""

from __future__ import annotations

import asyncio
import gc
import json
import random
from typing import Any

import asyncpg
import pytest
from aiohttp import ClientWebSocketResponse, WSMsgType, web
from aiohttp.test_utils import TestClient

from bench.loadgen import LeanInbox, Tally
from service.keys import db_key, hub_key, listener_key

from .conftest import app_of, create_alert, create_object, eventually

Client = TestClient[Any, Any]
QUIET = 0.3  # how long "nothing more arrives" is watched for


async def receive(
    ws: ClientWebSocketResponse, count: int, timeout: float = 5.0
) -> list[dict[str, Any]]:
    frames = []
    for _ in range(count):
        msg = await ws.receive(timeout=timeout)
        assert msg.type == WSMsgType.TEXT, msg
        frames.append(json.loads(msg.data))
    return frames


async def assert_silent(ws: ClientWebSocketResponse, timeout: float = QUIET) -> None:
    with pytest.raises(asyncio.TimeoutError):
        await ws.receive(timeout=timeout)


async def connect(client: Client, object_id: int, **query: Any) -> ClientWebSocketResponse:
    ws = await client.ws_connect(
        f"/inbox/{object_id}", params={k: str(v) for k, v in query.items()}
    )
    return ws


async def connected(client: Client, object_id: int, count: int = 1) -> None:
    hub = app_of(client)[hub_key]
    await eventually(lambda: hub.count_for(object_id) >= count)


async def test_backlog_then_live(client: Client) -> None:
    obj = await create_object(client)
    first = await create_alert(client, text="one", object_ids=[obj["id"]])
    second = await create_alert(client, text="two", object_ids=[obj["id"]])
    ws = await connect(client, obj["id"])
    backlog = await receive(ws, 2)
    assert [f["id"] for f in backlog] == [first["id"], second["id"]]
    assert backlog[0] == {k: v for k, v in first.items() if k != "object_ids"}
    third = await create_alert(client, text="three", object_ids=[obj["id"]])
    live = await receive(ws, 1)
    assert live[0]["id"] == third["id"]
    assert live[0]["text"] == "three"
    assert set(live[0]) == {
        "id",
        "text",
        "alert_all",
        "number_of_objects_receiving_alert",
        "created_at",
    }
    await assert_silent(ws)
    await ws.close()


async def test_unknown_object_is_404_before_upgrade(client: Client) -> None:
    response = await client.get("/inbox/424242")
    assert response.status == 404
    assert (await response.json())["error"] == "not_found"
    response = await client.get("/inbox/nope")
    assert response.status == 404


@pytest.mark.parametrize("after", ["-1", "abc", "1.5", "", "99999999999999999999999"])
async def test_malformed_after_is_400_before_upgrade(client: Client, after: str) -> None:
    obj = await create_object(client)
    response = await client.get(f"/inbox/{obj['id']}", params={"after": after})
    assert response.status == 400
    assert (await response.json())["error"] == "malformed_request"


async def test_several_sockets_on_one_object_each_get_everything(client: Client) -> None:
    obj = await create_object(client)
    other = await create_object(client)
    sockets = [await connect(client, obj["id"]) for _ in range(3)]
    bystander = await connect(client, other["id"])
    await connected(client, obj["id"], 3)
    alerts = [await create_alert(client, text=f"n{i}", object_ids=[obj["id"]]) for i in range(5)]
    for ws in sockets:
        assert [f["id"] for f in await receive(ws, 5)] == [a["id"] for a in alerts]
        await assert_silent(ws, 0.05)
    await assert_silent(bystander)


async def test_alert_all_reaches_every_connected_object(client: Client) -> None:
    objects = [await create_object(client) for _ in range(4)]
    sockets = [await connect(client, o["id"]) for o in objects]
    for o in objects:
        await connected(client, o["id"])
    alert = await create_alert(client, alert_all=True)
    for ws in sockets:
        (frame,) = await receive(ws, 1)
        assert frame["id"] == alert["id"]
        assert frame["alert_all"] is True
        assert frame["number_of_objects_receiving_alert"] == 4


async def test_frames_never_carry_other_recipients(client: Client) -> None:
    a, b = await create_object(client), await create_object(client)
    ws = await connect(client, a["id"])
    await connected(client, a["id"])
    await create_alert(client, object_ids=[a["id"], b["id"]])
    (frame,) = await receive(ws, 1)
    assert set(frame) == {
        "id",
        "text",
        "alert_all",
        "number_of_objects_receiving_alert",
        "created_at",
    }


async def test_alert_to_5000_objects_uses_the_marker_and_is_delivered(
    client: Client, db: asyncpg.Connection
) -> None:
    """More recipients than fit a NOTIFY payload: the listener looks them up instead."""
    await db.execute(
        "INSERT INTO objects (email, phone_number) "
        "SELECT 'user' || g || '@example.com', '+12125551234' FROM generate_series(1, 5000) g"
    )
    ids = [r["id"] for r in await db.fetch("SELECT id FROM objects ORDER BY id")]
    watched = [ids[0], ids[2500], ids[-1]]
    sockets = [await connect(client, i) for i in watched]
    for i in watched:
        await connected(client, i)
    notes: asyncio.Queue[str] = asyncio.Queue()
    await db.add_listener("alerts", lambda *args: notes.put_nowait(args[-1]))
    alert = await create_alert(client, object_ids=ids)
    assert alert["number_of_objects_receiving_alert"] == 5000
    payload = json.loads(await asyncio.wait_for(notes.get(), 5))
    assert payload["alert_id"] == alert["id"]
    assert payload["object_ids"] is None
    assert json.loads(payload["frame"]) == {k: v for k, v in alert.items() if k != "object_ids"}
    for ws in sockets:
        (frame,) = await receive(ws, 1)
        assert frame["id"] == alert["id"]


async def test_notification_payload_lists_recipients(
    client: Client, db: asyncpg.Connection
) -> None:
    """What a DBA running LISTEN alerts; sees: one notification per alert, at commit."""
    a, b = await create_object(client), await create_object(client)
    notes: asyncio.Queue[str] = asyncio.Queue()
    await db.add_listener("alerts", lambda *args: notes.put_nowait(args[-1]))
    alert = await create_alert(client, object_ids=[b["id"], a["id"], 999])
    payload = json.loads(await asyncio.wait_for(notes.get(), 5))
    assert payload == {
        "alert_id": alert["id"],
        "object_ids": sorted([a["id"], b["id"]]),
        "frame": payload["frame"],
    }
    # The frame is the very text an inbox receives: byte for byte what its backlog sends.
    (backlog_frame,) = await db.fetch(
        "SELECT alert_frame(a) FROM alerts AS a WHERE a.id = $1", alert["id"]
    )
    assert payload["frame"] == backlog_frame[0]
    assert json.loads(payload["frame"]) == {k: v for k, v in alert.items() if k != "object_ids"}
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(notes.get(), QUIET)  # exactly one per alert, not one per row


def frame_reads(client: Client, monkeypatch: pytest.MonkeyPatch) -> list[list[int]]:
    """The alert ids of each frame query the service's dispatcher makes from now on (the real
    query still runs)."""
    db = app_of(client)[db_key]
    asked: list[list[int]] = []
    read = db.alert_frames

    async def counted(alert_ids: list[int]) -> dict[int, bytes]:
        asked.append(list(alert_ids))
        return await read(alert_ids)

    monkeypatch.setattr(db, "alert_frames", counted)
    return asked


async def test_live_frames_come_from_the_notification_without_a_query(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The dispatcher reads no frame when the notification carries it (migration 0005)."""
    obj = await create_object(client)
    ws = await connect(client, obj["id"])
    await connected(client, obj["id"])
    asked = frame_reads(client, monkeypatch)
    alerts = [await create_alert(client, text=f"n{n}", object_ids=[obj["id"]]) for n in range(3)]
    frames = await receive(ws, 3)
    assert [f["id"] for f in frames] == [a["id"] for a in alerts]
    assert asked == []


async def test_a_frame_too_long_for_the_notification_is_read_and_delivered(
    client: Client, db: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A text that leaves no room for the frame in a NOTIFY payload (8000 bytes): the payload
    lists the recipients alone, and the dispatcher reads the frame."""
    obj = await create_object(client)
    ws = await connect(client, obj["id"])
    await connected(client, obj["id"])
    asked = frame_reads(client, monkeypatch)
    notes: asyncio.Queue[str] = asyncio.Queue()
    await db.add_listener("alerts", lambda *args: notes.put_nowait(args[-1]))
    text = "é" * 3990  # 7,980 bytes of UTF-8: the frame cannot fit beside it
    async with db.transaction():
        alert_id = await db.fetchval(
            "INSERT INTO alerts (text, number_of_objects_receiving_alert) "
            "VALUES ($1, 1) RETURNING id",
            text,
        )
        await db.execute(
            "INSERT INTO object_alerts (object_id, alert_id) VALUES ($1, $2)", obj["id"], alert_id
        )
    payload = json.loads(await asyncio.wait_for(notes.get(), 5))
    assert payload == {"alert_id": alert_id, "object_ids": [obj["id"]]}
    (frame,) = await receive(ws, 1)
    assert (frame["id"], frame["text"]) == (alert_id, text)
    assert asked == [[alert_id]]


async def test_alert_written_by_hand_in_sql_reaches_the_socket(
    client: Client, db: asyncpg.Connection
) -> None:
    obj = await create_object(client)
    ws = await connect(client, obj["id"])
    await connected(client, obj["id"])
    async with db.transaction():
        alert_id = await db.fetchval(
            "INSERT INTO alerts (text, number_of_objects_receiving_alert) "
            "VALUES ('by hand', 1) RETURNING id"
        )
        await db.execute(
            "INSERT INTO object_alerts (object_id, alert_id) VALUES ($1, $2)", obj["id"], alert_id
        )
        # NOTIFY is delivered at COMMIT: nothing may arrive before it.
        await assert_silent(ws, 0.2)
    (frame,) = await receive(ws, 1)
    assert frame["id"] == alert_id
    assert frame["text"] == "by hand"


async def test_rolled_back_alert_is_never_sent(client: Client, db: asyncpg.Connection) -> None:
    obj = await create_object(client)
    ws = await connect(client, obj["id"])
    await connected(client, obj["id"])
    tx = db.transaction()
    await tx.start()
    alert_id = await db.fetchval("INSERT INTO alerts (text) VALUES ('never') RETURNING id")
    await db.execute("INSERT INTO object_alerts VALUES ($1, $2)", obj["id"], alert_id)
    await tx.rollback()
    await assert_silent(ws)
    later = await create_alert(client, object_ids=[obj["id"]])
    (frame,) = await receive(ws, 1)
    assert frame["id"] == later["id"]


async def test_ids_follow_commit_order(database_url: str, client: Client) -> None:
    """A second writer waits for the first to commit before drawing its id (0002's trigger).

    Without the advisory lock the second transaction would get a higher id and commit first,
    and "send everything after id N" would skip the first alert.
    """
    first = await asyncpg.connect(database_url)
    second = await asyncpg.connect(database_url)
    try:
        tx = first.transaction()
        await tx.start()
        first_id = await first.fetchval("INSERT INTO alerts (text) VALUES ('first') RETURNING id")
        blocked = asyncio.ensure_future(
            second.fetchval("INSERT INTO alerts (text) VALUES ('second') RETURNING id")
        )
        done, _ = await asyncio.wait({blocked}, timeout=QUIET)
        assert not done, "the second writer drew an id while the first was uncommitted"
        await tx.commit()
        second_id = await asyncio.wait_for(blocked, 5)
        assert second_id > first_id
    finally:
        await first.close()
        await second.close()


async def test_resume_with_after_skips_what_was_received(client: Client) -> None:
    obj = await create_object(client)
    alerts = [await create_alert(client, text=f"n{i}", object_ids=[obj["id"]]) for i in range(5)]
    ws = await connect(client, obj["id"], after=alerts[2]["id"])
    assert [f["id"] for f in await receive(ws, 2)] == [a["id"] for a in alerts[3:]]
    await assert_silent(ws)


async def test_resume_under_concurrent_writes_is_exactly_once(client: Client) -> None:
    """A client drops and resumes with ?after= while a writer keeps creating alerts."""
    obj = await create_object(client)
    total = 60
    writer_done = asyncio.Event()

    async def writer() -> list[int]:
        ids = []
        for i in range(total):
            ids.append((await create_alert(client, text=f"w{i}", object_ids=[obj["id"]]))["id"])
        writer_done.set()
        return ids

    received: list[int] = []
    writing = asyncio.ensure_future(writer())
    while not (writer_done.is_set() and len(received) == total):
        after = received[-1] if received else 0
        ws = await connect(client, obj["id"], after=after)
        # take a few frames, then drop the connection abruptly
        for _ in range(7):
            try:
                msg = await ws.receive(timeout=1.0 if writer_done.is_set() else 5.0)
            except TimeoutError:
                break
            if msg.type != WSMsgType.TEXT:
                break
            received.append(json.loads(msg.data)["id"])
        await ws.close()
    ids = await writing
    assert received == ids  # every alert, once, in order


async def test_listener_reconnects_and_catches_up(client: Client, db: asyncpg.Connection) -> None:
    """The LISTEN connection is killed repeatedly while alerts keep coming.

    Alerts committed while it is down can only arrive through the catch-up; nothing is lost
    or doubled."""
    obj = await create_object(client)
    ws = await connect(client, obj["id"])
    await connected(client, obj["id"])
    listener = app_of(client)[listener_key]
    sent: list[int] = []
    for round_ in range(5):
        killed = await db.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND query ILIKE 'LISTEN%'"
        )
        assert killed == 1
        for i in range(5):  # written while the listener is down or reconnecting
            sent.append(
                (await create_alert(client, text=f"r{round_}.{i}", object_ids=[obj["id"]]))["id"]
            )
        await eventually(lambda: listener.ready)
    frames = await receive(ws, len(sent))
    assert [f["id"] for f in frames] == sent
    await assert_silent(ws)
    assert listener.reconnects >= 5
    assert listener.recovered > 0, "no alert was committed while the listener was down"


async def test_readiness_reports_a_lost_listener(client: Client, db: asyncpg.Connection) -> None:
    response = await client.get("/readyz")
    assert response.status == 200
    listener = app_of(client)[listener_key]
    await db.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE datname = current_database() AND query ILIKE 'LISTEN%'"
    )
    await eventually(lambda: not listener.ready)
    response = await client.get("/readyz")
    # The listener may already be back; when it is not, readiness must say so.
    if not listener.ready:
        assert response.status == 503
        assert any("listener" in r for r in (await response.json())["reasons"])
    await eventually(lambda: listener.ready)
    assert (await client.get("/readyz")).status == 200


async def test_concurrent_alerts_while_clients_come_and_go(client: Client) -> None:
    """200 alerts posted concurrently; clients connect, drop and resume at random meanwhile.
    Every client ends with every alert for its object exactly once, in id order."""
    rng = random.Random(7)
    objects = [(await create_object(client))["id"] for _ in range(4)]
    plan = [rng.sample(objects, rng.randint(1, 3)) for _ in range(200)]
    expected: dict[int, list[int]] = {o: [] for o in objects}
    posting_done = asyncio.Event()

    async def post(recipients: list[int]) -> None:
        alert = await create_alert(client, object_ids=recipients)
        for o in recipients:
            expected[o].append(alert["id"])

    async def poster() -> None:
        sem = asyncio.Semaphore(20)

        async def one(recipients: list[int]) -> None:
            async with sem:
                await post(recipients)

        await asyncio.gather(*(one(r) for r in plan))
        posting_done.set()

    async def follower(object_id: int, seed: int) -> list[int]:
        r = random.Random(seed)
        got: list[int] = []
        while True:
            ws = await connect(client, object_id, after=got[-1] if got else 0)
            budget = r.randint(1, 30)
            while budget:
                try:
                    msg = await ws.receive(timeout=0.5 if posting_done.is_set() else 5)
                except TimeoutError:
                    break
                assert msg.type == WSMsgType.TEXT
                got.append(json.loads(msg.data)["id"])
                budget -= 1
            await ws.close()
            if posting_done.is_set() and budget:
                return got

    followers = [asyncio.ensure_future(follower(o, i)) for i, o in enumerate(objects * 2)]
    await poster()
    results = await asyncio.gather(*followers)
    for object_id, got in zip(objects * 2, results, strict=True):
        assert got == sorted(expected[object_id]), f"object {object_id}"


async def test_shutdown_closes_sockets_with_going_away(
    aiohttp_client: Any, database_url: str
) -> None:
    from service.app import create_app

    from .conftest import make_config

    client = await aiohttp_client(create_app(make_config(database_url), database_url))
    obj = await create_object(client)
    ws = await connect(client, obj["id"])
    await connected(client, obj["id"])
    await client.server.close()
    msg = await ws.receive(timeout=5)
    assert msg.type == WSMsgType.CLOSE
    assert msg.data == 1001


async def test_frame_and_api_agree_on_timestamps_to_the_microsecond(
    client: Client, db: asyncpg.Connection
) -> None:
    obj = await create_object(client)
    alert = await create_alert(client, object_ids=[obj["id"]])
    # a created_at with trailing zeros in its fraction, and one with none at all
    for stamp in ("2026-01-02 03:04:05.1+00", "2026-01-02 03:04:05+00"):
        await db.execute("UPDATE alerts SET created_at = $1::text::timestamptz", stamp)
        api = await (await client.get(f"/alert/{alert['id']}")).json()
        ws = await connect(client, obj["id"])
        (frame,) = await receive(ws, 1)
        await ws.close()
        assert frame["created_at"] == api["created_at"]
    assert api["created_at"] == "2026-01-02T03:04:05.000000+00:00"


async def test_heartbeat_drops_a_peer_that_stops_answering(make_client: Any) -> None:
    client = await make_client(WS_HEARTBEAT="0.2")
    alive_obj, dead_obj = await create_object(client), await create_object(client)
    alive = await connect(client, alive_obj["id"])
    dead = await client.ws_connect(f"/inbox/{dead_obj['id']}", autoping=False)
    hub = app_of(client)[hub_key]
    await connected(client, alive_obj["id"])
    await connected(client, dead_obj["id"])
    # aiohttp's client answers pings while it reads: keep the live one reading
    reading = asyncio.ensure_future(alive.receive(timeout=10))
    await eventually(lambda: not hub.is_connected(dead_obj["id"]), timeout=5)
    # the peer that answers pings is still there, several heartbeats later
    assert hub.is_connected(alive_obj["id"])
    alert = await create_alert(client, object_ids=[alive_obj["id"]])
    msg = await reading
    assert json.loads(msg.data)["id"] == alert["id"]
    await dead.close()


async def test_pings_come_every_heartbeat_and_a_peer_that_stops_answering_is_dropped(
    make_client: Any,
) -> None:
    client = await make_client(WS_HEARTBEAT="0.2")
    obj = await create_object(client)
    ws = await client.ws_connect(f"/inbox/{obj['id']}", autoping=False)
    hub = app_of(client)[hub_key]
    await connected(client, obj["id"])
    started = asyncio.get_running_loop().time()
    for _ in range(5):  # answered by hand: the socket stays through several heartbeats
        ping = await ws.receive(timeout=5)
        assert (ping.type, ping.data) == (WSMsgType.PING, b"")
        await ws.pong(ping.data)
    assert asyncio.get_running_loop().time() - started >= 0.6  # one ping an interval, no more
    assert hub.is_connected(obj["id"])
    # then silence: gone within two intervals of the last answer
    await eventually(lambda: not hub.is_connected(obj["id"]), timeout=2)
    ended = await ws.receive(timeout=5)
    while ended.type is WSMsgType.PING:
        ended = await ws.receive(timeout=5)
    assert ended.type in {WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.ERROR}


async def test_a_client_ping_is_answered_with_its_payload(make_client: Any) -> None:
    client = await make_client()
    obj = await create_object(client)
    ws = await client.ws_connect(f"/inbox/{obj['id']}", autoping=False)
    await connected(client, obj["id"])
    await ws.ping(b"are you there")
    pong = await ws.receive(timeout=5)
    assert (pong.type, pong.data) == (WSMsgType.PONG, b"are you there")
    await ws.close()


async def test_the_heartbeat_keeps_no_timer_per_socket(make_client: Any) -> None:
    """One task pings every socket: after several heartbeats of 100 sockets the event loop
    holds no timer of a server WebSocket (aiohttp's own heartbeat keeps one or two each)."""
    client = await make_client(WS_HEARTBEAT="0.3")
    objects = [await create_object(client) for _ in range(100)]
    sockets, readers = [], []
    for o in objects:
        sockets.append(await connect(client, o["id"]))
        readers.append(asyncio.ensure_future(sockets[-1].receive(timeout=10)))  # answers pings
    for o in objects:
        await connected(client, o["id"])
    await asyncio.sleep(1.0)
    loop = asyncio.get_running_loop()
    timers = [t for t in loop._scheduled if not t.cancelled()]  # type: ignore[attr-defined]
    owners = [getattr(t._callback, "__self__", None) for t in timers]
    assert not [o for o in owners if isinstance(o, web.WebSocketResponse)]
    assert all(app_of(client)[hub_key].is_connected(o["id"]) for o in objects)
    for reader in readers:
        reader.cancel()
    for ws in sockets:
        await ws.close()


async def test_backlog_query_is_never_served_from_a_generic_plan(
    database_url: str, db: asyncpg.Connection
) -> None:
    """A generic plan made while the tables looked empty scans everything for every page."""
    from service.db import Database, create_pool

    await db.execute("ANALYZE objects; ANALYZE alerts; ANALYZE object_alerts")  # empty stats
    pool = await create_pool(database_url, min_size=1, max_size=1, timeout=5)
    try:
        database = Database(pool, timeout=5)
        for _ in range(10):  # PostgreSQL switches to a generic plan after five executions
            await database.inbox_page(1, 0, 1000)
        async with pool.acquire() as conn:
            generic = await conn.fetchval(
                "SELECT coalesce(sum(generic_plans), 0) FROM pg_prepared_statements "
                "WHERE statement LIKE '%alert_frame(a)%oa.alert_id > $2%' "
                "AND statement NOT LIKE '%pg_prepared_statements%'"
            )
        assert generic == 0
    finally:
        await pool.close()


async def test_sockets_closed_mid_backlog_leave_no_transaction_open(
    client: Client, db: asyncpg.Connection
) -> None:
    """Closing a socket cancels its backlog read; that must never leave a pooled connection
    inside an open transaction (holding locks, so that DDL or TRUNCATE would wait forever)."""
    obj = await create_object(client)
    await db.execute(
        "WITH a AS (INSERT INTO alerts (text) SELECT 'x' FROM generate_series(1, 3000) "
        "RETURNING id) INSERT INTO object_alerts SELECT $1, id FROM a",
        obj["id"],
    )
    for _ in range(100):
        ws = await connect(client, obj["id"])
        await ws.close()  # at once: the sender is somewhere in its first pages
    await eventually(lambda: app_of(client)[hub_key].count_for(obj["id"]) == 0)
    await db.execute("SET lock_timeout = '3s'")
    async with db.transaction():
        await db.execute("LOCK TABLE alerts, object_alerts IN ACCESS EXCLUSIVE MODE")


async def test_a_peer_that_vanishes_leaves_no_cycle_behind(client: Client) -> None:
    """A socket whose peer goes away without a close frame is freed by reference counting as
    its handler returns: nothing of it waits for a full garbage collection (aiohttp keeps the
    exception of the failed close on the response, and its traceback made a cycle of ~50
    objects per socket: service/inbox.py `forget_tracebacks`)."""
    obj = await create_object(client)
    port = client.server.port
    assert port is not None
    path = f"/inbox/{obj['id']}?after=0"
    inboxes = [
        await LeanInbox.open("127.0.0.1", port, path, obj["id"], 0, Tally()) for _ in range(5)
    ]
    await connected(client, obj["id"], 5)
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        for inbox in inboxes:
            assert inbox.transport is not None
            inbox.transport.close()  # a FIN, no close frame
        hub = app_of(client)[hub_key]
        await eventually(lambda: hub.count_for(obj["id"]) == 0)
        await asyncio.sleep(0.1)  # the handlers return
        gc.collect()
        left = [o for o in gc.garbage if isinstance(o, web.WebSocketResponse)]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    assert left == []
