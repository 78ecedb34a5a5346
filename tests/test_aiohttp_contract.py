"""What the fan-out relies on in aiohttp, beyond its documented API (setup.cfg pins the range).

hub.py writes whole frames to a socket's transport itself. That is safe because aiohttp writes
its own pings, pongs and close frames the same way (whole, synchronously, in one write) and
marks a socket closed no later than it writes the close frame. If a new aiohttp changes either,
these tests fail before a frame can be torn or sent after a close.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import WSMsgType, web
from aiohttp.base_protocol import BaseProtocol
from aiohttp.http_websocket import WebSocketWriter
from aiohttp.test_utils import TestClient, TestServer


class RecordingTransport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return False


async def test_control_frames_are_written_whole_without_suspending() -> None:
    loop = asyncio.get_running_loop()
    transport = RecordingTransport()
    protocol = BaseProtocol(loop)
    writer = WebSocketWriter(protocol, transport, compress=0)  # type: ignore[arg-type]
    for opcode, payload, first in (
        (WSMsgType.PING, b"", 0x89),
        (WSMsgType.PONG, b"abc", 0x8A),
        (WSMsgType.TEXT, b"x" * 300, 0x81),
    ):
        coro = writer.send_frame(payload, opcode)
        try:
            coro.send(None)
        except StopIteration:
            pass
        else:  # pragma: no cover - the contract is broken
            coro.close()
            raise AssertionError(f"{opcode!r} suspended before its frame was written")
        frame = transport.writes.pop()
        assert frame[0] == first
        assert frame.endswith(payload)  # header and payload in one write
        assert not transport.writes
    coro = writer.close(1001, b"bye")
    try:
        coro.send(None)
    except StopIteration:
        pass
    else:  # pragma: no cover
        coro.close()
        raise AssertionError("the close frame suspended before it was written")
    assert transport.writes == [b"\x88\x05\x03\xe9bye"]


async def test_a_socket_is_closed_before_its_close_frame_is_written() -> None:
    seen: list[tuple[int, bool]] = []

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        transport: Any = request.transport
        original = transport.write

        def write(data: bytes) -> None:
            seen.append((data[0], ws.closed))
            original(data)

        transport.write = write
        await ws.close(code=4000)
        return ws

    app = web.Application()
    app.router.add_get("/", handler)
    async with TestClient(TestServer(app)) as client:
        ws = await client.ws_connect("/")
        msg = await ws.receive(timeout=5)
        assert msg.type == WSMsgType.CLOSE
        await ws.close()
    assert seen == [(0x88, True)]
