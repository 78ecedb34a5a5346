"""The bench's lean WebSocket client (bench/loadgen.py `LeanInbox`): against the real service
it receives a backlog and then live alerts, each once and in id order, and keeps its socket
through the service's heartbeat; against frames built here it parses 7-, 16- and 64-bit
lengths, frames split over reads and several in one read, answers pings and closes with masked
frames, and drops a fragmented stream as a protocol error."""

from __future__ import annotations

import asyncio
import base64
import hashlib
from collections.abc import AsyncIterator, Callable
from typing import Any, cast

import aiohttp
import orjson
import pytest

from bench.loadgen import HandshakeError, LeanInbox, Tally

from .conftest import eventually
from .served import Serve, serve

__all__ = ["serve"]  # the fixture

# RFC 6455, section 1.3: this key's accept, worked out by hand in the RFC.
RFC_KEY, RFC_ACCEPT = b"dGhlIHNhbXBsZSBub25jZQ==", b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
SWITCHING = (
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n"
    b"Sec-WebSocket-Accept: %s\r\n\r\n"
)


def server_frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    """A frame as a server sends it: unmasked, the shortest length encoding."""
    n = len(payload)
    if n < 126:
        length = bytes([n])
    elif n < 1 << 16:
        length = bytes([126]) + n.to_bytes(2, "big")
    else:
        length = bytes([127]) + n.to_bytes(8, "big")
    return bytes([(0x80 if fin else 0) | opcode]) + length + payload


def alert_frame(alert_id: int, padding: int = 0) -> bytes:
    return server_frame(0x1, orjson.dumps({"id": alert_id, "text": "x" * padding}))


def client_frame(data: bytes) -> tuple[int, bytes, bytes]:
    """(first byte, unmasked payload, the rest) of a frame a client sent; it must be masked."""
    assert data[1] & 0x80, "a client frame must be masked"
    n = data[1] & 0x7F
    assert n < 126
    mask, payload = data[2:6], data[6 : 6 + n]
    return data[0], bytes(b ^ mask[i % 4] for i, b in enumerate(payload)), data[6 + n :]


class Wire:
    """The transport under a `LeanInbox` fed by hand: what it wrote, whether it hung up."""

    def __init__(self) -> None:
        self.sent = bytearray()
        self.closed = self.aborted = False

    def write(self, data: bytes) -> None:
        self.sent += data

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True


def fed_inbox(after: int = 0) -> tuple[LeanInbox, Wire, Tally]:
    """An inbox of object 7 whose upgrade the test answers itself (with RFC_KEY)."""
    tally, wire = Tally(), Wire()
    inbox = LeanInbox(b"GET /inbox/7 HTTP/1.1\r\n\r\n", RFC_KEY, 7, after, tally)
    inbox.connection_made(cast(asyncio.Transport, wire))
    assert wire.sent == inbox.request
    wire.sent.clear()
    return inbox, wire, tally


# -- against the service ---------------------------------------------------------------------


async def post(session: aiohttp.ClientSession, path: str, body: dict[str, Any]) -> Any:
    async with session.post(path, json=body) as response:
        assert response.status == 200, await response.text()
        return await response.json()


async def alert(session: aiohttp.ClientSession, object_id: int) -> int:
    body = {"text": "hello", "object_ids": [object_id], "alert_all": False}
    return int((await post(session, "/alert", body))["id"])


async def nothing_more(tally: Tally, count: int) -> None:
    """A short wait proves that no frame beyond the first `count` arrives."""
    with pytest.raises(AssertionError, match="not met in time"):
        await eventually(lambda: len(tally.alert) > count, timeout=0.3)


async def test_backlog_then_live_alerts_arrive_once_in_id_order(serve: Serve) -> None:
    port = (await serve()).port
    everything, since = Tally(), Tally()
    async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as session:
        mine, other = [
            (await post(session, "/object", {"email": email, "phone_number": "212-555-1234"}))["id"]
            for email in ("a@example.com", "b@example.com")
        ]
        backlog = []
        for _ in range(5):
            backlog.append(await alert(session, mine))
            await alert(session, other)
        first = await LeanInbox.open(
            "127.0.0.1", port, f"/inbox/{mine}?after=0", mine, 0, everything
        )
        await eventually(lambda: len(everything.alert) == 5)
        # A second socket of the same object, after the third alert.
        second = await LeanInbox.open(
            "127.0.0.1", port, f"/inbox/{mine}?after={backlog[2]}", mine, backlog[2], since
        )
        await eventually(lambda: len(since.alert) == 2)
        live = [await alert(session, mine) for _ in range(3)]
        await alert(session, other)
        await eventually(lambda: len(everything.alert) == 8 and len(since.alert) == 5)
        await nothing_more(everything, 8)
        await nothing_more(since, 5)
    assert everything.alert.tolist() == backlog + live
    assert since.alert.tolist() == backlog[3:] + live
    for tally in (everything, since):
        assert set(tally.obj) == {mine}
        assert list(tally.stamp) == sorted(tally.stamp)
        assert tally.state == {
            "out_of_order": 0,
            "closed": 0,
            "connect_errors": 0,
            "protocol_errors": 0,
        }
    first.close()
    second.close()
    await eventually(lambda: everything.state["closed"] == since.state["closed"] == 1)


