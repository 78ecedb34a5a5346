"""HTTP and WebSocket handlers: parse -> validate (schemas) -> query (db) -> dump.

The inbox socket is the one long-lived handler. It registers its session with the hub *before*
reading the backlog, so an alert committing meanwhile is held back and de-duplicated rather
than missed, and a sender task per socket writes its frames (see hub.py).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson
from aiohttp import WSMsgType, web

from . import auth, batch, idempotency, schemas
from .body import read_body
from .db import Connection, Database, insert_alert, insert_object
from .errors import (
    DatabaseUnavailable,
    MalformedRequest,
    NotFound,
    TooManySockets,
    TooManySocketsForObject,
    UnsupportedMediaType,
)
from .hub import Session
from .keys import (
    admission_key,
    alert_committer_key,
    config_key,
    db_key,
    hub_key,
    listener_key,
    object_committer_key,
    sockets_key,
)
from .wire import CLOSE_GOING_AWAY, CLOSE_INTERNAL_ERROR, CLOSE_TOO_SLOW, CLOSE_TRY_AGAIN

log = logging.getLogger(__name__)

BACKLOG_PAGE = 1000
CLOSE_TIMEOUT = 2.0


def json_response(body: Any, status: int = 200) -> web.Response:
    # Non-string keys occur in validation errors of list items ({"object_ids": {"0": [...]}}).
    return web.Response(
        body=orjson.dumps(body, option=orjson.OPT_NON_STR_KEYS),
        status=status,
        content_type="application/json",
    )


async def read_json_object(request: web.Request) -> dict[str, Any]:
    """The body as a JSON object, or 415/400 with the standard error body."""
    if request.content_type != "application/json":
        raise UnsupportedMediaType("send the body as JSON with Content-Type: application/json")
    raw = await read_body(request)
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise MalformedRequest(f"the body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise MalformedRequest("the body must be a JSON object")
    return body


def path_id(request: web.Request, name: str) -> int:
    """An id from the path; one that cannot exist is simply not found."""
    raw = request.match_info[name]
    parsed = schemas.parse_id(raw)
    if parsed is None:
        raise NotFound(f"no {name.removesuffix('_id')} with id {raw[:32]!r}")
    return parsed


# -- objects ---------------------------------------------------------------------------------


def dump_object(request: web.Request, row: dict[str, Any]) -> dict[str, Any]:
    """The object, with its inbox token: whoever gets here holds a key or that very token
    (or access control is off), see auth.py."""
    body = schemas.dump_object(row)
    token = auth.token_for(request.app[config_key], row["id"])
    if token is not None:
        body["inbox_token"] = token
    return body


async def create_object(request: web.Request) -> web.Response:
    config = request.app[config_key]
    with request.app[admission_key].admit():  # before the body is read: refusing costs little
        body = await read_json_object(request)
        data = schemas.load(schemas.object_schema(config), body)
        if idempotency.request_key(request) is None:
            new = batch.NewObject(data["email"], data["phone_number"])
            row = await request.app[object_committer_key].submit(new)
            return json_response(dump_object(request, row))

        async def write(conn: Connection) -> dict[str, Any]:
            row = await insert_object(conn, data["email"], data["phone_number"])
            return dump_object(request, row)

        return await idempotency.respond_once(
            request, request.app[db_key], config.idempotency_ttl, data, write
        )


async def get_object(request: web.Request) -> web.Response:
    object_id = path_id(request, "object_id")
    row = await request.app[db_key].get_object(object_id)
    if row is None:
        raise NotFound(f"no object with id {object_id}")
    return json_response(dump_object(request, row))


# -- alerts ----------------------------------------------------------------------------------


async def create_alert(request: web.Request) -> web.Response:
    """Alerts to ids, without an Idempotency-Key, are group-committed (service/batch.py);
    alert_all and keyed alerts are written in a transaction of their own."""
    config = request.app[config_key]
    with request.app[admission_key].admit():
        body = await read_json_object(request)
        data = schemas.load(schemas.alert_schema(config), body)
        if data["object_ids"] is not None and idempotency.request_key(request) is None:
            new = batch.NewAlert(data["text"], data["object_ids"])
            row = await request.app[alert_committer_key].submit(new)
            return json_response(schemas.dump_alert(row))

        async def write(conn: Connection) -> dict[str, Any]:
            row = await insert_alert(conn, data["text"], data["object_ids"])
            return schemas.dump_alert(row)

        return await idempotency.respond_once(
            request, request.app[db_key], config.idempotency_ttl, data, write
        )


async def get_alert(request: web.Request) -> web.Response:
    """All of the alert for a key holder; for a recipient's token (`?object_id=`), the alert
    without the other recipients, and 404 for one not addressed to it, as for a missing one."""
    alert_id = path_id(request, "alert_id")
    scope = auth.alert_scope(request)
    db = request.app[db_key]
    if scope is None:
        row = await db.get_alert(alert_id)
    else:
        row = await db.get_alert_for_object(alert_id, scope)
    if row is None:
        raise NotFound(f"no alert with id {alert_id}")
    return json_response(schemas.dump_alert(row))


# -- health ----------------------------------------------------------------------------------


async def healthz(request: web.Request) -> web.Response:
    # Cheap figures for soak tests and dashboards: a leak shows as a number that only grows.
    return json_response(
        {
            "status": "ok",
            "tasks": len(asyncio.all_tasks()),
            "sockets": len(request.app[sockets_key]),
        }
    )


async def readyz(request: web.Request) -> web.Response:
    reasons = []
    try:
        await asyncio.wait_for(request.app[db_key].ping(), request.app[config_key].db_timeout)
    except Exception as exc:  # any failure means "not ready", with its reason
        reasons.append(f"database: {type(exc).__name__}")
    if not request.app[listener_key].ready:
        reasons.append("listener: LISTEN connection is down or catching up")
    if reasons:
        return json_response({"status": "unavailable", "reasons": reasons}, status=503)
    return json_response({"status": "ready"})


# -- the inbox -------------------------------------------------------------------------------


def parse_after(request: web.Request) -> int:
    raw = request.query.get("after", "0")
    if not raw.isascii() or not raw.isdigit() or len(raw) > 19 or int(raw) > schemas.MAX_ID:
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


async def inbox(request: web.Request) -> web.WebSocketResponse:
    """The inbox is one-way: frames the client sends are read and ignored (pings are answered;
    a frame over 4 KiB closes the socket with 1009, message too big)."""
    object_id = path_id(request, "object_id")
    after = parse_after(request)
    auth.check_origin(request)
    auth.check_inbox_token(request, object_id)
    db, hub, config = request.app[db_key], request.app[hub_key], request.app[config_key]
    if not await db.object_exists(object_id):
        raise NotFound(f"no object with id {object_id}")

    # The limits are checked and the socket counted with no await in between, so a burst of
    # connects cannot all slip past the same check.
    check_socket_limits(request, object_id)
    # No per-message deflate: frames are small, and compressing them would cost CPU per socket
    # for bytes that are otherwise encoded once and shared by every recipient.
    ws = web.WebSocketResponse(heartbeat=config.ws_heartbeat, max_msg_size=4096, compress=False)
    closing: list[asyncio.Task[None]] = []
    sender: asyncio.Task[None] | None = None
    message = b"too slow: reconnect with ?after=<last id>"

    def drop_slow(session: Session) -> None:
        log.info("inbox %s: client too slow, closing with %s", object_id, CLOSE_TOO_SLOW)
        hub.discard(session)  # no more frames for it, whatever its close handshake takes
        if sender is not None:
            sender.cancel()
        if ws.prepared:  # else it fell behind during its own handshake: see below
            closing.append(asyncio.create_task(close(ws, request, CLOSE_TOO_SLOW, message)))

    session = Session(object_id, after, config.ws_queue_size, drop_slow)
    sockets = request.app[sockets_key]
    sockets.add(ws)
    hub.add(session)  # before the backlog is read: see the module docstring
    try:
        await ws.prepare(request)
    except BaseException:
        hub.discard(session)
        sockets.discard(ws)
        raise
    if session.overflowed:
        closing.append(asyncio.create_task(close(ws, request, CLOSE_TOO_SLOW, message)))
    else:
        sender = asyncio.create_task(send_frames(ws, request, session, db))
    try:
        # This task reads (and ignores) what the client sends, so that pongs and the close
        # handshake are processed; the sender task writes. One socket costs two tasks.
        async for msg in ws:
            if msg.type == WSMsgType.ERROR:
                break
    finally:
        hub.discard(session)
        sockets.discard(ws)
        if sender is not None:
            sender.cancel()
        await asyncio.gather(*(t for t in (sender, *closing) if t), return_exceptions=True)
        if not ws.closed:
            # The peer vanished without a close frame (the handler is cancelled then): closing
            # stops the heartbeat, whose timer would otherwise hold the socket, its request and
            # buffers for up to 1.5 x WS_HEARTBEAT after the client is gone.
            await close(ws, request, CLOSE_GOING_AWAY, b"")
    return ws


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
        if ws.prepared  # one still in its handshake is cancelled with its handler
    ]
    if closers:
        await asyncio.wait(closers, timeout=CLOSE_TIMEOUT)
