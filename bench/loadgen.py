"""Load-generator processes: `python -m bench.loadgen MODE CONFIG_JSON`.

Each mode sets itself up, reports `ready`, waits for `go`, runs, and reports `done` with its
raw results (see common.py for the line protocol). Modes:

- `requests`: POST /object or POST /alert over HTTP, or the same transaction straight through
  asyncpg (`target: raw`); either saturating with a fixed number in flight (capacity), or at a
  constant arrival rate (open loop: latency is counted from the *intended* send time, so a
  stalled server cannot hide its queueing from us: no coordinated omission);
- `clients`: hold many inbox WebSockets and time-stamp every frame (until `stop`);
- `poster`: POST alerts at a constant rate to random subsets of the connected objects, every
  n-th to all, recording each alert's id, recipients and the moment just before it was sent;
- `storm`: open new inbox sockets at a constant rate, timing each handshake;
- `backlog`: connect to one inbox that already holds N alerts and time until all arrived;
- `listeners`: N forked processes, each with its own plain asyncpg LISTEN connection, counting
  notifications (stand-ins for N hosts of the service): fleet.py.

HTTP requests (`requests`, `poster`) go through `LeanClient`: keep-alive connections, at most
`concurrency` open, each request's bytes (aiohttp's client's own headers) in one write and the
answer read by its status line and Content-Length. aiohttp's client cost as much CPU per
request as the service's request handling (about 100-130 us against 20-50 us, probe of
2026-11-26), and at 2x capacity it took more than one of the 2 cores the service needs.

Inbox WebSockets (`clients`) are `LeanInbox` protocols for the same reason: in the fan-out
scenario at 10,000 sockets the load generators took 32-43 us of CPU per frame received with
aiohttp's client and 22-24 us with this one (three runs of each, alternating, 2026-11-27), CPU
that the 2 cores the service runs on have to give. BENCH_WS_CLIENT=aiohttp brings aiohttp's
client back for them. SSE streams, and the `storm` and `backlog` sockets (a handshake
each, or one socket: not CPU-bound on our side), keep aiohttp's client.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import itertools
import os
import random
import sys
import time
from array import array
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple, cast
from urllib.parse import urlsplit

import aiohttp
import asyncpg
import orjson

from service.db import SERVER_SETTINGS, load_queries

from .common import emit, install_uvloop, raise_nofile, stdin_lines, wait_command

Q = load_queries()
ALERT_TEXT = "Bench alert: severe weather warning for your area, take shelter now."
Op = Callable[[int], Awaitable[None]]


class Refused(Exception):
    """The server answered 503 server_busy (admission control): counted apart, not an error."""


# -- a lean HTTP/1.1 client ----------------------------------------------------------------------


class Answer(NamedTuple):
    status: int
    retry_after: bool  # the answer carried Retry-After
    body: bytes


class _Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection, one request at a time: the request's bytes go out in
    one write, and the answer is read by its status line and Content-Length only."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[Answer] | None = None
        self.open = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not subclasses of asyncio.Transport: no isinstance check.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        buffer, waiter = self.buffer, self.waiter
        end = buffer.find(b"\r\n\r\n")
        if end < 0 or waiter is None:
            return
        head = bytes(buffer[:end]).lower()
        at = head.find(b"\r\ncontent-length:")
        if at < 0 or b"\r\ntransfer-encoding:" in head:
            self.fail(RuntimeError(f"an answer without Content-Length: {head[:200]!r}"))
            return
        stop = head.find(b"\r\n", at + 17)
        total = end + 4 + int(head[at + 17 : stop if stop > 0 else len(head)])
        if len(buffer) < total:
            return
        answer = Answer(
            int(head[9:12]), b"\r\nretry-after:" in head, bytes(buffer[end + 4 : total])
        )
        del buffer[:total]
        if b"\r\nconnection: close" in head:
            self.open = False
        self.waiter = None
        if not waiter.done():
            waiter.set_result(answer)

    def fail(self, exc: Exception) -> None:
        self.open = False
        if self.transport is not None:
            self.transport.close()
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc)
        self.waiter = None

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail(ConnectionError("the server closed the connection"))

    def send(self, request: bytes) -> asyncio.Future[Answer]:
        assert self.transport is not None
        assert self.waiter is None
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        return self.waiter


class LeanClient:
    """POSTs over keep-alive connections, at most `limit` open (as aiohttp's connector limit):
    the same request bytes aiohttp's client sends (its default headers included), at a
    fraction of its CPU per request. Only for the load generator's open-loop posters, whose
    own CPU shares the cores with the service it measures."""

    def __init__(self, url: str, limit: int) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.idle: list[_Connection] = []
        self.slots = asyncio.Semaphore(limit)
        self.prefix = (
            b"Host: %s:%d\r\nContent-Type: application/json\r\nAccept: */*\r\n"
            b"Accept-Encoding: gzip, deflate\r\nUser-Agent: Python/%d.%d aiohttp/%s\r\n"
            % (self.host.encode(), self.port, *sys.version_info[:2], aiohttp.__version__.encode())
        )

    def request(self, path: bytes, body: bytes) -> bytes:
        return b"POST %s HTTP/1.1\r\n%sContent-Length: %d\r\n\r\n%s" % (
            path,
            self.prefix,
            len(body),
            body,
        )

    async def post(self, request: bytes) -> Answer:
        async with self.slots:
            connection = self.idle.pop() if self.idle else None
            if connection is None:
                loop = asyncio.get_running_loop()
                _, connection = await loop.create_connection(_Connection, self.host, self.port)
            answer = await connection.send(request)
            if connection.open:
                self.idle.append(connection)
            elif connection.transport is not None:
                connection.transport.close()
            return answer

    def close(self) -> None:
        for connection in self.idle:
            if connection.transport is not None:
                connection.transport.close()
        self.idle.clear()


# -- request drivers ----------------------------------------------------------------------------


async def saturate(op: Op, concurrency: int, duration: float) -> dict[str, Any]:
    """Keep `concurrency` operations in flight for `duration` s: the capacity."""
    counter = itertools.count()
    latencies: list[float] = []
    errors: list[str] = []
    start = time.monotonic()
    deadline = start + duration

    async def worker() -> None:
        while time.monotonic() < deadline:
            began = time.monotonic()
            try:
                await op(next(counter))
            except Exception as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
                await asyncio.sleep(0.01)
                continue
            latencies.append(time.monotonic() - began)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.monotonic() - start
    return {
        "completed": len(latencies),
        "elapsed": elapsed,
        "latencies": latencies,
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
    }


TICK = 0.001  # seconds: the shortest sleep of an open loop between starts


async def open_loop(op: Op, rate: float, duration: float, concurrency: int) -> dict[str, Any]:
    """Start one operation every 1/rate s whatever happens to the previous ones.

    At most `concurrency` run at once (a client has finitely many connections); one that must
    wait for a slot still counts its latency from its intended start.
    """
    slots = asyncio.Semaphore(concurrency)
    latencies: list[float] = []
    errors: list[str] = []
    total = max(1, int(rate * duration))
    start = time.monotonic() + 0.005
    tasks: set[asyncio.Task[None]] = set()

    async def one(i: int, intended: float) -> None:
        async with slots:
            try:
                await op(i)
            except Refused:
                return
            except Exception as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
                return
        latencies.append(time.monotonic() - intended)

    i = 0
    while i < total:
        # Start every operation whose time has come, never one early. Between starts sleep
        # at least TICK: uvloop's timers tick in whole milliseconds, so a shorter sleep returns
        # at once, and at thousands of operations a second waiting 0.3 ms at a time spun this
        # process at 100% of a core (probe of 2026-11-27: the overload phase's two posters),
        # CPU taken from the service under test. A start up to TICK late is no error: latency
        # counts from the intended start.
        now = time.monotonic()
        while i < total and (intended := start + i / rate) <= now:
            task = asyncio.create_task(one(i, intended))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            i += 1
        if i < total:
            await asyncio.sleep(max(start + i / rate - now, TICK))
    if tasks:
        await asyncio.wait(tasks, timeout=30)
    elapsed = time.monotonic() - start
    return {
        "completed": len(latencies),
        "elapsed": elapsed,
        "latencies": latencies,
        "errors": len(errors) + len(tasks),
        "first_error": errors[0] if errors else None,
        "offered_rate": rate,
    }


def object_body(i: int) -> tuple[str, str]:
    return f"bench{os.getpid()}.{i}@example.com", f"+1212555{i % 10000:04d}"


async def requests_mode(cfg: dict[str, Any], commands: asyncio.StreamReader) -> dict[str, Any]:
    lo, hi = cfg.get("recipients", [1, 1])
    rng = random.Random(cfg.get("seed", 1))

    def recipients() -> list[int]:
        return rng.sample(range(lo, hi + 1), cfg.get("n_recipients", 10))

    pool: asyncpg.Pool | None = None
    client: LeanClient | None = None
    op: Op
    if cfg["target"] == "raw":
        pool = await asyncpg.create_pool(
            cfg["dsn"], min_size=cfg["pool"], max_size=cfg["pool"], server_settings=SERVER_SETTINGS
        )

        # The service's own statements, each its own (implicit) transaction: one round trip.
        async def raw_object(i: int) -> None:
            assert pool is not None
            email, phone = object_body(i)
            await pool.fetchrow(Q.insert_object, email, phone)

        async def raw_alert(i: int) -> None:
            assert pool is not None
            await pool.fetchrow(Q.insert_alert_to_ids, ALERT_TEXT, recipients())

        op = raw_object if cfg["kind"] == "object" else raw_alert
    else:
        # The lean client, as the posters: capacity and the open-loop phases are measured
        # with the same client cost on the shared cores (aiohttp's client would take as much
        # CPU per request as the service's own request handling).
        client = LeanClient(cfg["url"], cfg["concurrency"])

        async def http_object(i: int) -> None:
            assert client is not None
            email, phone = object_body(i)
            body = orjson.dumps({"email": email, "phone_number": phone})
            await lean_post_json(client, b"/object", body)

        async def http_alert(i: int) -> None:
            assert client is not None
            body = orjson.dumps(
                {"text": ALERT_TEXT, "object_ids": recipients(), "alert_all": False}
            )
            await lean_post_json(client, b"/alert", body)

        op = http_object if cfg["kind"] == "object" else http_alert
    try:
        for i in range(min(cfg["concurrency"], 20)):  # warm connections and caches
            await op(-1 - i)
        emit("ready")
        await wait_command(commands, "go")
        if cfg["mode"] == "saturate":
            result = await saturate(op, cfg["concurrency"], cfg["duration"])
        else:
            result = await open_loop(op, cfg["rate"], cfg["duration"], cfg["concurrency"])
    finally:
        if pool is not None:
            await pool.close()
        if client is not None:
            client.close()
    return result


async def lean_post_json(client: LeanClient, path: bytes, body: bytes) -> Any:
    answer = await client.post(client.request(path, body))
    if answer.status != 200:
        raise RuntimeError(f"{path.decode()}: HTTP {answer.status}: {answer.body[:200]!r}")
    return orjson.loads(answer.body)


# -- WebSocket clients --------------------------------------------------------------------------

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455, section 1.3
MAX_FRAME = 1 << 24  # far above any alert; a larger length is a broken stream, not a frame
WS_CLIENT = os.environ.get("BENCH_WS_CLIENT", "lean")


class HandshakeError(Exception):
    """The server did not answer the upgrade with a valid 101."""


class Tally:
    """What one process's inbox clients received: (object id, alert id, time) per frame."""

    def __init__(self) -> None:
        self.obj, self.alert, self.stamp = array("q"), array("q"), array("d")
        self.state = {"out_of_order": 0, "closed": 0, "connect_errors": 0, "protocol_errors": 0}

    def record(self, object_id: int, alert_id: int, last: int, when: float) -> int:
        """Record one frame; `last` is the socket's highest alert id so far, the new one is
        returned (an inbox delivers in id order: anything else is counted)."""
        if alert_id <= last:
            self.state["out_of_order"] += 1
        self.obj.append(object_id)
        self.alert.append(alert_id)
        self.stamp.append(when)
        return max(last, alert_id)


def upgrade_request(host: str, port: int, path: str, key: bytes) -> bytes:
    """The upgrade aiohttp's client sends for `ws_connect(url)`, header for header (the
    service's RSS per socket and scripts/socket_footprint.py count what a handshake leaves)."""
    return (
        b"GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: %s\r\nAccept: */*\r\n"
        b"Accept-Encoding: gzip, deflate\r\nUser-Agent: Python/%d.%d aiohttp/%s\r\n\r\n"
        % (
            path.encode(),
            host.encode(),
            port,
            key,
            *sys.version_info[:2],
            aiohttp.__version__.encode(),
        )
    )


def client_frame(opcode: int, payload: bytes) -> bytes:
    """A control frame (payload <= 125 bytes), masked as RFC 6455 requires of a client."""
    mask, n = os.urandom(4), len(payload)
    key = int.from_bytes((mask * (n // 4 + 1))[:n], "big")
    masked = (int.from_bytes(payload, "big") ^ key).to_bytes(n, "big")
    return bytes((0x80 | opcode, 0x80 | n)) + mask + masked


class LeanInbox(asyncio.Protocol):
    """One inbox WebSocket as a bare protocol: no task, no reader, no message objects.

    It sends the upgrade aiohttp's client sends, checks the 101 and its Sec-WebSocket-Accept,
    then parses the server's frames where they arrive: text frames are recorded with ONE time
    stamp per read (the moment the bytes reached us), pings answered with a masked pong, a
    close answered with a masked close. The service never fragments and never sends binary,
    so either is counted as a protocol error and the socket dropped.
    """

    def __init__(self, request: bytes, key: bytes, object_id: int, after: int, tally: Tally):
        self.request = request
        self.accept = base64.b64encode(hashlib.sha1(key + WS_GUID, usedforsecurity=False).digest())
        self.object_id, self.last, self.tally = object_id, after, tally
        self.transport: asyncio.Transport | None = None
        self.head: bytearray | None = bytearray()  # None once the 101 has been read
        self.rest = b""  # the start of a frame whose end has not arrived yet
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.up = False  # open, and `closed` not counted yet
        self.pongs = 0

    @classmethod
    async def open(
        cls,
        host: str,
        port: int,
        path: str,
        object_id: int,
        after: int,
        tally: Tally,
        source: str | None = None,
        timeout: float = 60,
    ) -> LeanInbox:
        """Connect (from `source`, a local address) and wait for the 101, within `timeout`."""
        key = base64.b64encode(os.urandom(16))
        request = upgrade_request(host, port, path, key)
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(timeout):
            transport, inbox = await loop.create_connection(
                lambda: cls(request, key, object_id, after, tally),
                host,
                port,
                local_addr=(source, 0) if source else None,
            )
            try:
                await inbox.opened
            except BaseException:
                transport.abort()
                raise
        return inbox

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not subclasses of asyncio.Transport: no isinstance check.
        self.transport = cast(asyncio.Transport, transport)
        self.transport.write(self.request)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(ConnectionError("closed before the 101"))
        self.ended()

    def ended(self) -> None:
        if self.up:
            self.up = False
            self.tally.state["closed"] += 1

    def handshake(self, data: bytes) -> bytes:
        """Read the answer to the upgrade; return what came after it (the first frames)."""
        assert self.head is not None
        self.head += data
        end = self.head.find(b"\r\n\r\n")
        if end < 0:
            if len(self.head) > 16384:
                self.refuse(f"no end of the answer's head: {bytes(self.head[:200])!r}")
            return b""
        raw = bytes(self.head[:end])
        head = raw.lower()  # header names are case-insensitive, the accept value is not
        at = head.find(b"\r\nsec-websocket-accept:")
        stop = head.find(b"\r\n", at + 2)
        accept = raw[at + 23 : stop if stop > 0 else len(raw)].strip()
        if not head.startswith(b"http/1.1 101 ") or at < 0 or accept != self.accept:
            self.refuse(f"not a valid upgrade: {bytes(self.head[:200])!r}")
            return b""
        rest = bytes(self.head[end + 4 :])
        self.head = None
        self.up = True
        self.opened.set_result(None)
        return rest

    def refuse(self, why: str) -> None:
        assert self.transport is not None
        self.transport.abort()
        if not self.opened.done():
            self.opened.set_exception(HandshakeError(why))

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()  # one stamp for every frame of this read
        if self.head is not None:
            data = self.handshake(data)
            if not data:
                return
        if not self.up:
            return  # after a close or a protocol error: the rest is not ours to read
        if self.rest:
            data = self.rest + data
        size, pos = len(data), 0
        object_id, last, record = self.object_id, self.last, self.tally.record
        while size - pos >= 2:
            first, second = data[pos], data[pos + 1]
            length, at = second & 0x7F, pos + 2
            if length == 126:
                if size - at < 2:
                    break
                length, at = int.from_bytes(data[at : at + 2], "big"), at + 2
            elif length == 127:
                if size - at < 8:
                    break
                length, at = int.from_bytes(data[at : at + 8], "big"), at + 8
            opcode, end = first & 0x0F, at + length
            if (
                second & 0x80
                or not first & 0x80
                or opcode in {0, 2}
                or length > (125 if opcode & 0x8 else MAX_FRAME)
            ):
                # masked (a server must not mask), fragmented, binary, or too long (a control
                # frame carries at most 125 bytes)
                self.last = last
                self.protocol_error()
                return
            if end > size:
                break
            if opcode == 1:
                last = record(object_id, orjson.loads(data[at:end])["id"], last, now)
            elif opcode == 9:
                self.pong(data[at:end])
            elif opcode == 8:
                self.last = last
                self.close_answer(data[at : at + 2])
                return
            elif opcode != 10:
                self.last = last
                self.protocol_error()
                return
            pos = end
        self.last = last
        self.rest = data[pos:] if pos < size else b""

    def pong(self, payload: bytes) -> None:
        assert self.transport is not None
        self.transport.write(client_frame(0xA, payload))
        self.pongs += 1

    def close_answer(self, code: bytes) -> None:
        """The server closes: echo its code, masked, and close our side (as aiohttp's client
        does; the server is waiting for our close frame, then for the FIN)."""
        assert self.transport is not None
        self.transport.write(client_frame(0x8, code))
        self.transport.close()
        self.ended()

    def protocol_error(self) -> None:
        self.tally.state["protocol_errors"] += 1
        assert self.transport is not None
        self.transport.abort()
        self.ended()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


def ws_session(source: str | None = None) -> aiohttp.ClientSession:
    """A client session; `source` binds its sockets to that local address (127.0.0.x), so that
    tens of thousands of sockets do not exhaust one address's ephemeral ports."""
    connector = aiohttp.TCPConnector(
        limit=0, force_close=False, local_addr=(source, 0) if source else None
    )
    # No read timeout: an inbox may rightly stay silent for longer than any fixed bound.
    return aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(connect=60))


async def clients_mode(cfg: dict[str, Any], commands: asyncio.StreamReader) -> dict[str, Any]:
    """Hold one inbox per object id, a WebSocket or (`kind: sse`) an SSE stream, and record
    (object id, alert id, time) per frame. `sources` spreads the sockets over that many
    loopback addresses (127.0.0.2, 127.0.0.3, ...). WebSockets are `LeanInbox` protocols;
    with BENCH_WS_CLIENT=aiohttp they are aiohttp's client's, as SSE streams always are."""
    url, after, ids = cfg["url"], cfg["after"], cfg["object_ids"]
    sse = cfg.get("kind", "ws") == "sse"
    lean = not sse and WS_CLIENT != "aiohttp"
    tally = Tally()
    state = tally.state
    sockets: list[Any] = []
    connecting = asyncio.Semaphore(cfg.get("connect_concurrency", 100))
    sources, offset = cfg.get("sources", 0), cfg.get("source_offset", 0)
    addresses: list[str | None] = [f"127.0.0.{2 + offset + n}" for n in range(sources)] or [None]
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80

    all_tried = asyncio.Event()

    def tried() -> None:
        if len(sockets) + state["connect_errors"] >= len(ids):
            all_tried.set()

    async def hold_lean(source: str | None, object_id: int) -> None:
        async with connecting:
            try:
                inbox = await LeanInbox.open(
                    host, port, f"/inbox/{object_id}?after={after}", object_id, after, tally, source
                )
            except (OSError, TimeoutError, HandshakeError):
                state["connect_errors"] += 1
                tried()
                return
        sockets.append(inbox)
        tried()

    async def hold_ws(session: aiohttp.ClientSession, object_id: int) -> None:
        async with connecting:
            try:
                ws = await session.ws_connect(
                    f"{url}/inbox/{object_id}?after={after}",
                    timeout=aiohttp.ClientWSTimeout(ws_close=10),
                )
            except (aiohttp.ClientError, TimeoutError):
                state["connect_errors"] += 1
                tried()
                return
        sockets.append(ws)
        tried()
        last = after
        async for msg in ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            last = tally.record(object_id, orjson.loads(msg.data)["id"], last, time.monotonic())
        state["closed"] += 1

    async def hold_sse(session: aiohttp.ClientSession, object_id: int) -> None:
        async with connecting:
            try:
                response = await session.get(
                    f"{url}/inbox/{object_id}?after={after}",
                    headers={"Accept": "text/event-stream"},
                )
                if response.status != 200:
                    raise aiohttp.ClientError(f"HTTP {response.status}")
            except (aiohttp.ClientError, TimeoutError):
                state["connect_errors"] += 1
                tried()
                return
        sockets.append(response)
        tried()
        last = after
        async for line in response.content:
            if line.startswith(b"id: "):  # each alert's event: id, then its data line
                last = tally.record(object_id, int(line[4:]), last, time.monotonic())
        state["closed"] += 1

    if lean:
        holders = [
            asyncio.create_task(hold_lean(addresses[n % len(addresses)], i))
            for n, i in enumerate(ids)
        ]
    else:
        sessions = [ws_session(source) for source in addresses]
        hold = hold_sse if sse else hold_ws
        holders = [
            asyncio.create_task(hold(sessions[n % len(sessions)], i)) for n, i in enumerate(ids)
        ]
    await all_tried.wait()
    emit("ready", connected=len(sockets), connect_errors=state["connect_errors"])
    while True:
        line = (await commands.readline()).strip().decode()
        if line == "progress":
            emit("progress", frames=len(tally.alert))
        elif line in {"stop", ""}:
            break
    result = {
        "object_ids": tally.obj.tolist(),
        "alert_ids": tally.alert.tolist(),
        "times": tally.stamp.tolist(),
        "connected": len(sockets),
        **state,
    }
    for task in holders:
        task.cancel()
    if lean:
        for inbox in sockets:
            inbox.close()
    return result


async def poster_mode(cfg: dict[str, Any], commands: asyncio.StreamReader) -> dict[str, Any]:
    """Alerts at a constant rate: random subsets of `object_ids`, every `all_every`-th to all.

    With `refusals`, a 503 `server_busy` with Retry-After is a refusal (its latency from the
    moment it was sent is recorded apart), not an error; `concurrency` bounds the requests in
    flight (64)."""
    ids, subset, all_every = cfg["object_ids"], cfg["subset"], cfg["all_every"]
    rng = random.Random(cfg.get("seed", 7))
    records: list[list[Any]] = []  # [alert id, sent at, recipients or None for all]
    refused: list[float] = []
    concurrency = cfg.get("concurrency", 64)
    client = LeanClient(cfg["url"], concurrency)

    async def post(i: int) -> None:
        to_all = all_every > 0 and i % all_every == all_every - 1
        if to_all:
            body = {"text": ALERT_TEXT, "alert_all": True}
        else:
            body = {"text": ALERT_TEXT, "object_ids": rng.sample(ids, subset), "alert_all": False}
        request = client.request(b"/alert", orjson.dumps(body))
        sent = time.monotonic()
        answer = await client.post(request)
        busy = cfg.get("refusals") and answer.status == 503 and answer.retry_after
        if busy and orjson.loads(answer.body).get("error") == "server_busy":
            refused.append(time.monotonic() - sent)
            raise Refused
        if answer.status != 200:
            raise RuntimeError(f"/alert: HTTP {answer.status}: {answer.body[:200]!r}")
        reply = orjson.loads(answer.body)
        # [id, sent, recipients (None: all), answered (the alert has committed by then)]
        records.append(
            [reply["id"], sent, None if to_all else reply["object_ids"], time.monotonic()]
        )

    emit("ready")
    await wait_command(commands, "go")
    result = await open_loop(post, cfg["rate"], cfg["duration"], concurrency)
    client.close()
    return {**result, "records": records, "refused": refused}


async def storm_mode(cfg: dict[str, Any], commands: asyncio.StreamReader) -> dict[str, Any]:
    """New sockets at a constant rate; latency from intended start to completed handshake."""
    url, ids = cfg["url"], cfg["object_ids"]
    session = ws_session()
    sockets: list[aiohttp.ClientWebSocketResponse] = []

    async def connect(i: int) -> None:
        ws = await session.ws_connect(
            f"{url}/inbox/{ids[i % len(ids)]}", timeout=aiohttp.ClientWSTimeout(30)
        )
        sockets.append(ws)

    emit("ready")
    await wait_command(commands, "go")
    result = await open_loop(connect, cfg["rate"], cfg["duration"], cfg.get("concurrency", 500))
    result["held"] = len(sockets)
    return result


async def backlog_mode(cfg: dict[str, Any], commands: asyncio.StreamReader) -> dict[str, Any]:
    """Time from opening the socket until the last of `expect` backlog frames arrived."""
    url, object_id, expect = cfg["url"], cfg["object_id"], cfg["expect"]
    session = ws_session()
    times: list[float] = []
    lost = duplicated = 0
    emit("ready")
    await wait_command(commands, "go")
    for _ in range(cfg["repeats"]):
        seen: set[int] = set()
        frames = 0
        start = time.monotonic()
        async with session.ws_connect(f"{url}/inbox/{object_id}?after=0") as ws:
            while frames < expect:
                msg = await ws.receive(timeout=10)
                if msg.type != aiohttp.WSMsgType.TEXT:
                    break
                seen.add(orjson.loads(msg.data)["id"])
                frames += 1
            times.append(time.monotonic() - start)
        lost += expect - len(seen)
        duplicated += frames - len(seen)
    await session.close()
    return {"latencies": times, "lost": lost, "duplicated": duplicated}


MODES = {
    "requests": requests_mode,
    "clients": clients_mode,
    "poster": poster_mode,
    "storm": storm_mode,
    "backlog": backlog_mode,
}


def main() -> None:
    mode, cfg = sys.argv[1], orjson.loads(sys.argv[2])
    raise_nofile()
    if mode == "listeners":
        from .fleet import listeners_main

        listeners_main(cfg)
        return
    install_uvloop()

    async def run() -> None:
        commands = await stdin_lines()
        result = await MODES[mode](cfg, commands)
        emit("done", **result)
        # Stay alive until told, so the orchestrator reads our CPU time before we go.
        await wait_command(commands, "exit")

    asyncio.run(run())
    # Thousands of sockets: the kernel closes them, no handshake each.
    os._exit(0)


if __name__ == "__main__":
    main()
