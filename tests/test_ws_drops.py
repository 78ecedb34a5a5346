"""A peer that vanishes during the WebSocket handshake or mid-socket is a client going away:
logged at INFO, counted as 499 (client gone), never an ERROR, a traceback or a 500.

Run on the server `inbox serve` runs: unlike aiohttp's test server, it does not cancel a
handler whose client is gone, so the handler meets the closed connection itself."""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import socket
import struct

import asyncpg
import pytest
from aiohttp import web

from service.keys import metrics_key, sockets_key

from .conftest import eventually
from .served import Serve, serve

__all__ = ["serve"]  # the fixture
ROUNDS = 30


def upgrade(path: str) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


def reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP RST, as a peer that crashes or loses its network does."""
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def count(app: web.Application, status: int) -> float:
    value = app[metrics_key].registry.get_sample_value(
        "inbox_http_requests_total",
        {"route": "/inbox/{object_id}", "method": "GET", "status": str(status)},
    )
    return value or 0.0


def problems(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        f"{r.levelname} {r.name}: {r.getMessage()}"
        for r in caplog.records
        if r.levelno >= logging.ERROR or r.exc_info
    ]


async def test_a_handshake_reset_by_the_peer_is_a_client_gone(
    serve: Serve, db: asyncpg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    site = await serve()
    app = site.owner.app
    obj = await db.fetchrow(
        "INSERT INTO objects (email, phone_number) VALUES ('a@example.com', '+1') RETURNING id"
    )
    with caplog.at_level(logging.DEBUG):
        for _ in range(ROUNDS):
            _, writer = await asyncio.open_connection("127.0.0.1", site.port)
            writer.write(upgrade(f"/inbox/{obj['id']}"))
            await writer.drain()
            reset(writer)  # before the server's 101 is written
        await eventually(lambda: count(app, 499) + count(app, 101) + count(app, 500) == ROUNDS)
    assert problems(caplog) == []
    assert count(app, 500) == 0
    assert count(app, 499) >= 1  # the race was won at least once
    await eventually(lambda: not app[sockets_key])


async def test_a_reset_after_a_ping_flood_is_a_client_gone(
    serve: Serve, db: asyncpg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    site = await serve()
    app = site.owner.app
    obj = await db.fetchrow(
        "INSERT INTO objects (email, phone_number) VALUES ('a@example.com', '+1') RETURNING id"
    )
    ping = b"\x89\x80" + b"\0\0\0\0"  # a masked, empty ping frame
    with caplog.at_level(logging.DEBUG):
        for _ in range(ROUNDS):
            reader, writer = await asyncio.open_connection("127.0.0.1", site.port)
            writer.write(upgrade(f"/inbox/{obj['id']}"))
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            assert head.startswith(b"HTTP/1.1 101")
            writer.write(ping * 2000)
            await writer.drain()
            reset(writer)
        await eventually(lambda: count(app, 499) + count(app, 101) + count(app, 500) == ROUNDS)
    assert problems(caplog) == []
    assert count(app, 500) == 0
    await eventually(lambda: not app[sockets_key])
