"""Writes refused by the connection's protocol before aiohttp reads them (service/server.py,
EarlyRefusals): the same 503 `server_busy` as admission control's middleware, the connection
kept in order for what follows, every refusal counted, nothing written.

The process is made full for real: WRITES_IN_FLIGHT=1 and one alert held inside PostgreSQL
(the test holds the alert-id lock, as in test_batch.py).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import asyncpg
import orjson
import pytest

from service import server
from service.keys import admission_key

from .conftest import eventually
from .served import Serve, serve
from .test_batch import alert_lock_held, blocked_backends

__all__ = ["serve"]  # the fixture

Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]
FULL = "this server has 1 writes in flight already; retry shortly"


def post(path: str, body: bytes, *headers: bytes) -> bytes:
    extra = b"".join(header + b"\r\n" for header in headers)
    return (
        b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n%s"
        b"Content-Length: %d\r\n\r\n%s" % (path.encode(), extra, len(body), body)
    )


def alert(object_id: int, text: str = "refused") -> bytes:
    return post("/alert", orjson.dumps({"text": text, "object_ids": [object_id]}))


OBJECT = post(
    "/object", orjson.dumps({"email": "late@example.com", "phone_number": "212-555-1234"})
)
HEALTH = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"


async def connect(site: server.Site) -> Connection:
    return await asyncio.open_connection("127.0.0.1", site.port)


async def response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """One response read off the wire: status, headers (lower-cased names), body."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    lines = head.decode().split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        if line:
            name, value = line.split(":", 1)
            headers[name.lower()] = value.strip()
    body = await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), 5)
    return status, headers, body


def assert_busy(status: int, headers: dict[str, str], body: bytes, message: str = FULL) -> None:
    assert status == 503
    assert headers["retry-after"] == "1"
    assert headers["content-type"] == "application/json"
    assert headers["x-inbox-worker"] == str(os.getpid())
    assert re.fullmatch(r"[0-9a-f]{32}", headers["x-request-id"])
    assert orjson.loads(body) == {"error": "server_busy", "message": message}


def early_count(site: server.Site) -> int:
    served = site.owner.server
    assert isinstance(served, server.Server)
    assert served.early is not None
    return served.early.total


async def scrape(site: server.Site) -> str:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{site.port}/metrics") as got,
    ):
        return await got.text()


@asynccontextmanager
async def full(site: server.Site, db: asyncpg.Connection) -> AsyncIterator[int]:
    """The process full (its one write slot held inside PostgreSQL); yields an object id."""
    base = f"http://127.0.0.1:{site.port}"
    async with aiohttp.ClientSession(base) as session:
        created = await session.post(
            "/object", json={"email": "bob@example.com", "phone_number": "212-555-1234"}
        )
        object_id = (await created.json())["id"]
        async with alert_lock_held(db):
            held = asyncio.ensure_future(
                session.post("/alert", json={"text": "held", "object_ids": [object_id]})
            )
            await blocked_backends(db, 1)
            admission = site.owner.app[admission_key]
            await eventually(lambda: admission.in_flight == 1)
            yield object_id
            assert not held.done()
        assert (await held).status == 200


async def test_pipelined_writes_are_refused_before_they_are_read(
    serve: Serve, db: asyncpg.Connection
) -> None:
    site = await serve(WRITES_IN_FLIGHT="1")
    async with full(site, db) as object_id:
        reader, writer = await connect(site)
        # Two writes and a read in one segment: answered in order, the read served.
        writer.write(alert(object_id) + OBJECT + HEALTH)
        first, second = await response(reader), await response(reader)
        assert_busy(*first)
        assert_busy(*second)
        assert first[1]["x-request-id"] != second[1]["x-request-id"]
        status, _, body = await response(reader)
        assert status == 200
        assert orjson.loads(body)["status"] == "ok"
        # The connection is still in step: the next write on it is refused the same way.
        writer.write(alert(object_id))
        assert_busy(*await response(reader))
        assert early_count(site) == 3
        metrics = await scrape(site)
        assert "inbox_writes_refused_total 3.0" in metrics
        assert 'inbox_http_requests_total{method="POST",route="/alert",status="503"} 2.0' in metrics
        assert (
            'inbox_http_requests_total{method="POST",route="/object",status="503"} 1.0' in metrics
        )
        # Timed as the middleware times them (the held alert is still in flight).
        assert (
            'inbox_http_request_duration_seconds_count{method="POST",route="/alert"} 2.0' in metrics
        )
        writer.close()
    # Nothing refused was written: the object made first and the held alert only.
    assert await db.fetchval("SELECT count(*) FROM objects") == 1
    assert await db.fetchval("SELECT array_agg(text) FROM alerts") == ["held"]


