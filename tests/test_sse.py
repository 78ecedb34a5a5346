"""GET /inbox/{id} as Server-Sent Events: the same inbox, hub and guarantees as the WebSocket."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp.test_utils import TestClient

import service.inbox
import service.wire
from service.inbox import close_all_inboxes
from service.keys import hub_key

from .conftest import (
    app_of,
    assert_cycles_leave_nothing,
    create_alert,
    create_object,
    eventually,
)
from .test_inbox import connect, connected, receive

Client = TestClient[Any, Any]
SSE = {"Accept": "text/event-stream"}


class EventStream:
    """A minimal EventSource: parses the stream line by line as the HTML standard says."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response
        self.retry: int | None = None
        self.comments = 0

    async def next(self, timeout: float = 5.0) -> dict[str, Any]:
        event: dict[str, Any] = {}
        data: list[str] = []
        async with asyncio.timeout(timeout):
            while True:
                raw = await self.response.content.readline()
                if not raw:
                    raise EOFError("the stream ended")
                line = raw.decode().rstrip("\r\n")
                if not line:
                    if data:
                        event["data"] = "\n".join(data)
                        return event
                    continue
                if line.startswith(":"):
                    self.comments += 1
                    continue
                name, _, value = line.partition(":")
                value = value.removeprefix(" ")
                if name == "data":
                    data.append(value)
                elif name == "retry":
                    self.retry = int(value)
                else:
                    event[name] = value

    async def alerts(self, count: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        frames = []
        for _ in range(count):
            event = await self.next(timeout)
            assert "event" not in event, event
            frame = json.loads(event["data"])
            assert event["id"] == str(frame["id"])
            frames.append(frame)
        return frames

    async def assert_silent(self, timeout: float = 0.3) -> None:
        with pytest.raises(TimeoutError):
            await self.next(timeout)

    def close(self) -> None:
        self.response.close()


async def open_stream(
    client: Client, object_id: int, headers: dict[str, str] | None = None, **query: Any
) -> EventStream:
    response = await client.get(
        f"/inbox/{object_id}",
        params={k: str(v) for k, v in query.items()},
        headers={**SSE, **(headers or {})},
    )
    assert response.status == 200, await response.text()
    assert response.headers["Content-Type"].startswith("text/event-stream")
    assert response.headers["Cache-Control"] == "no-cache"
    return EventStream(response)


async def inbox_ids(db: asyncpg.Connection, object_id: int) -> list[int]:
    rows = await db.fetch(
        "SELECT alert_id FROM object_alerts WHERE object_id = $1 ORDER BY 1", object_id
    )
    return [r["alert_id"] for r in rows]


async def test_backlog_then_live_exactly_once_in_order(client: Client) -> None:
    obj = await create_object(client)
    first = await create_alert(client, text="one", object_ids=[obj["id"]])
    second = await create_alert(client, text="two", object_ids=[obj["id"]])
    ws = await connect(client, obj["id"])
    stream = await open_stream(client, obj["id"])
    backlog = await stream.alerts(2)
    assert [f["id"] for f in backlog] == [first["id"], second["id"]]
    assert backlog == await receive(ws, 2)  # the same JSON as the WebSocket frames
    assert stream.retry == service.wire.SSE_RETRY_MS
    third = await create_alert(client, text="three", object_ids=[obj["id"]])
    assert [f["id"] for f in await stream.alerts(1)] == [third["id"]]
    await stream.assert_silent()
    stream.close()
    await ws.close()


async def test_after_and_last_event_id_resume(client: Client) -> None:
    obj = await create_object(client)
    alerts = [await create_alert(client, object_ids=[obj["id"]]) for _ in range(4)]
    stream = await open_stream(client, obj["id"], after=alerts[1]["id"])
    assert [f["id"] for f in await stream.alerts(2)] == [a["id"] for a in alerts[2:]]
    stream.close()
    # An EventSource reconnects to the URL it was opened with, plus Last-Event-ID: that wins.
    stream = await open_stream(
        client, obj["id"], headers={"Last-Event-ID": str(alerts[2]["id"])}, after=0
    )
    assert [f["id"] for f in await stream.alerts(1)] == [alerts[3]["id"]]
    await stream.assert_silent()
    stream.close()


async def test_a_stream_cut_mid_burst_resumes_without_gap_or_repeat(
    client: Client, db: asyncpg.Connection
) -> None:
    """Alerts keep committing while the stream is cut and while it reconnects."""
    obj = await create_object(client)
    for _ in range(30):
        await create_alert(client, object_ids=[obj["id"]])
    stop = asyncio.Event()

    async def keep_posting() -> None:
        while not stop.is_set():
            await create_alert(client, object_ids=[obj["id"]])

    posters = [asyncio.create_task(keep_posting()) for _ in range(2)]
    received: list[int] = []
    try:
        for cut_after in (5, 40, 25):
            stream = await open_stream(
                client,
                obj["id"],
                headers={"Last-Event-ID": str(received[-1])} if received else None,
            )
            received += [f["id"] for f in await stream.alerts(cut_after)]
            stream.close()  # cut mid-burst: posting goes on meanwhile
    finally:
        stop.set()
        await asyncio.gather(*posters)
    stream = await open_stream(client, obj["id"], headers={"Last-Event-ID": str(received[-1])})
    expected = await inbox_ids(db, obj["id"])
    received += [f["id"] for f in await stream.alerts(len(expected) - len(received))]
    await stream.assert_silent()
    stream.close()
    assert received == expected


@pytest.mark.parametrize(
    ("query", "headers"),
    [
        ({"after": "-1"}, {}),
        ({"after": "abc"}, {}),
        ({}, {"Last-Event-ID": "abc"}),
        ({}, {"Last-Event-ID": ""}),
        ({}, {"Last-Event-ID": "-3"}),
        ({}, {"Last-Event-ID": str(2**63)}),
        ({"after": "x"}, {"Last-Event-ID": "5"}),
    ],
)
async def test_malformed_resume_point_is_400_before_the_stream(
    client: Client, query: dict[str, str], headers: dict[str, str]
) -> None:
    obj = await create_object(client)
    response = await client.get(f"/inbox/{obj['id']}", params=query, headers={**SSE, **headers})
    assert response.status == 400
    assert response.content_type == "application/json"
    body = await response.json()
    assert body["error"] == "malformed_request"
    assert set(body) == {"error", "message"}
    assert len(app_of(client)[hub_key]) == 0


async def test_unknown_object_is_404_before_the_stream(client: Client) -> None:
    for path in ("/inbox/424242", "/inbox/nope"):
        response = await client.get(path, headers=SSE)
        assert response.status == 404
        assert response.content_type == "application/json"
        assert (await response.json())["error"] == "not_found"


async def test_token_and_origin_are_checked_before_the_stream(make_client: Any) -> None:
    client = await make_client(INBOX_SECRET="s" * 32, ALLOWED_ORIGINS="https://app.example")
    obj = await create_object(client)
    response = await client.get(f"/inbox/{obj['id']}", headers=SSE)
    assert response.status == 401
    assert (await response.json())["error"] == "unauthorized"
    response = await client.get(f"/inbox/{obj['id']}", params={"token": "nope"}, headers=SSE)
    assert response.status == 403
    token = obj["inbox_token"]
    response = await client.get(
        f"/inbox/{obj['id']}",
        params={"token": token},
        headers={**SSE, "Origin": "https://evil.example"},
    )
    assert response.status == 403
    stream = await open_stream(client, obj["id"], token=token)
    alert = await create_alert(client, object_ids=[obj["id"]])
    assert [f["id"] for f in await stream.alerts(1)] == [alert["id"]]
    stream.close()


async def test_streams_and_sockets_share_the_limits(make_client: Any) -> None:
    client = await make_client(WS_MAX_PER_OBJECT="2")
    obj = await create_object(client)
    stream = await open_stream(client, obj["id"])
    ws = await connect(client, obj["id"])
    await connected(client, obj["id"], 2)
    response = await client.get(f"/inbox/{obj['id']}", headers=SSE)
    assert response.status == 429
    assert (await response.json())["error"] == "too_many_sockets"
    stream.close()
    await ws.close()


async def test_acks_are_named_events_without_an_id(client: Client) -> None:
    obj = await create_object(client)
    alert = await create_alert(client, object_ids=[obj["id"]])
    stream = await open_stream(client, obj["id"])
    await stream.alerts(1)
    app_of(client)[hub_key].publish_ack(obj["id"], alert["id"], 0)
    event = await stream.next()
    assert event == {
        "event": "ack",
        "data": json.dumps({"acked_alert_id": alert["id"], "unread": 0}).replace(" ", ""),
    }
    stream.close()


async def test_keep_alive_comments_and_a_vanished_client_is_let_go(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service.inbox, "SSE_KEEPALIVE_INTERVAL", 0.05)
    obj = await create_object(client)
    stream = await open_stream(client, obj["id"])
    await connected(client, obj["id"])
    await stream.assert_silent(0.3)  # no event, but comments
    assert stream.comments >= 2
    stream.close()
    hub = app_of(client)[hub_key]
    await eventually(lambda: not hub.is_connected(obj["id"]))


async def test_shutdown_ends_streams(client: Client) -> None:
    obj = await create_object(client)
    stream = await open_stream(client, obj["id"])
    await connected(client, obj["id"])
    await close_all_inboxes(app_of(client))
    with pytest.raises(EOFError):
        await stream.next()
    await eventually(lambda: len(app_of(client)[hub_key]) == 0)


async def test_a_stream_that_stops_reading_is_ended_and_others_get_everything(
    make_client: Any,
) -> None:
    client = await make_client(WS_QUEUE_SIZE="4", ALERT_TEXT_MAX_LENGTH="100000")
    app = app_of(client)
    obj = await create_object(client)
    reader, writer = await asyncio.open_connection(
        client.server.host, client.server.port, limit=2**20
    )
    reader._transport.pause_reading()  # type: ignore[attr-defined]  # a client that never reads
    writer.write(
        f"GET /inbox/{obj['id']} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n".encode()
    )
    stream = await open_stream(client, obj["id"])
    await connected(client, obj["id"], 2)
    sessions = app[hub_key].sessions()
    posted: list[int] = []
    for _ in range(300):
        posted.append(
            (await create_alert(client, text="z" * 100_000, object_ids=[obj["id"]]))["id"]
        )
        assert [f["id"] for f in await stream.alerts(1)] == posted[-1:]
        if any(s.overflowed for s in sessions):
            break
    assert [s.overflowed for s in sessions].count(True) == 1, "the slow stream was never ended"
    await eventually(lambda: app[hub_key].count_for(obj["id"]) == 1)
    later = await create_alert(client, text="after", object_ids=[obj["id"]])
    assert [f["id"] for f in await stream.alerts(1)] == [later["id"]]
    writer.transport.abort()
    stream.close()


async def test_http_1_0_gets_bare_events_ended_by_the_close(client: Client) -> None:
    obj = await create_object(client)
    alert = await create_alert(client, object_ids=[obj["id"]])
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    writer.write(f"GET /inbox/{obj['id']} HTTP/1.0\r\nAccept: text/event-stream\r\n\r\n".encode())
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.0 200")
    assert b"chunked" not in head.lower()
    body = await asyncio.wait_for(reader.readuntil(b"\n\n" + b"id: "), 5)
    assert body == b"retry: %d\n\nid: " % service.wire.SSE_RETRY_MS
    line = await asyncio.wait_for(reader.readline(), 5)
    assert line == b"%d\n" % alert["id"]
    writer.close()


async def test_streams_are_counted_but_not_timed(client: Client) -> None:
    obj = await create_object(client)
    stream = await open_stream(client, obj["id"])
    await connected(client, obj["id"])
    text = await (await client.get("/metrics")).text()
    assert "inbox_open_sockets 1.0" in text
    await close_all_inboxes(app_of(client))  # the stream ends from the server's side
    with pytest.raises(EOFError):
        await stream.next()
    answered = 'inbox_http_requests_total{method="GET",route="/inbox/{object_id}",status="200"}'
    for _ in range(100):
        text = await (await client.get("/metrics")).text()
        if answered in text:
            break
        await asyncio.sleep(0.05)
    assert answered in text
    timed = [line for line in text.splitlines() if line.startswith("inbox_http_request_dur")]
    assert not [line for line in timed if 'route="/inbox/{object_id}"' in line]


@pytest.mark.parametrize("how", ["close", "abort"])
async def test_a_client_that_goes_away_is_let_go_at_once(client: Client, how: str) -> None:
    """Not at the next keep-alive comment (15 s): the stream ends when its connection does,
    whether the client closes it (FIN) or resets it (RST), and another stream of the same
    object is left alone."""
    app = app_of(client)
    obj = await create_object(client)
    staying = await open_stream(client, obj["id"])
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    writer.write(
        f"GET /inbox/{obj['id']} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n".encode()
    )
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 200")
    await connected(client, obj["id"], 2)
    if how == "close":
        writer.close()
    else:
        writer.transport.abort()
    await eventually(lambda: app[hub_key].count_for(obj["id"]) == 1, timeout=1.0)
    alert = await create_alert(client, object_ids=[obj["id"]])
    assert [f["id"] for f in await staying.alerts(1)] == [alert["id"]]
    staying.close()


async def test_what_a_client_sends_on_its_stream_is_ignored(client: Client) -> None:
    """An SSE client has nothing to say after its request: bytes it sends anyway neither end
    nor disturb the stream, and are never read as a next request on the connection."""
    obj = await create_object(client)
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    writer.write(
        f"GET /inbox/{obj['id']} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n".encode()
    )
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert b"\r\nconnection: close\r\n" in head.lower()
    await asyncio.wait_for(reader.readuntil(b"retry: %d\n\n" % service.wire.SSE_RETRY_MS), 5)
    writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\nnot http at all\r\n\r\n")
    await writer.drain()
    alert = await create_alert(client, object_ids=[obj["id"]])
    await asyncio.wait_for(reader.readuntil(b"id: "), 5)
    assert await asyncio.wait_for(reader.readline(), 5) == b"%d\n" % alert["id"]
    assert app_of(client)[hub_key].count_for(obj["id"]) == 1
    await close_all_inboxes(app_of(client))  # the stream ends, and so does its connection
    rest = await asyncio.wait_for(reader.read(), 5)
    assert rest.endswith(b"\r\n0\r\n\r\n"), rest  # the last chunk, then the close
    assert b"HTTP/1.1" not in rest
    writer.close()


async def test_streams_opened_and_dropped_leave_nothing_behind(client: Client) -> None:
    """300 streams whose clients hang up (half of them with a reset) leave no session, task or
    memory behind, each let go when its connection closes."""
    app = app_of(client)
    obj = await create_object(client)
    await create_alert(client, object_ids=[obj["id"]])
    request = (
        f"GET /inbox/{obj['id']} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n"
    ).encode()

    async def cycle(reset: bool) -> None:
        reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
        writer.write(request)
        await asyncio.wait_for(reader.readuntil(b"id: "), 5)  # the backlog: fully set up
        if reset:
            writer.transport.abort()
        else:
            writer.close()
            await writer.wait_closed()

    # Each let go when its connection closes: within 2 s, not one keep-alive interval (15 s).
    await assert_cycles_leave_nothing(
        app, lambda i: cycle(i % 2 == 0), "streams", settle_timeout=2.0
    )
