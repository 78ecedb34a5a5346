"""The inbox socket: `WS /inbox/{object_id}`, its session with the hub, and how it closes.

The session is registered with the hub *before* the backlog is read, so an alert committing
meanwhile is held back and de-duplicated rather than missed (see hub.py); `registered` pairs
that registration with its removal. Client messages are read by `read_client_messages`, the one
place that decides what a client may send.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import WSMsgType, web

from . import auth, schemas
from .db import Database
from .errors import (
    DatabaseUnavailable,
    MalformedRequest,
    NotFound,
    TooManySockets,
    TooManySocketsForObject,
)
from .handlers import path_id
from .hub import CLOSE_GOING_AWAY, CLOSE_TOO_SLOW, Session
from .keys import config_key, db_key, hub_key, sockets_key

log = logging.getLogger(__name__)

BACKLOG_PAGE = 1000
CLOSE_TIMEOUT = 2.0
CLOSE_TRY_AGAIN = 1013  # the backlog could not be read: the database is unreachable
CLOSE_INTERNAL_ERROR = 1011
MAX_CLIENT_MESSAGE = 4096  # a larger client frame closes the socket with 1009


def parse_after(request: web.Request) -> int:
    raw = request.query.get("after", "0")
    if not raw.isascii() or not raw.isdigit() or int(raw) > schemas.MAX_ID:
        raise MalformedRequest("after must be the id of the last alert received (an integer >= 0)")
    return int(raw)


def check_socket_limits(request: web.Request, object_id: int) -> None:
    """Refuse before the upgrade: 429 for one object's too many sockets, 503 when full."""
    config = request.app[config_key]
    if request.app[hub_key].count_for(object_id) >= config.ws_max_per_object:
        raise TooManySocketsForObject(
            f"object {object_id} has {config.ws_max_per_object} open inbox sockets already"
        )
    if len(request.app[sockets_key]) >= config.ws_max_per_process:
        raise TooManySockets("this server has no room for another socket; retry shortly")


@asynccontextmanager
async def registered(
    request: web.Request, session: Session, stream: web.StreamResponse
) -> AsyncIterator[Session]:
    """The session is in the hub (and counted against the limits) exactly while this is open.

    The limits are checked and the stream counted with no await in between, so a burst of
    connects cannot all slip past the same check.
    """
    hub, streams = request.app[hub_key], request.app[sockets_key]
    check_socket_limits(request, session.object_id)
    streams.add(stream)
    hub.add(session)
    try:
        yield session
    finally:
        hub.discard(session)
        streams.discard(stream)


async def inbox(request: web.Request) -> web.StreamResponse:
    """`GET /inbox/{object_id}`: the inbox as a WebSocket."""
    object_id = path_id(request, "object_id")
    after = parse_after(request)
    auth.check_origin(request)
    auth.check_inbox_token(request, object_id)
    db, config = request.app[db_key], request.app[config_key]
    if not await db.object_exists(object_id):
        raise NotFound(f"no object with id {object_id}")

    # No per-message deflate: frames are small, and compressing them would cost CPU per socket
    # for bytes that are otherwise encoded once and shared by every recipient.
    ws = web.WebSocketResponse(
        heartbeat=config.ws_heartbeat, max_msg_size=MAX_CLIENT_MESSAGE, compress=False
    )
    closing: list[asyncio.Task[None]] = []
    sender: asyncio.Task[None] | None = None
    message = b"too slow: reconnect with ?after=<last id>"

    def drop_slow(session: Session) -> None:
        log.info("inbox %s: client too slow, closing with %s", object_id, CLOSE_TOO_SLOW)
        request.app[hub_key].discard(session)  # no more frames, whatever its close handshake takes
        if sender is not None:
            sender.cancel()
        if ws.prepared:  # else it fell behind during its own handshake: see below
            closing.append(asyncio.create_task(close(ws, request, CLOSE_TOO_SLOW, message)))

    session = Session(object_id, after, config.ws_queue_size, drop_slow)
    try:
        async with registered(request, session, ws):  # before the backlog is read: see hub.py
            await ws.prepare(request)
            if session.overflowed:
                closing.append(asyncio.create_task(close(ws, request, CLOSE_TOO_SLOW, message)))
            else:
                sender = asyncio.create_task(send_frames(ws, request, session, db))
            try:
                await read_client_messages(ws, session)
            finally:
                if sender is not None:
                    sender.cancel()
                await asyncio.gather(*(t for t in (sender, *closing) if t), return_exceptions=True)
    finally:
        if ws.prepared and not ws.closed:
            # The peer vanished without a close frame (the handler is cancelled then): closing
            # stops the heartbeat, whose timer would otherwise hold the socket, its request and
            # buffers for up to 1.5 x WS_HEARTBEAT after the client is gone.
            await close(ws, request, CLOSE_GOING_AWAY, b"")
    return ws


async def read_client_messages(ws: web.WebSocketResponse, session: Session) -> None:
    """Read what the client sends until the socket closes.

    Reading is what processes pongs and the close handshake. The inbox is one-way today: text
    and binary messages are ignored (a frame over 4 KiB has already closed the socket, 1009).
    """
    async for msg in ws:
        if msg.type == WSMsgType.ERROR:
            break


async def send_frames(
    ws: web.WebSocketResponse, request: web.Request, session: Session, db: Database
) -> None:
    """Backlog first (in pages, oldest first), then live frames as the hub queues them."""
    try:
        last = session.last_id
        while True:
            # Shielded: a socket closed mid-backlog cancels this task, and a query cancelled
            # between asyncpg's prepare (Parse/Describe/Flush) and its execution leaves the
            # server waiting for a Sync inside an open transaction, holding its table locks
            # (a TRUNCATE or ALTER would then wait forever). The page is read to the end.
            page = await asyncio.shield(db.inbox_page(session.object_id, last, BACKLOG_PAGE))
            for alert_id, frame in page:
                await ws.send_frame(frame, WSMsgType.TEXT)
                session.meter.sent_backlog()
                last = alert_id
            if len(page) < BACKLOG_PAGE:
                break
        session.start_live(last)
        while True:
            alert_id, frame = await session.queue.get()
            await ws.send_frame(frame, WSMsgType.TEXT)  # the same bytes for every recipient
            session.meter.sent(alert_id)
    except ConnectionError:
        pass  # the peer is gone; the reading side sees it too and ends the session
    except DatabaseUnavailable:
        await close(ws, request, CLOSE_TRY_AGAIN, b"database unavailable: reconnect")
    except Exception:
        log.exception("inbox %s: sending failed", session.object_id)
        await close(ws, request, CLOSE_INTERNAL_ERROR, b"internal error")


async def close(ws: web.WebSocketResponse, request: web.Request, code: int, message: bytes) -> None:
    """Close with `code`; a peer that does not take the close frame in time is cut off."""
    try:
        await asyncio.wait_for(ws.close(code=code, message=message), CLOSE_TIMEOUT)
    except (TimeoutError, ConnectionError):
        if request.transport is not None:
            request.transport.abort()


async def close_all_inboxes(app: web.Application) -> None:
    """on_shutdown: tell every open socket that the server is going away (1001)."""
    sockets = app[sockets_key]
    closers = [
        asyncio.ensure_future(ws.close(code=CLOSE_GOING_AWAY, message=b"server shutdown"))
        for ws in list(sockets)
        # one still in its handshake is cancelled with its handler
        if isinstance(ws, web.WebSocketResponse) and ws.prepared
    ]
    if closers:
        await asyncio.wait(closers, timeout=CLOSE_TIMEOUT)