async def test_the_service_heartbeat_is_answered_and_the_socket_stays(serve: Serve) -> None:
    # The service closes a socket whose pong does not come within half a heartbeat.
    port = (await serve(WS_HEARTBEAT="0.1")).port
    tally = Tally()
    async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as session:
        body = {"email": "a@example.com", "phone_number": "212-555-1234"}
        mine = (await post(session, "/object", body))["id"]
        inbox = await LeanInbox.open("127.0.0.1", port, f"/inbox/{mine}?after=0", mine, 0, tally)
        await eventually(lambda: inbox.pongs >= 5)
        sent = await alert(session, mine)
        await eventually(lambda: len(tally.alert) == 1)
    assert tally.alert.tolist() == [sent]
    assert tally.state["closed"] == tally.state["protocol_errors"] == 0
    inbox.close()


async def test_the_upgrade_is_what_aiohttps_client_sends() -> None:
    """The bench's RSS per socket counts what a handshake leaves in the service."""
    heads: list[bytes] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        heads.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server, aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientError):
            await session.ws_connect(f"http://127.0.0.1:{port}/inbox/3?after=9")
        with pytest.raises(HandshakeError):
            await LeanInbox.open("127.0.0.1", port, "/inbox/3?after=9", 3, 9, Tally())

    def fields(head: bytes) -> dict[bytes, bytes]:
        lines = head.split(b"\r\n")[1:-2]
        return dict(line.split(b": ", 1) for line in lines if b": " in line)

    theirs, ours = heads
    assert (
        ours.split(b"\r\n", 1)[0] == theirs.split(b"\r\n", 1)[0] == b"GET /inbox/3?after=9 HTTP/1.1"
    )
    assert fields(ours).keys() == fields(theirs).keys()
    key = b"Sec-WebSocket-Key"
    assert {**fields(ours), key: b""} == {**fields(theirs), key: b""}
    assert len(base64.b64decode(fields(ours)[key])) == 16


# -- against frames built here ---------------------------------------------------------------


async def test_frames_split_over_reads_and_several_in_one_read() -> None:
    inbox, wire, tally = fed_inbox()
    stream = SWITCHING % RFC_ACCEPT + alert_frame(1) + alert_frame(2, 300) + alert_frame(3)
    for i in range(len(stream)):  # one byte per read, the answer's head included
        inbox.data_received(stream[i : i + 1])
    assert inbox.opened.done()
    assert inbox.opened.exception() is None
    assert tally.alert.tolist() == [1, 2, 3]
    inbox.data_received(alert_frame(4) + alert_frame(5, 200) + alert_frame(6)[:5])
    assert tally.alert.tolist() == [1, 2, 3, 4, 5]
    assert tally.stamp[3] == tally.stamp[4]  # one stamp per read
    inbox.data_received(alert_frame(6)[5:] + alert_frame(7)[:1])
    inbox.data_received(alert_frame(7)[1:])
    assert tally.alert.tolist() == [1, 2, 3, 4, 5, 6, 7]
    assert tally.stamp[5] < tally.stamp[6]
    assert list(tally.obj) == [7] * 7
    assert tally.state["out_of_order"] == 0
    assert wire.sent == b""
    assert not wire.closed
    assert not wire.aborted


async def test_an_accept_in_another_case_is_refused() -> None:
    inbox, wire, tally = fed_inbox()
    inbox.data_received(SWITCHING % RFC_ACCEPT.swapcase() + alert_frame(1))
    with pytest.raises(HandshakeError):
        await inbox.opened
    assert wire.aborted
    assert len(tally.alert) == 0


async def test_the_answer_and_the_first_frames_in_one_read() -> None:
    inbox, _, tally = fed_inbox(after=4)
    inbox.data_received(SWITCHING % RFC_ACCEPT + alert_frame(5) + alert_frame(5))
    assert inbox.opened.done()
    assert tally.alert.tolist() == [5, 5]
    assert tally.state["out_of_order"] == 1  # a repeated id is counted


