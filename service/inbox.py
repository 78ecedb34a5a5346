"""The inbox: `GET /inbox/{object_id}` as a WebSocket or as Server-Sent Events, its session with
the hub, the backlog, and how a stream ends.

Both kinds share everything but the encoding of a frame: the checks before any stream starts
(each refusal is the standard JSON error body), a session registered with the hub *before* the
backlog is read, so an alert committing meanwhile is held back and de-duplicated rather than
missed (see hub.py), and `registered`, which pairs that registration with its removal.

A WebSocket costs one task, its handler, which reads what the client sends
(`answer_client_message` decides what a client may send); the backlog has a task of its own only
while it is being sent, and one task of the process pings every socket (`ping_sockets`). Once
upgraded, a socket lets go of what only the handshake needed (`shed_handshake`). An SSE
stream's handler sends the backlog itself, then only wakes for keep-alive comments. Live frames
are written by the hub (hub.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from typing import Any

import orjson
from aiohttp import WSMsgType, hdrs, web

from . import auth, history, schemas
from .db import Database
from .errors import (
    DatabaseUnavailable,
    MalformedRequest,
    NotFound,
    ServerBusy,
    ServiceError,
    TooManySockets,
    TooManySocketsForObject,
)
from .frames import SSE_KEEPALIVE, WS_PING, Prepared, http_chunk, ws_text_frame
from .handlers import path_id
from .hub import SLICE, Hub, Session
from .keys import config_key, db_key, hub_key, listener_key, sockets_key
from .listener import Listener
from .wire import (
    CLOSE_GOING_AWAY,
    CLOSE_INTERNAL_ERROR,
    CLOSE_TOO_SLOW,
    CLOSE_TRY_AGAIN,
    SSE_KEEPALIVE_INTERVAL,
    SSE_RETRY_MS,
)

log = logging.getLogger(__name__)

BACKLOG_PAGE = 1000
CLOSE_TIMEOUT = 2.0
MAX_CLIENT_MESSAGE = 4096  # a larger client frame closes the socket with 1009


# -- before any stream starts ----------------------------------------------------------------


def _alert_id(raw: str, name: str) -> int:
    if not raw.isascii() or not raw.isdigit() or len(raw) > 19 or int(raw) > schemas.MAX_ID:
        raise MalformedRequest(
            f"{name} must be the id of the last alert received (an integer >= 0)"
        )
    return int(raw)


def parse_after(request: web.Request) -> int | None:
    """`?after=`: an alert id, or None for `acked` (after the object's read cursor)."""
    return history.parse_after(request)


def parse_resume_point(request: web.Request) -> int | None:
    """SSE: `Last-Event-ID` (what an EventSource sends when it reconnects) wins over `?after=`,
    which stays in the URL the EventSource was first opened with."""
    after = parse_after(request)
    last_event_id = request.headers.get("Last-Event-ID")
    if last_event_id is None:
        return after
    return _alert_id(last_event_id, "Last-Event-ID")


def wants_event_stream(request: web.Request) -> bool:
    """A WebSocket upgrade is a WebSocket whatever it accepts; otherwise SSE when asked for."""
    if "websocket" in request.headers.get(hdrs.UPGRADE, "").lower():
        return False
    return "text/event-stream" in request.headers.get(hdrs.ACCEPT, "")


def check_socket_limits(request: web.Request, object_id: int) -> None:
    """Refuse before the stream starts: 429 for one object's too many, 503 when full."""
    config = request.app[config_key]
    if request.app[hub_key].count_for(object_id) >= config.ws_max_per_object:
        raise TooManySocketsForObject(
            f"object {object_id} has {config.ws_max_per_object} open inbox sockets already"
        )
    if len(request.app[sockets_key]) >= config.ws_max_per_process:
        raise TooManySockets("this server has no room for another socket; retry shortly")


def register(request: web.Request, session: Session, stream: web.StreamResponse) -> None:
    """Put the session in the hub (and count it against the limits); `unregister` undoes it.

    The limits are checked and the stream counted with no await in between, so a burst of
    connects cannot all slip past the same check.
    """
    check_socket_limits(request, session.object_id)
    request.app[sockets_key].add(stream)
    request.app[hub_key].add(session)


def unregister(request: web.Request, session: Session, stream: web.StreamResponse) -> None:
    request.app[hub_key].discard(session)
    request.app[sockets_key].discard(stream)
    session.detach()


@asynccontextmanager
async def registered(
    request: web.Request, session: Session, stream: web.StreamResponse
) -> AsyncIterator[Session]:
    """The session is in the hub (and counted against the limits) exactly while this is open."""
    register(request, session, stream)
    try:
        yield session
    finally:
        unregister(request, session, stream)


async def inbox(request: web.Request) -> web.StreamResponse:
    """`GET /inbox/{object_id}`: a WebSocket upgrade, or SSE with `Accept: text/event-stream`.

    A WebSocket is served in this coroutine itself, not in one it calls, so that an idle
    socket keeps a single coroutine of this module suspended.
    """
    object_id = path_id(request, "object_id")
    if wants_event_stream(request):
        after = await opening_checks(request, object_id, parse_resume_point(request))
        return await event_stream(request, object_id, after)
    after = await opening_checks(request, object_id, parse_after(request))
    # What the WebSocket does for its life: it reads what the client sends (which is also what
    # processes pongs and the close handshake); live frames are written by the hub.
    # No per-message deflate: a compressed frame differs per socket, and frames are small.
    # No aiohttp heartbeat: one task pings every socket of the process (`ping_sockets`), and
    # this loop answers the client's pings itself (autoping off: it sees pongs too).
    ws = web.WebSocketResponse(max_msg_size=MAX_CLIENT_MESSAGE, compress=False, autoping=False)
    session = SocketSession(ws, request, object_id, after)
    try:
        register(request, session, ws)  # before the backlog is read: see hub.py
        try:
            writer = await ws.prepare(request)
            assert request.transport is not None
            shed_handshake(request, ws)
            session.attach(request.transport, writer.drain)
            if session.overflowed:
                session.close_soon(CLOSE_TOO_SLOW, TOO_SLOW)
            else:
                session.start_backlog(request.app[db_key], request.app[listener_key])
            try:
                # What `async for msg in ws` does, without its own coroutine per socket.
                while (msg := await ws.receive()).type not in _ENDED:
                    session.heard = True  # anything from the peer answers the last ping
                    if msg.type is WSMsgType.TEXT:
                        await answer_client_message(session, msg.data)
                    elif msg.type is WSMsgType.PING:
                        await ws.pong(msg.data)
            finally:
                if session.backlog is not None:
                    session.backlog.cancel()
                await asyncio.gather(*session.tasks(), return_exceptions=True)
        finally:
            unregister(request, session, ws)
    finally:
        if ws.prepared and not ws.closed:
            # The peer vanished without a close frame (the handler is cancelled then).
            await close(ws, request, CLOSE_GOING_AWAY, b"")
        forget_tracebacks(ws)
    return ws


def forget_tracebacks(ws: web.WebSocketResponse) -> None:
    """Let go of the tracebacks of what ended the socket, once it has ended.

    A peer that goes away leaves aiohttp holding the exception of the failed close (and, as
    its context, the EofStream that led to it) on the WebSocketResponse; their tracebacks hold
    the frames that hold the response: about 50 objects per socket in reference cycles, which
    only a full garbage collection frees (probe of 2026-11-27: 10,000 sockets closing left
    500,000 objects and one 0.86-0.93 s pass over them). Without the tracebacks, reference
    counting frees it all as the handler returns.
    """
    exc: BaseException | None = ws.exception()
    for _ in range(8):  # a chain of contexts; in practice two
        if exc is None:
            return
        exc.__traceback__ = None
        exc = exc.__context__ or exc.__cause__


async def opening_checks(request: web.Request, object_id: int, after: int | None) -> int:
    """The origin, the credential and the object itself; the resume point (`None`: the
    object's read cursor)."""
    auth.check_origin(request)
    auth.check_object_access(request, object_id)  # the middleware made it already; kept here
    db = request.app[db_key]
    if after is None:
        return await history.resolve_after(db, object_id, None)  # 404 for no such object
    if not await db.object_exists(object_id):
        raise NotFound(f"no object with id {object_id}")
    return after


# -- the backlog -----------------------------------------------------------------------------


async def send_backlog(session: Session, db: Database, listener: Listener) -> None:
    """Everything after the session's resume point, oldest first, then live frames.

    A page is at most the session's bound, and the next is read only once the last is written
    out, so a client that reads is never dropped for the size of its backlog. A client already
    up to date (nothing newer has been heard of since it registered) costs no query at all.
    """
    page_size = min(BACKLOG_PAGE, session.limit)
    last = session.last_id
    while not listener.nothing_after(last):
        # Shielded: a stream closed mid-backlog cancels this task, and a query cancelled
        # between asyncpg's prepare (Parse/Describe/Flush) and its execution leaves the
        # server waiting for a Sync inside an open transaction, holding its table locks
        # (a TRUNCATE or ALTER would then wait forever). The page is read to the end.
        page = await asyncio.shield(db.inbox_page(session.object_id, last, page_size))
        for alert_id, payload in page:
            session.send_backlog(alert_id, payload)
            last = alert_id
        await session.flushed()
        if session.overflowed or session.transport is None:
            return
        if len(page) < page_size:
            break
    session.start_live(last)


# -- WebSocket -------------------------------------------------------------------------------


class SocketSession(Session):
    """A WebSocket's session. It holds what the socket's one task would otherwise keep in
    closures and coroutine frames for the socket's whole life: the backlog task (only while
    it runs) and the close tasks (only once one is needed)."""

    __slots__ = ("backlog", "closing", "heard", "pinged", "request", "ws")

    def __init__(
        self, ws: web.WebSocketResponse, request: web.Request, object_id: int, after: int
    ) -> None:
        limit = request.app[config_key].ws_queue_size
        super().__init__(object_id, after, limit, drop_slow_socket)
        self.ws = ws
        self.request = request
        self.backlog: asyncio.Task[None] | None = None
        self.closing: list[asyncio.Task[None]] | None = None
        self.pinged = False  # a ping went out, and
        self.heard = False  # the peer sent something since

    def is_open(self) -> bool:
        # aiohttp marks the socket closed before it writes its close frame.
        return not self.ws.closed

    async def going_away(self) -> None:
        if self.ws.prepared:  # one still in its handshake is cancelled with its handler
            await self.ws.close(code=CLOSE_GOING_AWAY, message=b"server shutdown")

    def close_soon(self, code: int, message: bytes) -> None:
        if self.closing is None:
            self.closing = []
        self.closing.append(asyncio.create_task(close(self.ws, self.request, code, message)))

    def start_backlog(self, db: Database, listener: Listener) -> None:
        """Send what the client missed, then go live. A client already up to date goes live at
        once (the same test `send_backlog` makes first), with no task at all; otherwise a task
        sends the backlog and is let go of as soon as it is done."""
        if listener.nothing_after(self.last_id):
            self.start_live(self.last_id)
            return
        self.backlog = asyncio.create_task(send_socket_backlog(self, db, listener))
        self.backlog.add_done_callback(self._backlog_done)

    def _backlog_done(self, task: asyncio.Task[None]) -> None:
        if self.backlog is task:
            self.backlog = None

    def beat(self) -> None:
        """One heartbeat: a peer that sent nothing since the last ping is gone (its connection
        is aborted, close code 1006, as aiohttp's own heartbeat does); any other is pinged.
        The ping is one whole frame written like the hub's, so it falls between frames."""
        transport = self._writable()
        if transport is None:
            return  # still in its handshake, or closing
        if self.pinged and not self.heard:
            log.info("inbox %s: no answer to a ping, closing", self.object_id)
            transport.abort()
            return
        self.pinged, self.heard = True, False
        transport.write(WS_PING)

    def tasks(self) -> list[asyncio.Task[None]]:
        """What runs for the socket besides its handler: cancelled when the socket ends."""
        return [t for t in (self.backlog, *(self.closing or ())) if t is not None]


# An upgraded connection's queue of parsed HTTP requests (see shed_handshake): shared, and
# never able to hold a request, so nothing can be queued to it by mistake.
NO_MESSAGES: deque[Any] = deque(maxlen=0)
TOO_SLOW = b"too slow: reconnect with ?after=<last id>"
_ENDED = (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR)


def drop_slow_socket(session: Session) -> None:
    """The socket fell too far behind (hub.py): no more frames, then close it with 4008."""
    assert isinstance(session, SocketSession)
    log.info("inbox %s: client too slow, closing with %s", session.object_id, CLOSE_TOO_SLOW)
    session.request.app[hub_key].discard(session)  # no more frames, whatever the close takes
    if session.backlog is not None:
        session.backlog.cancel()
    if session.ws.prepared:  # else it fell behind during its own handshake: see inbox()
        session.close_soon(CLOSE_TOO_SLOW, TOO_SLOW)


def shed_handshake(request: web.Request, ws: web.WebSocketResponse) -> None:
    """Let go of what only the handshake needed, which aiohttp would keep for the socket's
    whole life: the response's headers (written with the 101; nothing reads them again), the
    connection's HTTP parser and its queue of parsed requests (an upgraded connection's bytes
    all go to the WebSocket reader). The queue is swapped for one shared deque that cannot
    hold anything. Both are aiohttp internals: tests/test_aiohttp_contract_inbox.py fails if
    an aiohttp within the pinned range stops leaving them unused after an upgrade."""
    ws.headers.clear()
    protocol = request.protocol
    if protocol._upgraded and protocol._payload_parser is not None:
        protocol._parser = None
        if not protocol._messages:  # its queue of parsed requests, empty for good now
            protocol._messages = NO_MESSAGES


async def answer_client_message(session: SocketSession, text: str) -> None:
    """What a client may send: an ack, `{"ack": N}`.

    The object's read cursor moves as with POST /object/{id}/ack, and every inbox of the
    object, this one included, is told through the database like any other ack. An ack that
    is refused is answered with an error frame (the standard error body) and the socket stays
    open. Every other message is ignored, as it always was (a frame over 4 KiB has already
    closed the socket, 1009). Acks are handled one at a time, in order.
    """
    error = await client_ack(session.object_id, text, session.request.app[db_key])
    if error is not None:
        session.send(0, ws_text_frame(orjson.dumps(error, option=orjson.OPT_NON_STR_KEYS)))


async def client_ack(object_id: int, text: str, db: Database) -> dict[str, object] | None:
    """Apply `{"ack": N}`: the error body to answer with, or None (applied, or not an ack)."""
    try:
        message = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(message, dict) or "ack" not in message:
        return None
    try:
        alert_id = schemas.load(schemas.CLIENT_ACK_SCHEMA, message)["ack"]
        await db.ack(object_id, alert_id)
    except ServiceError as exc:
        return exc.body()
    return None


async def send_socket_backlog(session: SocketSession, db: Database, listener: Listener) -> None:
    ws, request = session.ws, session.request
    try:
        await send_backlog(session, db, listener)
    except ConnectionError:
        pass  # the peer is gone; the reading side sees it too and ends the session
    except DatabaseUnavailable:
        await close(ws, request, CLOSE_TRY_AGAIN, b"database unavailable: reconnect")
    except ServerBusy:  # no pooled connection came free in DB_TIMEOUT: as busy, not broken
        log.info("inbox %s: backlog not read, no database connection free", session.object_id)
        await close(ws, request, CLOSE_TRY_AGAIN, b"server busy: reconnect")
    except Exception:
        log.exception("inbox %s: sending the backlog failed", session.object_id)
        await close(ws, request, CLOSE_INTERNAL_ERROR, b"internal error")


async def close(ws: web.WebSocketResponse, request: web.Request, code: int, message: bytes) -> None:
    """Close with `code`; a peer that does not take the close frame in time is cut off."""
    try:
        await asyncio.wait_for(ws.close(code=code, message=message), CLOSE_TIMEOUT)
    except (TimeoutError, ConnectionError):
        if request.transport is not None:
            request.transport.abort()


# -- Server-Sent Events ----------------------------------------------------------------------


class EventStreamSession(Session):
    """An SSE stream: frames are events, carried as HTTP/1.1 chunks (or bare on HTTP/1.0,
    whose body ends when the connection closes).

    It also stands in for the connection's payload parser (`hear_disconnect`): aiohttp hands
    it whatever the client sends after its request, and tells it when the connection is lost.
    """

    __slots__ = ("chunked", "ended")

    def __init__(
        self,
        object_id: int,
        after: int,
        limit: int,
        on_overflow: Callable[[Session], None],
        *,
        chunked: bool,
    ) -> None:
        super().__init__(object_id, after, limit, on_overflow)
        self.chunked = chunked
        self.ended = asyncio.get_running_loop().create_future()

    def encode(self, prepared: Prepared) -> bytes:
        return prepared.sse_chunk if self.chunked else prepared.sse

    def end(self) -> None:
        if not self.ended.done():
            self.ended.set_result(None)

    async def going_away(self) -> None:
        self.end()

    def gone(self) -> None:
        self.end()

    # -- as the connection's payload parser (see `hear_disconnect`) --------------------------

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        """Bytes after the request: an SSE client has nothing to say, so they are dropped."""
        return False, b""

    def feed_eof(self) -> None:
        """The connection is lost."""
        self.end()


def hear_disconnect(request: web.Request, session: EventStreamSession) -> None:
    """End `session` the moment its connection is lost, not at the next write to it.

    Nothing reads an SSE request after its head, and aiohttp (with `handler_cancellation` off,
    as `inbox serve` runs it) tells the handler nothing; a client gone without a trace would be
    noticed only by the next keep-alive comment, up to SSE_KEEPALIVE_INTERVAL later, counted
    against WS_MAX_PER_OBJECT meanwhile (an EventSource reconnecting every few seconds would
    pile up streams). A connection with a payload parser (a WebSocket's reader) passes it every
    byte that arrives and calls its `feed_eof()` from `connection_lost`: the session takes that
    place. The stream's response turns keep-alive off, so the connection is never read as HTTP
    again. An aiohttp internal: tests/test_aiohttp_contract_inbox.py pins it.
    """
    protocol = request.protocol
    if protocol._payload_parser is None and not protocol._upgraded:
        protocol.set_parser(session)  # type: ignore[arg-type]  # it takes what a reader does


async def event_stream(request: web.Request, object_id: int, after: int) -> web.StreamResponse:
    config, db = request.app[config_key], request.app[db_key]
    chunked = request.version >= (1, 1)
    response = web.StreamResponse(
        headers={
            hdrs.CONTENT_TYPE: "text/event-stream; charset=utf-8",
            hdrs.CACHE_CONTROL: "no-cache",
            "X-Accel-Buffering": "no",  # nginx: pass each event on at once
        }
    )
    if chunked:
        response.enable_chunked_encoding()
    response.force_close()  # the connection ends with the stream (see hear_disconnect)

    def drop_slow(session: Session) -> None:
        log.info("inbox %s: SSE client too slow, ending its stream", object_id)
        request.app[hub_key].discard(session)
        assert isinstance(session, EventStreamSession)
        session.end()

    session = EventStreamSession(object_id, after, config.ws_queue_size, drop_slow, chunked=chunked)
    async with registered(request, session, response):  # before the backlog: see hub.py
        writer = await response.prepare(request)
        assert writer is not None
        # The headers and `retry:` leave together; from here on frames go to the transport.
        await response.write(b"retry: %d\n\n" % SSE_RETRY_MS)
        transport = request.transport
        if transport is None:
            return response
        session.attach(transport, writer.drain)
        hear_disconnect(request, session)
        keepalive = http_chunk(SSE_KEEPALIVE) if chunked else SSE_KEEPALIVE
        try:
            await send_backlog(session, db, request.app[listener_key])
            while not session.ended.done():
                await asyncio.wait({session.ended}, timeout=SSE_KEEPALIVE_INTERVAL)
                if session.ended.done():
                    break
                if session.transport is None or transport.is_closing():
                    break  # closing from our side (a write failed): nothing more to send
                session.send(0, keepalive)
        except (ConnectionError, DatabaseUnavailable) as exc:
            log.info("inbox %s: SSE stream ends: %s", object_id, type(exc).__name__)
    if not transport.is_closing():
        try:
            await asyncio.wait_for(response.write_eof(), CLOSE_TIMEOUT)
        except (TimeoutError, ConnectionError):
            transport.abort()
    return response


# -- the heartbeat of every WebSocket --------------------------------------------------------


async def ping_sockets(app: web.Application) -> AsyncIterator[None]:
    """The heartbeat of every WebSocket of the process (cleanup context): one task and one
    timer for all of them, instead of aiohttp's two timers, a task per ping and a larger
    attribute table on every socket (1.5 KiB of memory per socket once pinged)."""
    task = asyncio.create_task(
        ping_forever(app[hub_key], app[config_key].ws_heartbeat), name="inbox heartbeat"
    )
    yield
    task.cancel()
    with suppress(asyncio.CancelledError):
        await task


async def ping_forever(hub: Hub, interval: float) -> None:
    """Every `interval` seconds each open WebSocket gets a ping (`SocketSession.beat`), and one
    that has not answered the last is dropped: a peer is gone 1 to 2 intervals after it last
    spoke. Sockets are visited `SLICE` at a time, with a turn of the event loop in between, as
    the hub writes a burst."""
    while True:
        await asyncio.sleep(interval)
        sessions = [s for s in hub.sessions() if isinstance(s, SocketSession)]
        for start in range(0, len(sessions), SLICE):
            for session in sessions[start : start + SLICE]:
                session.beat()
            await asyncio.sleep(0)


# -- shutdown --------------------------------------------------------------------------------


async def close_all_inboxes(app: web.Application) -> None:
    """on_shutdown: tell every open stream that the server is going away (WebSocket: 1001)."""
    hub = app[hub_key]
    await hub.stop()
    closers = [asyncio.ensure_future(session.going_away()) for session in hub.sessions()]
    if closers:
        await asyncio.wait(closers, timeout=CLOSE_TIMEOUT)
