"""The inbox socket under abuse: client frames, malformed `after`, connect/close floods,
socket limits, and a client that never reads."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import struct
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp import WSMsgType, WSServerHandshakeError
from aiohttp.test_utils import TestClient

from service.keys import hub_key, sockets_key
from service.wire import CLOSE_TOO_SLOW

from .conftest import (
    app_of,
    assert_cycles_leave_nothing,
    create_alert,
    create_object,
    eventually,
)
from .test_access import UPGRADE
from .test_inbox import assert_silent, connect, connected, receive

Client = TestClient[Any, Any]


async def test_frames_from_the_client_are_ignored(client: Client, db: asyncpg.Connection) -> None:
    obj = await create_object(client)
    ws = await connect(client, obj["id"])
    await ws.send_str("hello")
    await ws.send_str(json.dumps({"text": "forged", "object_ids": [obj["id"]]}))
    await ws.send_bytes(b"\x00\x01binary")
    await ws.ping()
    await assert_silent(ws)
    assert await db.fetchval("SELECT count(*) FROM alerts") == 0
    alert = await create_alert(client, object_ids=[obj["id"]])
    assert [f["id"] for f in await receive(ws, 1)] == [alert["id"]]
    await assert_silent(ws)
    assert not ws.closed
    await ws.close()


async def test_an_oversized_client_frame_closes_the_socket(client: Client) -> None:
    obj = await create_object(client)
    ws = await connect(client, obj["id"])
    await ws.send_str("x" * 5000)
    msg = await ws.receive(timeout=5)
    assert msg.type in {WSMsgType.CLOSE, WSMsgType.CLOSED}
    assert ws.close_code == 1009
    await eventually(lambda: len(app_of(client)[hub_key]) == 0)


@pytest.mark.parametrize(
    "after", ["-1", "abc", "1.5", "", " 1", "1e3", "0x10", "١", "１", str(2**63), "1,2", "nan"]
)
async def test_malformed_after_is_refused_before_the_upgrade(client: Client, after: str) -> None:
    obj = await create_object(client)
    response = await client.get(f"/inbox/{obj['id']}", params={"after": after}, headers=UPGRADE)
    assert response.status == 400
    assert "Upgrade" not in response.headers
    assert (await response.json())["error"] == "malformed_request"
    assert len(app_of(client)[hub_key]) == 0


async def test_connect_close_flood_leaves_nothing_behind(client: Client) -> None:
    """300 sockets opened and closed leave no task, session, socket or memory behind."""
    app = app_of(client)
    obj = await create_object(client)
    await create_alert(client, object_ids=[obj["id"]])

    # A plain session: the test client would keep every socket it opened, to close it later.
    session = aiohttp.ClientSession()
    url = client.make_url(f"/inbox/{obj['id']}")

    async def cycle(polite: bool) -> None:
        ws = await session.ws_connect(url)
        await receive(ws, 1)  # the backlog: the socket is fully set up
        if polite:
            await ws.close()
        else:  # hang up without a close frame
            ws._response.connection.transport.abort()  # type: ignore[union-attr]
            await ws.close()

    try:
        await assert_cycles_leave_nothing(app, lambda i: cycle(i % 3 != 0), "sockets")
    finally:
        await session.close()


# -- limits -----------------------------------------------------------------------------------


async def test_sockets_per_object_limit_is_429(make_client: Any) -> None:
    client = await make_client(WS_MAX_PER_OBJECT="2")
    obj, other = await create_object(client), await create_object(client)
    first = await connect(client, obj["id"])
    second = await connect(client, obj["id"])
    await connected(client, obj["id"], 2)
    response = await client.get(f"/inbox/{obj['id']}", headers=UPGRADE)
    assert response.status == 429
    assert (await response.json())["error"] == "too_many_sockets"
    with pytest.raises(WSServerHandshakeError) as caught:
        await connect(client, obj["id"])
    assert caught.value.status == 429
    # Another object is not affected, and a closed socket frees its place.
    await (await connect(client, other["id"])).close()
    await first.close()
    await eventually(lambda: app_of(client)[hub_key].count_for(obj["id"]) == 1)
    third = await connect(client, obj["id"])
    await third.close()
    await second.close()


async def test_sockets_per_process_limit_is_503(make_client: Any) -> None:
    client = await make_client(WS_MAX_PER_PROCESS="3")
    objs = [await create_object(client) for _ in range(4)]
    open_ = [await connect(client, o["id"]) for o in objs[:3]]
    response = await client.get(f"/inbox/{objs[3]['id']}", headers=UPGRADE)
    assert response.status == 503
    assert (await response.json())["error"] == "server_busy"
    await open_[0].close()
    await eventually(lambda: len(app_of(client)[sockets_key]) == 2)
    open_[0] = await connect(client, objs[3]["id"])
    for ws in open_:
        await ws.close()


async def test_limits_hold_under_a_burst_of_connects(make_client: Any) -> None:
    client = await make_client(WS_MAX_PER_OBJECT="3")
    obj = await create_object(client)
    results = await asyncio.gather(
        *(connect(client, obj["id"]) for _ in range(10)), return_exceptions=True
    )
    accepted = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, WSServerHandshakeError)]
    assert len(accepted) == 3
    assert len(refused) == 7
    assert all(r.status == 429 for r in refused)
    for ws in accepted:
        await ws.close()


# -- a client that never reads ----------------------------------------------------------------


class RawSocket:
    """A WebSocket client that reads only when told to (its receive buffer kept tiny)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, host: str, port: int, path: str) -> RawSocket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (host, port))
        reader, writer = await asyncio.open_connection(sock=sock, limit=4096)
        nonce = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {nonce}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head
        return cls(reader, writer)

    async def frame(self) -> tuple[int, bytes]:
        first, second = await self.reader.readexactly(2)
        length = second & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", await self.reader.readexactly(2))
        elif length == 127:
            (length,) = struct.unpack("!Q", await self.reader.readexactly(8))
        return first & 0x0F, await self.reader.readexactly(length)

    async def close_code(self, timeout: float = 10) -> int:
        """Read (and drop) frames up to the close frame; its status code."""
        async with asyncio.timeout(timeout):
            while True:
                opcode, payload = await self.frame()
                if opcode == 0x8:
                    code: int = struct.unpack("!H", payload[:2])[0]
                    return code

    def close(self) -> None:
        self.writer.transport.abort()


