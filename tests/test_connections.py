"""Connection-level limits of the server `inbox serve` runs (service/server.py): a connection
that sends nothing, half a request, a head or a body byte by byte, or sits idle after a
response is closed within the documented time; connections are counted and bounded, and none
pile up."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import asyncpg
import orjson

import testbed
from service import server
from service.wire import CLOSE_GOING_AWAY

from .conftest import eventually
from .served import Serve, serve

__all__ = ["serve"]  # the fixture

TIMEOUT = 0.5  # HTTP_HEADER_TIMEOUT and HTTP_BODY_TIMEOUT in these tests
SLACK = 1.5  # the event loop's timer granularity and a busy shared machine


Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def connect(site: server.Site) -> Connection:
    return await asyncio.open_connection("127.0.0.1", site.port)


async def closed_after(reader: asyncio.StreamReader, limit: float) -> tuple[float, bytes]:
    """Seconds until the server closes the connection (and what it sent before)."""
    started = time.monotonic()
    received = await asyncio.wait_for(reader.read(), limit)
    return time.monotonic() - started, received


async def scrape(site: server.Site) -> str:
    reader, writer = await connect(site)
    try:
        writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        return (await asyncio.wait_for(reader.read(), 5)).decode()
    finally:
        writer.close()


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_silent_and_half_sent_connections_are_closed_in_time(serve: Serve) -> None:
    site = await serve(HTTP_HEADER_TIMEOUT=str(TIMEOUT))
    started = time.monotonic()
    silent = await connect(site)
    half = await connect(site)
    half[1].write(b"GET /healthz HT")
    head_only = await connect(site)
    head_only[1].write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # the blank line never comes
    try:
        for reader, _ in (silent, half, head_only):
            _, received = await closed_after(reader, TIMEOUT + SLACK)
            assert received == b""
        elapsed = time.monotonic() - started
        assert TIMEOUT * 0.5 <= elapsed < TIMEOUT + SLACK, elapsed  # not refused outright
    finally:
        for _, writer in (silent, half, head_only):
            writer.close()


async def test_a_head_sent_byte_by_byte_is_cut(serve: Serve) -> None:
    site = await serve(HTTP_HEADER_TIMEOUT=str(TIMEOUT))
    reader, writer = await connect(site)
    started = time.monotonic()

    async def trickle() -> None:
        for byte in b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 1000:
            writer.write(bytes([byte]))
            await asyncio.sleep(0.05)

    trickling = asyncio.create_task(trickle())
    try:
        _, received = await closed_after(reader, TIMEOUT + SLACK)
    finally:
        trickling.cancel()
    assert received == b""
    assert time.monotonic() - started < TIMEOUT + SLACK
    writer.close()


async def test_keep_alive_idle_is_bounded(serve: Serve) -> None:
    site = await serve(HTTP_HEADER_TIMEOUT=str(TIMEOUT))
    reader, writer = await connect(site)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    response = await asyncio.wait_for(reader.readuntil(b'"sockets"'), 5)
    assert response.startswith(b"HTTP/1.1 200")
    elapsed, _ = await closed_after(reader, TIMEOUT + SLACK)
    assert elapsed >= TIMEOUT * 0.5
    writer.close()


async def test_a_trickling_body_is_cut_with_408(serve: Serve) -> None:
    site = await serve(HTTP_BODY_TIMEOUT=str(TIMEOUT), HTTP_HEADER_TIMEOUT="30")
    body = orjson.dumps({"email": "bob@example.com", "phone_number": "212-555-1234"})
    reader, writer = await connect(site)
    writer.write(
        b"POST /object HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body)
    )

    async def trickle() -> None:
        for byte in body:
            writer.write(bytes([byte]))
            await asyncio.sleep(0.1)

    trickling = asyncio.create_task(trickle())
    try:
        elapsed, received = await closed_after(reader, TIMEOUT + server.LINGER + SLACK)
    finally:
        trickling.cancel()
    assert received.startswith(b"HTTP/1.1 408"), received
    assert b'"error":"request_timeout"' in received
    assert elapsed < TIMEOUT + server.LINGER + SLACK
    writer.close()


async def test_an_unread_body_is_drained_briefly_then_closed(serve: Serve) -> None:
    site = await serve(HTTP_HEADER_TIMEOUT="30")
    reader, writer = await connect(site)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\nxx")
    elapsed, received = await closed_after(reader, server.LINGER + SLACK)
    assert received.startswith(b"HTTP/1.1 200")
    assert elapsed < server.LINGER + SLACK
    writer.close()


async def test_connections_are_counted_bounded_and_do_not_pile_up(serve: Serve) -> None:
    fds = open_fds()
    site = await serve(HTTP_HEADER_TIMEOUT=str(TIMEOUT), MAX_CONNECTIONS="50")
    gate = site.owner.gate
    idle = [await connect(site) for _ in range(50)]
    for _, writer in idle[::2]:
        writer.write(b"GET / HTTP/1.1\r\n")  # half of them half-way through a head
    await asyncio.sleep(0)  # let the server accept them (no timing depends on it)
    # One more is refused at once, with the JSON error body, and not counted.
    extra_reader, extra_writer = await connect(site)
    elapsed, received = await closed_after(extra_reader, 2)
    assert received.startswith(b"HTTP/1.1 503")
    assert received.endswith(
        b'{"error":"server_busy","message":"this server has no room for another connection"}'
    )
    assert elapsed < TIMEOUT
    assert gate.open == 50
    assert gate.refused >= 1
    extra_writer.close()

    # All of them are closed by the server in time; nothing stays behind.
    results = await asyncio.gather(*(closed_after(r, TIMEOUT + SLACK) for r, _ in idle))
    assert all(received == b"" for _, received in results)
    for _, writer in idle:
        writer.close()
    await eventually(lambda: gate.open == 0)
    metrics = await scrape(site)
    assert "inbox_open_connections 1.0" in metrics  # the scrape's own
    assert f"inbox_connections_refused_total {gate.refused:.1f}" in metrics
    # And the bound is free again.
    reader, writer = await connect(site)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert (await asyncio.wait_for(reader.read(), 5)).startswith(b"HTTP/1.1 200")
    writer.close()
    await site.owner.cleanup()
    assert open_fds() <= fds + 5  # the pool and listener closed with the app; no socket left


async def test_inbox_serve_stops_gracefully_on_sigterm(
    database_url: str, db: asyncpg.Connection, tmp_path: Path
) -> None:
    """`inbox serve` itself: its open inbox sockets are closed with 1001 (going away) before
    the process exits 0, without a traceback."""
    object_id = await db.fetchval(
        "INSERT INTO objects (email, phone_number) VALUES ('a@example.com', '+1') RETURNING id"
    )
    log_path = tmp_path / "serve.log"
    with (
        log_path.open("wb") as log_file,
        testbed.service(database_url, log_file, cwd=tmp_path) as process,
    ):
        async with aiohttp.ClientSession() as session:
            ws = await session.ws_connect(f"{process.url}/inbox/{object_id}")
            process.process.send_signal(signal.SIGTERM)
            message = await ws.receive(timeout=10)
            assert message.type == aiohttp.WSMsgType.CLOSE, message
            assert ws.close_code == CLOSE_GOING_AWAY
            await ws.close()
        await asyncio.to_thread(process.process.wait, 20)
    assert process.process.returncode == 0
    assert "Traceback" not in log_path.read_text()


FIT = """
import logging, resource, sys
from service import server
from service.config import Config
logging.basicConfig()
resource.setrlimit(resource.RLIMIT_NOFILE, (int(sys.argv[1]), int(sys.argv[2])))
config = Config.from_env(environ={"MAX_CONNECTIONS": "1000"}, env_file=None)
print(server.fit_open_files(config), resource.getrlimit(resource.RLIMIT_NOFILE)[0])
"""


def test_the_bound_fits_the_open_files_limit() -> None:
    """Raised to fit when the hard limit allows; else the bound is lowered, with a WARNING."""

    def fit(soft: int, hard: int) -> tuple[str, str]:
        result = subprocess.run(
            [sys.executable, "-c", FIT, str(soft), str(hard)],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        )
        return result.stdout.strip(), result.stderr

    reserve = 10 + server.RESERVED_FDS  # DB_POOL_MAX_SIZE's default, and the rest
    assert fit(300, 5000) == (f"1000 {1000 + reserve}", "")
    out, err = fit(300, 300)
    assert out == f"{300 - reserve} 300"
    assert "MAX_CONNECTIONS=1000 does not fit the open-files limit (300)" in err


async def test_a_request_with_expect_gets_the_response_headers_of_the_others(
    serve: Serve,
) -> None:
    """server.py hands the application a copy of the request without `Expect`; the answer is
    prepared with that copy, so the application's on_response_prepare still runs."""
    site = await serve()
    reader, writer = await connect(site)
    writer.write(
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n"
    )
    answer = (await asyncio.wait_for(reader.read(), 5)).decode()
    writer.close()
    assert answer.startswith("HTTP/1.1 200")
    assert f"\r\nX-Inbox-Worker: {os.getpid()}\r\n" in answer
    assert "\r\nX-Request-Id: " in answer
