"""The pieces of the OpenAPI document that are not routes: its prose (the service, the inbox
WebSocket with its close codes, history pages, acks), the common parameters, the security
schemes and the requirement each kind of route declares. openapi.py assembles the document.
"""

from __future__ import annotations

from typing import Any

from .auth import Access, access_is_on
from .config import Config
from .wire import CLOSE_MEANINGS, SSE_KEEPALIVE_INTERVAL, SSE_RETRY_MS

DESCRIPTION = """\
Contacts ("objects") and alerts stored in PostgreSQL; each alert is pushed to the open inbox
WebSockets of its recipients the moment it commits.

Every request body is JSON (`Content-Type: application/json`). Every error answers with one
shape, `Error`: `{"error": "<code>", "message": "<text>"}`, plus `fields` for
`validation_failed`. Every response carries `X-Request-Id` (the client's own when it sent a
sane one) and `X-Inbox-Worker` (the pid of the process that answered).
"""

INBOX_DESCRIPTION = f"""\
A WebSocket (`GET` with `Upgrade: websocket`). The server sends every alert the object already
has with an id greater than `after`, oldest first, then each new one as it commits: one JSON
text frame per alert, shaped as the `AlertFrame` schema, for example

    {{"id": 7, "text": "Storm warning", "alert_all": false,
     "number_of_objects_receiving_alert": 3, "created_at": "2026-11-26T01:17:44.521340+00:00"}}

Each alert arrives exactly once and in id order; `after=acked` starts after the object's read
cursor (the backlog is then its unread alerts). The server pings every `WS_HEARTBEAT` seconds
and closes a peer that misses a pong. When the object's read cursor moves, the server sends
`{{"acked_alert_id": N, "unread": M}}` (`AckFrame`; never an alert: it has no `id`). The one
message a client may send is `{{"ack": N}}`, which moves the cursor like
`POST /object/{{object_id}}/ack` (a refused one is answered with an `Error` frame and the
socket stays open); every other message is ignored.

**Server-Sent Events**: the same `GET` with `Accept: text/event-stream` (and no upgrade)
answers 200 with a `text/event-stream`: `retry: {SSE_RETRY_MS}` first, then one event per alert
(`id: <alert id>`, `data: <the same AlertFrame JSON>`), read cursor moves as `event: ack`, and a
`: keep-alive` comment every {SSE_KEEPALIVE_INTERVAL:.0f} s. It resumes from the `Last-Event-ID`
header (which wins over `after`), as an `EventSource` does by itself. A stream that falls
`WS_QUEUE_SIZE` events behind, or whose server shuts down, simply ends: reconnect with
`Last-Event-ID` and nothing is missed. Every refusal (400, 401, 403, 404, 429, 503) comes
before the stream starts, as a JSON error body.

Close codes (after any of them, reconnect with `?after=<id of the last frame received>` and
nothing is missed):

| code | meaning |
| --- | --- |
""" + "".join(f"| {code} | {meaning} |\n" for code, meaning in CLOSE_MEANINGS.items())


HISTORY_DESCRIPTION = """\
The object's alerts with an id greater than `after`, oldest first, at most `limit` of them.
Each item of `alerts` is the very frame the inbox socket sends (`AlertFrame`), so following
`next_after` from `after=0` until `has_more` is false yields exactly the alerts a socket opened
with `?after=0` receives as its backlog, in the same order, each once. `next_after` is also the
`after` to poll with later: ids follow commit order, so nothing committed later is skipped.
"""

ACK_DESCRIPTION = """\
Moves the object's read cursor (`acked_alert_id`) up to `alert_id`, an alert of this object.
The cursor only moves forward: a lower `alert_id` is accepted and changes nothing, and acks
racing each other end at the highest. When it moves, every open inbox of the object, on every
process, receives `{"acked_alert_id": N, "unread": M}` (`AckFrame`; SSE `event: ack`). The
answer is the cursor as it stands and the alerts after it (`unread`).
"""

AFTER_PARAMETER = {
    "name": "after",
    "in": "query",
    "required": False,
    "description": "id of the last alert already seen, or `acked`: after the read cursor",
    "schema": {
        "oneOf": [
            {"type": "integer", "minimum": 0, "default": 0},
            {"type": "string", "enum": ["acked"]},
        ]
    },
}


IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "a retry with the same key and body returns the first response and writes "
    "nothing; the same key with another body is 422 idempotency_key_reused",
    "schema": {"type": "string", "minLength": 1, "maxLength": 255},
}


CONTENT_ENCODING = {
    "name": "Content-Encoding",
    "in": "header",
    "required": False,
    "description": "the body may be compressed; it is inflated at most to MAX_BODY_BYTES "
    "(413 past it); other codings are 415",
    "schema": {"type": "string", "enum": ["identity", "gzip", "x-gzip", "deflate"]},
}


SECURITY_SCHEMES: dict[str, dict[str, Any]] = {
    "apiKey": {
        "type": "http",
        "scheme": "bearer",
        "description": "one of API_KEYS, as `Authorization: Bearer <key>`; opens every route. "
        "Never in a URL.",
    },
    "inboxToken": {
        "type": "http",
        "scheme": "bearer",
        "description": "the object's `inbox_token` (with INBOX_SECRET), as "
        "`Authorization: Bearer <token>`; opens that object's routes and the alerts "
        "addressed to it",
    },
    "inboxTokenQuery": {
        "type": "apiKey",
        "in": "query",
        "name": "token",
        "description": "the same inbox token as `?token=`, for clients that cannot set headers "
        "(WebSocket, EventSource)",
    },
}


def security_for(config: Config, access: Access) -> list[dict[str, list[str]]]:
    """The OpenAPI security requirement (alternatives) of a route under `config`."""
    if access is Access.OPEN or not access_is_on(config):
        return []
    Requirement = dict[str, list[str]]
    key: list[Requirement] = [{"apiKey": []}] if config.api_keys else []
    if access is Access.API_KEY:
        return key
    tokens: list[Requirement] = (
        [{"inboxToken": []}, {"inboxTokenQuery": []}] if config.inbox_secret else []
    )
    return key + tokens