async def test_a_client_that_never_reads_is_closed_and_others_get_everything(
    make_client: Any,
) -> None:
    client = await make_client(WS_QUEUE_SIZE="4", ALERT_TEXT_MAX_LENGTH="100000")
    app = app_of(client)
    obj = await create_object(client)
    slow = await RawSocket.open(client.server.host, client.server.port, f"/inbox/{obj['id']}")
    reader = await connect(client, obj["id"])
    await connected(client, obj["id"], 2)
    sessions = app[hub_key].sessions()
    received: list[int] = []

    async def read_all() -> None:
        async for msg in reader:
            received.append(json.loads(msg.data)["id"])

    reading = asyncio.create_task(read_all())
    posted: list[int] = []
    text = "z" * 100_000
    # Each frame is 100 kB: kernel buffers fill after a few dozen and the queue after four more.
    # The reading client keeps up (each alert is awaited there before the next is posted); the
    # other never reads, so its frames pile up: first in kernel buffers, then in its queue.
    for _ in range(300):
        posted.append((await create_alert(client, text=text, object_ids=[obj["id"]]))["id"])
        await eventually(lambda: len(received) == len(posted))
        if any(s.overflowed for s in sessions):
            break
    overflowed = [s for s in sessions if s.overflowed]
    assert len(overflowed) == 1, "the slow client was never dropped"
    assert await slow.close_code() == CLOSE_TOO_SLOW
    slow.close()
    for _ in range(3):
        posted.append((await create_alert(client, text="after", object_ids=[obj["id"]]))["id"])
    await eventually(lambda: len(received) == len(posted), timeout=15)
    assert received == posted
    await eventually(lambda: app[hub_key].count_for(obj["id"]) == 1)
    await reader.close()
    await reading
