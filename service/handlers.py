"""HTTP handlers: parse -> validate (schemas) -> query (db) -> dump.

The inbox (the one long-lived handler) has its own module, inbox.py.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson
from aiohttp import web

from . import auth, batch, idempotency, schemas
from .body import read_body
from .db import Connection, insert_alert, insert_object
from .errors import MalformedRequest, NotFound, UnsupportedMediaType
from .keys import (
    admission_key,
    alert_committer_key,
    config_key,
    db_key,
    listener_key,
    object_committer_key,
    sockets_key,
)

log = logging.getLogger(__name__)


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