async def test_refusals_get_one_summary_line_not_one_line_each(
    serve: Serve, db: asyncpg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    site = await serve(WRITES_IN_FLIGHT="1")
    with caplog.at_level(logging.INFO, logger="inbox.access"):
        async with full(site, db) as object_id:
            reader, writer = await connect(site)
            writer.write(alert(object_id) * 3 + OBJECT)
            for _ in range(4):
                assert_busy(*await response(reader))
            writer.close()
            summary = await eventually_record(caplog, "writes refused with 503 server_busy")
    assert summary.getMessage().startswith("4 writes refused with 503 server_busy before")
    assert getattr(summary, "routes", None) == {"/alert": 3, "/object": 1}
    assert getattr(summary, "status", None) == 503
    lines = [r for r in caplog.records if r.name == "inbox.access"]
    assert not [r for r in lines if getattr(r, "status", None) == 503 and r is not summary]


async def eventually_record(caplog: pytest.LogCaptureFixture, text: str) -> logging.LogRecord:
    for _ in range(300):
        for record in caplog.records:
            if text in record.getMessage():
                return record
        await asyncio.sleep(0.01)
    raise AssertionError(f"no log line with {text!r}")


async def test_what_the_protocol_leaves_to_aiohttp_is_refused_by_the_middleware(
    serve: Serve, db: asyncpg.Connection
) -> None:
    site = await serve(WRITES_IN_FLIGHT="1")
    async with full(site, db) as object_id:
        body = orjson.dumps({"text": "refused", "object_ids": [object_id]})
        cases = [
            [alert(object_id)[:-5], alert(object_id)[-5:]],  # the body in two reads
            [alert(object_id)[:20], alert(object_id)[20:]],  # the head in two reads
            [post("/alert", body, b"X-Request-Id: mine-1")],  # the client's own request id
            [post("/alert", body, b"Connection: keep-alive")],
            [post("/alert?x=1", body)],  # not the exact request line
        ]
        for parts in cases:
            reader, writer = await connect(site)
            for part in parts:
                writer.write(part)
                await asyncio.sleep(0.05)
            status, headers, got = await response(reader)
            assert status == 503, parts
            assert headers["retry-after"] == "1"
            assert orjson.loads(got) == {"error": "server_busy", "message": FULL}
            if b"mine-1" in parts[0]:
                assert headers["x-request-id"] == "mine-1"
            writer.close()
        assert early_count(site) == 0
        # A close asked for is honoured: the middleware's answer, then the end of the connection.
        reader, writer = await connect(site)
        writer.write(post("/alert", body, b"Connection: close"))
        assert (await response(reader))[0] == 503
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()
        metrics = await scrape(site)
        assert "inbox_writes_refused_total 6.0" in metrics
    assert await db.fetchval("SELECT array_agg(text) FROM alerts") == ["held"]


async def test_the_framing_follows_split_requests_and_gives_up_on_chunked_bodies(
    serve: Serve, db: asyncpg.Connection
) -> None:
    site = await serve(WRITES_IN_FLIGHT="1")
    followed, chunked = await connect(site), await connect(site)
    # Before the process is full: requests split at awkward places, answered one by one.
    object_body = orjson.dumps({"email": "a@example.com", "phone_number": "212-555-1234"})
    first = post("/object", object_body)
    for parts in ([HEALTH[:7], HEALTH[7:]], [first[:-3], first[-3:]], [b"\r\n" + HEALTH]):
        for part in parts:
            followed[1].write(part)
            await asyncio.sleep(0.02)
        assert (await response(followed[0]))[0] == 200
    chunked[1].write(
        b"POST /object HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n"
        % (len(object_body), object_body.replace(b"a@", b"b@"))
    )
    assert (await response(chunked[0]))[0] == 200
    async with full(site, db) as object_id:
        followed[1].write(alert(object_id))
        assert_busy(*await response(followed[0]))
        assert early_count(site) == 1  # the framing knew where that request began
        chunked[1].write(alert(object_id))
        assert_busy(*await response(chunked[0]))
        assert early_count(site) == 1  # after a chunked body: aiohttp's path
    for _, writer in (followed, chunked):
        writer.close()


async def test_a_refused_connection_keeps_its_header_timeout(
    serve: Serve, db: asyncpg.Connection
) -> None:
    site = await serve(WRITES_IN_FLIGHT="1", HTTP_HEADER_TIMEOUT="0.5")
    async with full(site, db) as object_id:
        reader, writer = await connect(site)
        writer.write(alert(object_id))
        assert_busy(*await response(reader))
        loop = asyncio.get_running_loop()
        started = loop.time()
        # Idle after the refusal: closed within the header timeout, as after any answer.
        assert await asyncio.wait_for(reader.read(), 3) == b""
        assert 0.25 <= loop.time() - started < 2.0
        writer.close()


def test_body_length_reads_only_plain_lengths() -> None:
    head = b"post /alert http/1.1\r\nhost: x\r\ncontent-length: %s"
    assert server.body_length(head % b"12") == 12
    assert server.body_length(head % b" 7 ") == 7
    assert server.body_length(b"post /alert http/1.1\r\nhost: x") == 0
    for bad in (b"+1", b"-1", b"1_0", b"0x10", b"", b"1 2"):
        assert server.body_length(head % bad) is None, bad
    assert server.body_length((head % b"1") + b"\r\ncontent-length: 1") is None
    assert server.body_length(b"post / http/1.1\r\ntransfer-encoding: chunked") is None
    assert server.body_length(b"get / http/1.1\r\nupgrade: websocket") is None


async def test_a_client_that_does_not_read_its_answers_gets_no_unbounded_buffer(
    serve: Serve, db: asyncpg.Connection
) -> None:
    site = await serve(WRITES_IN_FLIGHT="1", DB_TIMEOUT="60")  # the held alert outlasts this
    async with full(site, db) as object_id:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", site.port))
        reader, writer = await asyncio.open_connection(sock=sock)
        served = site.owner.server
        assert isinstance(served, server.Server)
        count = 20_000  # about 6 MB of answers, more than the kernel's buffers hold
        request, most = alert(object_id), 0
        for n in range(count):  # whole requests, never read: each could be refused early
            writer.write(request)
            if n % 20 == 0:
                await asyncio.sleep(0.001)  # the server keeps up: no read ends mid-request
                for protocol in served.connections:
                    if protocol.transport is not None:
                        most = max(most, protocol.transport.get_write_buffer_size())
        assert early_count(site) > 0
        assert most <= server.MAX_UNSENT + 1024
        for _ in range(count):  # every one answered, in order, once read
            assert_busy(*await response(reader))
        writer.close()
    assert await db.fetchval("SELECT array_agg(text) FROM alerts") == ["held"]