@pytest.mark.parametrize(("padding", "length_byte"), [(50, 68), (1_000, 126), (70_000, 127)])
async def test_7_16_and_64_bit_lengths(padding: int, length_byte: int) -> None:
    inbox, _, tally = fed_inbox()
    inbox.data_received(SWITCHING % RFC_ACCEPT)
    frame = alert_frame(9, padding)
    assert frame[1] == length_byte  # the encoding this case is about
    inbox.data_received(frame[:3])
    inbox.data_received(frame[3:9])
    assert len(tally.alert) == 0
    inbox.data_received(frame[9:] + alert_frame(10, padding))
    assert tally.alert.tolist() == [9, 10]
    assert tally.state["protocol_errors"] == 0


async def test_a_ping_is_answered_with_a_masked_pong_and_a_pong_ignored() -> None:
    inbox, wire, tally = fed_inbox()
    inbox.data_received(
        SWITCHING % RFC_ACCEPT
        + server_frame(0x9, b"are you there")
        + server_frame(0xA, b"unsolicited")
        + alert_frame(1)
    )
    first, payload, rest = client_frame(bytes(wire.sent))
    assert (first, payload, rest) == (0x8A, b"are you there", b"")
    assert tally.alert.tolist() == [1]
    assert inbox.pongs == 1


async def test_a_close_is_answered_masked_and_counted_once() -> None:
    inbox, wire, tally = fed_inbox()
    inbox.data_received(SWITCHING % RFC_ACCEPT + alert_frame(1))
    inbox.data_received(server_frame(0x8, (1001).to_bytes(2, "big")) + alert_frame(2))
    assert client_frame(bytes(wire.sent)) == (0x88, (1001).to_bytes(2, "big"), b"")
    assert wire.closed
    inbox.connection_lost(None)
    assert tally.alert.tolist() == [1]
    assert tally.state["closed"] == 1


@pytest.mark.parametrize(
    "frame",
    [
        server_frame(0x1, b'{"id": 2', fin=False) + server_frame(0x0, b"}"),
        server_frame(0x2, b'{"id": 2}'),
        bytes([0x81, 0x80 | 9]) + b"\0\0\0\0" + b'{"id": 2}',  # masked by the server
        server_frame(0x9, b"x" * 126),  # a control frame holds at most 125 bytes
        bytes([0x81, 127]) + (1 << 40).to_bytes(8, "big"),  # a terabyte is no alert
    ],
    ids=["fragmented", "binary", "masked", "long-ping", "huge"],
)
async def test_a_stream_the_service_never_sends_is_a_protocol_error(frame: bytes) -> None:
    inbox, wire, tally = fed_inbox()
    inbox.data_received(SWITCHING % RFC_ACCEPT + alert_frame(1) + frame + alert_frame(3))
    inbox.data_received(alert_frame(4))
    inbox.connection_lost(None)
    assert wire.aborted
    assert tally.alert.tolist() == [1]
    assert tally.state["protocol_errors"] == tally.state["closed"] == 1


@pytest.fixture
async def upgrades() -> AsyncIterator[Callable[[bytes], Any]]:
    """`port = await upgrades(answer)`: a server answering every upgrade with `answer`
    (`%s`: the right Sec-WebSocket-Accept)."""
    servers: list[asyncio.Server] = []

    async def start(answer: bytes) -> int:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            head = await reader.readuntil(b"\r\n\r\n")
            key = head.split(b"Sec-WebSocket-Key: ", 1)[1].split(b"\r\n", 1)[0]
            digest = hashlib.sha1(key + GUID, usedforsecurity=False).digest()
            writer.write(answer.replace(b"%s", base64.b64encode(digest)))
            await reader.read()
            writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        servers.append(server)
        return int(server.sockets[0].getsockname()[1])

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize(
    "answer",
    [
        SWITCHING % b"c3BvdHRlZCBieSB0aGUgY2xpZW50Lg==",
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
    ],
    ids=["wrong-accept", "not-101", "no-accept"],
)
async def test_a_bad_answer_to_the_upgrade_is_refused(
    upgrades: Callable[[bytes], Any], answer: bytes
) -> None:
    port = await upgrades(answer)
    tally = Tally()
    with pytest.raises(HandshakeError):
        await LeanInbox.open("127.0.0.1", port, "/inbox/1", 1, 0, tally)
    assert tally.state["closed"] == 0


async def test_the_right_answer_to_the_upgrade_opens(upgrades: Callable[[bytes], Any]) -> None:
    port = await upgrades(SWITCHING + alert_frame(4))
    tally = Tally()
    inbox = await LeanInbox.open("127.0.0.1", port, "/inbox/1", 1, 0, tally, source="127.0.0.9")
    await eventually(lambda: len(tally.alert) == 1)
    assert inbox.transport is not None
    assert inbox.transport.get_extra_info("sockname")[0] == "127.0.0.9"
    inbox.close()
    await eventually(lambda: tally.state["closed"] == 1)
