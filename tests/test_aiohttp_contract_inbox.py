"""What inbox.py relies on in aiohttp to keep an idle socket small, and to hear an SSE client
go (setup.cfg pins the range).

Once a WebSocket upgrade is accepted, `inbox.shed_handshake` drops the connection's HTTP parser
(`RequestHandler._parser`) and swaps its queue of parsed requests (`_messages`) for a shared
deque that holds nothing: aiohttp 3.14 sends every byte of an upgraded connection to the
WebSocket reader (`_payload_parser`), reaches for the HTTP parser and queues requests only
while `_upgraded` is false (or the upgrade was declined), and ends the connection when the
WebSocket's handler returns (the handshake turns keep-alive off). If a new aiohttp renames
these or uses them after an upgrade, these tests fail before a socket does. An SSE stream's
session is the payload parser of its connection (`inbox.hear_disconnect`), which aiohttp tells
when the connection is lost.
"""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

from aiohttp import WSMsgType, web, web_protocol
from aiohttp.base_protocol import BaseProtocol
from aiohttp.test_utils import TestClient, TestServer

from service.frames import WS_PING
from service.inbox import NO_MESSAGES, shed_handshake


def test_the_protocol_still_has_the_attributes_shed_handshake_reads() -> None:
    slots = set(web_protocol.RequestHandler.__slots__) | set(BaseProtocol.__slots__)
    assert {"_parser", "_upgraded", "_payload_parser", "_messages", "_keepalive"} <= slots


def test_the_http_parser_is_only_used_before_an_upgrade() -> None:
    """Every use of `self._parser` in the protocol's code is where it cannot run for an
    accepted upgrade: guarded by `not self._upgraded`, by `_payload_parser is None`, or by
    `_parser is not None`, or in connection_lost (which sets it to None)."""
    uses = {}
    for cls in (web_protocol.RequestHandler, BaseProtocol):
        for name, member in vars(cls).items():
            if callable(member) and "self._parser" in inspect.getsource(member):
                uses[f"{cls.__name__}.{name}"] = inspect.getsource(member)
    assert set(uses) == {
        "RequestHandler.connection_lost",
        "RequestHandler.data_received",
        "RequestHandler.start",
        "RequestHandler.finish_response",
        "BaseProtocol.__init__",
        "BaseProtocol.pause_reading",
    }
    data_received = uses["RequestHandler.data_received"]
    assert "if self._payload_parser is None and not self._upgraded:" in data_received
    assert "if self._parser is not None:" in uses["RequestHandler.start"]
    assert "and self._payload_parser is None" in uses["RequestHandler.finish_response"]
    assert "if not self._upgraded:" in uses["BaseProtocol.pause_reading"]
    assert "self._parser = None" in uses["RequestHandler.connection_lost"]


def test_requests_are_queued_only_before_an_upgrade_or_after_a_declined_one() -> None:
    queues = {
        name: inspect.getsource(member)
        for name, member in vars(web_protocol.RequestHandler).items()
        if callable(member) and "self._messages.append(" in inspect.getsource(member)
    }
    assert set(queues) == {"data_received", "finish_response"}
    data_received = queues["data_received"]
    guard = data_received.index("if self._payload_parser is None and not self._upgraded:")
    other_branch = data_received.index("elif self._payload_parser is None and self._upgraded")
    assert guard < data_received.index("self._messages.append(") < other_branch
    declined = queues["finish_response"]
    assert declined.index("and self._payload_parser is None") < declined.index(
        "self._messages.append("
    )
    # After the handler of an upgraded connection returns, start() leaves its loop: a
    # WebSocket's handshake turns keep-alive off (checked on a live socket below).
    start = inspect.getsource(web_protocol.RequestHandler.start)
    assert "if self._keepalive and not self._close and not self._force_close:" in start


def test_a_payload_parser_hears_every_byte_and_the_loss_of_its_connection() -> None:
    """`inbox.hear_disconnect` sets an SSE stream's session as the connection's payload
    parser: aiohttp must pass it what arrives after the request (instead of parsing it as
    HTTP) and call its `feed_eof()` when the connection is lost."""
    source = {
        name: inspect.getsource(getattr(web_protocol.RequestHandler, name))
        for name in ("set_parser", "data_received", "connection_lost")
    }
    assert "self._payload_parser = parser" in source["set_parser"]
    received = source["data_received"]
    assert received.index("if self._payload_parser is None and not self._upgraded:") < (
        received.index("eof, tail = self._payload_parser.feed_data(data)")
    )
    assert "self._payload_parser.feed_eof()" in source["connection_lost"]


async def test_a_socket_without_its_http_parser_still_works() -> None:
    """Text both ways, ping/pong as the service does them (its own ping frame written to the
    transport, autoping off: the handler answers pings and sees pongs), flow control and the
    close handshake on a socket whose parser and response headers were shed."""
    shed: list[Any] = []
    pongs: list[bytes] = []

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=False)
        await ws.prepare(request)
        shed_handshake(request, ws)
        protocol = request.protocol
        shed.append((protocol._parser, protocol._messages is NO_MESSAGES, protocol._keepalive))
        shed.append(len(ws.headers))
        assert request.transport is not None
        request.transport.write(WS_PING)  # what SocketSession.beat writes
        async for msg in ws:
            if msg.type is WSMsgType.PING:
                await ws.pong(msg.data)
            elif msg.type is WSMsgType.PONG:
                pongs.append(msg.data)
            elif msg.type is WSMsgType.TEXT and msg.data == "bye":
                await ws.close(code=4001, message=b"bye")
            elif msg.type is WSMsgType.TEXT:
                request.protocol.pause_reading()  # flow control on an upgraded connection
                request.protocol.resume_reading()
                await ws.send_str(msg.data.upper())
        return ws

    app = web.Application()
    app.router.add_get("/", handler)
    async with TestClient(TestServer(app)) as client:
        ws = await client.ws_connect("/", autoping=False)
        assert ws._response.headers["Upgrade"].lower() == "websocket"
        ping = await ws.receive(timeout=5)  # the server's heartbeat
        assert (ping.type, ping.data) == (WSMsgType.PING, b"")
        await ws.pong(ping.data)
        await ws.send_str("hello")
        msg = await ws.receive(timeout=5)
        assert (msg.type, msg.data) == (WSMsgType.TEXT, "HELLO")
        await ws.ping(b"p")
        pong = await ws.receive(timeout=5)
        assert (pong.type, pong.data) == (WSMsgType.PONG, b"p")
        await ws.send_str("again")
        msg = await ws.receive(timeout=5)
        assert msg.data == "AGAIN"
        await ws.send_str("bye")
        msg = await ws.receive(timeout=5)
        assert (msg.type, msg.data, msg.extra) == (WSMsgType.CLOSE, 4001, "bye")
        await ws.close()
    assert shed == [(None, True, False), 0]
    assert pongs == [b""]


async def test_a_peer_that_vanishes_ends_a_socket_without_its_parser() -> None:
    ended = asyncio.Event()

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        shed_handshake(request, ws)
        try:
            async for _msg in ws:
                pass
        finally:
            ended.set()
        return ws

    app = web.Application()
    app.router.add_get("/", handler)
    async with TestClient(TestServer(app)) as client:
        ws = await client.ws_connect("/")
        transport = ws._response.connection.transport
        assert transport is not None
        transport.abort()
        await asyncio.wait_for(ended.wait(), 5)
