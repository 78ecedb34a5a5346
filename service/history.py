"""An object's inbox over plain HTTP: its history in pages, and its read cursor (acks).

- `GET /object/{id}/alerts?after=&limit=`: the object's alerts with id > `after`, oldest
  first, as the very frames its inbox socket sends (built once by `alert_frame()` in
  PostgreSQL), so pages read one after another add up to exactly the socket's backlog.
- `POST /object/{id}/ack {"alert_id": N}`: the read cursor moves up to N, never back. The
  database notifies every process at COMMIT (migration 0004); each process's listener tells
  that object's open inboxes.

`after=acked` (here and on the inbox) starts after the stored cursor.
"""

from __future__ import annotations

from aiohttp import web

from . import auth, schemas
from .db import Database
from .errors import MalformedRequest, NotFound
from .handlers import json_response, path_id, read_json_object
from .keys import db_key

HISTORY_DEFAULT_LIMIT = 100
HISTORY_MAX_LIMIT = 1000  # the inbox's backlog page: one page is one bounded query
AFTER_ACKED = "acked"


def parse_after(request: web.Request) -> int | None:
    """`after` as an id, or None for `acked` (the stored cursor, read later); 400 otherwise."""
    raw = request.query.get("after", "0")
    if raw == AFTER_ACKED:
        return None
    # The length check first: int() refuses strings of more than 4300 digits with ValueError.
    if not raw.isascii() or not raw.isdigit() or len(raw) > 19 or int(raw) > schemas.MAX_ID:
        raise MalformedRequest(
            "after must be the id of the last alert received (an integer >= 0) or 'acked'"
        )
    return int(raw)


async def resolve_after(db: Database, object_id: int, after: int | None) -> int:
    """The id to start after: `after` itself, or the object's read cursor (404 if no object)."""
    if after is not None:
        return after
    cursor = await db.read_cursor(object_id)
    if cursor is None:
        raise NotFound(f"no object with id {object_id}")
    return cursor


def parse_limit(request: web.Request) -> int:
    raw = request.query.get("limit", str(HISTORY_DEFAULT_LIMIT))
    if (
        not raw.isascii()
        or not raw.isdigit()
        or len(raw) > 19  # before int(): it refuses more than 4300 digits
        or not 1 <= int(raw) <= HISTORY_MAX_LIMIT
    ):
        raise MalformedRequest(f"limit must be an integer from 1 to {HISTORY_MAX_LIMIT}")
    return int(raw)


async def history(request: web.Request) -> web.Response:
    object_id = path_id(request, "object_id")
    after, limit = parse_after(request), parse_limit(request)
    auth.check_object_access(request, object_id)  # also done by the access middleware
    db = request.app[db_key]
    start = await resolve_after(db, object_id, after)
    # One more than asked: whether a next page exists, without a count.
    page = await db.inbox_page(object_id, start, limit + 1)
    more = len(page) > limit
    page = page[:limit]
    if not page and after is not None and not await db.object_exists(object_id):
        raise NotFound(f"no object with id {object_id}")
    next_after = page[-1][0] if page else start
    # The frames are JSON text already: the page is spliced from them, not re-encoded.
    body = b"".join(
        (
            b'{"alerts":[',
            b",".join(frame for _, frame in page),
            b'],"next_after":%d,"has_more":%s}' % (next_after, b"true" if more else b"false"),
        )
    )
    response = web.Response(body=body, content_type="application/json")
    if more:
        others = {k: v for k, v in request.query.items() if k not in ("after", "limit")}
        url = request.rel_url.with_query({"after": next_after, "limit": limit, **others})
        response.headers["Link"] = f'<{url}>; rel="next"'
    return response


async def ack(request: web.Request) -> web.Response:
    object_id = path_id(request, "object_id")
    auth.check_object_access(request, object_id)  # also done by the access middleware
    body = await read_json_object(request)
    alert_id = schemas.load(schemas.ACK_SCHEMA, body)["alert_id"]
    acked, unread = await request.app[db_key].ack(object_id, alert_id)
    return json_response({"object_id": object_id, "acked_alert_id": acked, "unread": unread})
