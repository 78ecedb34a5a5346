"""The OpenAPI 3 document of the service, generated from the marshmallow schemas (apispec).

Request bodies come from the validation schemas themselves (built with the running
configuration, so limits such as the longest alert text are the real ones); responses from the
response schemas in schemas.py; error responses from the error classes (errors.py); prose,
parameters and security schemes from apidoc.py. A test checks that every route the application
registers is described here. GET /openapi.json serves it.
"""

from __future__ import annotations

import functools
from typing import Any

from aiohttp import web
from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin

from . import __version__, errors, schemas
from .apidoc import (
    ACK_DESCRIPTION,
    AFTER_PARAMETER,
    CONTENT_ENCODING,
    DESCRIPTION,
    HISTORY_DESCRIPTION,
    IDEMPOTENCY_KEY,
    INBOX_DESCRIPTION,
    SECURITY_SCHEMES,
    security_for,
)
from .auth import access_of
from .config import Config
from .keys import config_key


def _error(description: str) -> dict[str, Any]:
    return _json(description, schemas.Error)


def _json(description: str, schema: Any) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _plain(description: str, *media_types: str) -> dict[str, Any]:
    text = {"schema": {"type": "string"}}
    return {"description": description, "content": dict.fromkeys(media_types, text)}


def _body(schema: Any) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def _path_id(name: str, what: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": f"id of the {what}; one that cannot exist is simply not found",
        "schema": {"type": "integer", "minimum": 1, "maximum": schemas.MAX_ID},
    }


# Every error class, by class name: one reusable response each, `<code>: <meaning>`.
ERRORS: dict[str, type[errors.ServiceError]] = {cls.__name__: cls for cls in errors.documented()}


def secure(document: dict[str, Any], config: Config) -> None:
    """Declare on every operation what `auth` really asks of it, and its 401/403 answers."""
    document.setdefault("components", {})["securitySchemes"] = SECURITY_SCHEMES
    for path, operations in document["paths"].items():
        for operation in operations.values():
            security = security_for(config, access_of(path))
            operation["security"] = security
            if security:
                for status, response in _errors("Unauthorized", "Forbidden").items():
                    operation["responses"].setdefault(status, response)


def _errors(*names: str) -> dict[str, Any]:
    return {str(ERRORS[name].status): {"$ref": f"#/components/responses/{name}"} for name in names}


WRITE_ERRORS = (
    "MalformedRequest",
    "RequestTimeout",
    "PayloadTooLarge",
    "UnsupportedMediaType",
    "ValidationFailed",
    "DatabaseUnavailable",
)


def _write_errors() -> dict[str, Any]:
    """The POSTs' errors; their 503 is either of two codes (one response per status)."""
    busy, down = errors.ServerBusy, errors.DatabaseUnavailable
    return {
        **_errors(*WRITE_ERRORS),
        "503": {
            **_error(f"{down.code}: {down.meaning}; or {busy.code}: {busy.meaning}"),
            "headers": {
                "Retry-After": {
                    "description": f"with {busy.code}: seconds to wait before retrying",
                    "schema": {"type": "integer"},
                }
            },
        },
    }


@functools.lru_cache(maxsize=8)
def build(config: Config) -> dict[str, Any]:
    """The document for an application running with `config`."""
    spec = APISpec(
        title="inbox",
        version=__version__,
        openapi_version="3.0.3",
        plugins=[MarshmallowPlugin()],
        info={"description": DESCRIPTION},
    )
    object_create, alert_create = schemas.ObjectCreate(config), schemas.AlertCreate(config)
    for name, schema in (
        ("Error", schemas.Error),
        ("Object", schemas.ObjectOut),
        ("Alert", schemas.AlertOut),
        ("AlertFrame", schemas.AlertFrame),
        ("HistoryPage", schemas.HistoryPage),
        ("AckCreate", schemas.ACK_SCHEMA),
        ("AckOut", schemas.AckOut),
        ("AckFrame", schemas.AckFrame),
        ("Health", schemas.Health),
        ("Ready", schemas.Ready),
        ("ObjectCreate", object_create),
        ("AlertCreate", alert_create),
    ):
        spec.components.schema(name, schema=schema)
    for name, cls in ERRORS.items():
        spec.components.response(name, _error(f"{cls.code}: {cls.meaning}"))

    spec.path(
        path="/object",
        operations={
            "post": {
                "summary": "Create an object (a contact)",
                "description": "The email is stored normalised, the phone number in E.164 "
                "(numbers without +country are read in PHONE_DEFAULT_REGION).",
                "parameters": [IDEMPOTENCY_KEY, CONTENT_ENCODING],
                "requestBody": _body(object_create),
                "responses": {
                    "200": _json("the object as stored", schemas.ObjectOut),
                    **_write_errors(),
                },
            }
        },
    )
    spec.path(
        path="/object/{object_id}",
        operations={
            "get": {
                "summary": "Read an object",
                "parameters": [_path_id("object_id", "object")],
                "responses": {
                    "200": _json("the object", schemas.ObjectOut),
                    **_errors("NotFound", "DatabaseUnavailable"),
                },
            }
        },
    )
    spec.path(
        path="/object/{object_id}/alerts",
        operations={
            "get": {
                "summary": "Read an object's alerts, oldest first, a page at a time",
                "description": HISTORY_DESCRIPTION,
                "parameters": [
                    _path_id("object_id", "object"),
                    AFTER_PARAMETER,
                    {
                        "name": "limit",
                        "in": "query",
                        "required": False,
                        "description": "most alerts on the page",
                        "schema": {
                            "type": "integer",
                            "minimum": 1,
                            "maximum": 1000,
                            "default": 100,
                        },
                    },
                ],
                "responses": {
                    "200": {
                        **_json("one page", schemas.HistoryPage),
                        "headers": {
                            "Link": {
                                "description": '`<...?after=N&limit=L>; rel="next"` when a '
                                "next page exists",
                                "schema": {"type": "string"},
                            }
                        },
                    },
                    "400": _error(
                        "malformed_request: `after` or `limit` is malformed or out of range"
                    ),
                    **_errors("NotFound", "DatabaseUnavailable"),
                },
            }
        },
    )
    spec.path(
        path="/object/{object_id}/ack",
        operations={
            "post": {
                "summary": "Mark every alert of the object up to `alert_id` as read",
                "description": ACK_DESCRIPTION,
                "parameters": [_path_id("object_id", "object"), CONTENT_ENCODING],
                "requestBody": _body(schemas.ACK_SCHEMA),
                "responses": {
                    "200": _json("the read cursor as it stands now", schemas.AckOut),
                    **_errors("NotFound", *WRITE_ERRORS),
                    "422": _error(
                        "validation_failed: `alert_id` is missing, not an id, or not an alert "
                        "of this object (`fields.alert_id` says which)"
                    ),
                },
            }
        },
    )
    spec.path(
        path="/alert",
        operations={
            "post": {
                "summary": "Create an alert",
                "description": "`object_ids` is required unless `alert_all` is true (then it "
                f"must be empty or absent); at most {config.alert_max_object_ids} ids. Ids that "
                "do not exist are not counted; duplicates count once.",
                "parameters": [IDEMPOTENCY_KEY, CONTENT_ENCODING],
                "requestBody": _body(alert_create),
                "responses": {
                    "200": _json(
                        "the alert as stored, with its recipients counted", schemas.AlertOut
                    ),
                    **_write_errors(),
                },
            }
        },
    )
    spec.path(
        path="/alert/{alert_id}",
        operations={
            "get": {
                "summary": "Read an alert",
                "description": "With an API key, the whole alert. With a recipient's inbox "
                "token, name that recipient with `object_id`: the alert is shown without the "
                "other recipients, and one not addressed to it is 404 like a missing one.",
                "parameters": [
                    _path_id("alert_id", "alert"),
                    {
                        "name": "object_id",
                        "in": "query",
                        "required": False,
                        "description": "the recipient whose inbox token is presented",
                        "schema": {"type": "integer", "minimum": 1, "maximum": schemas.MAX_ID},
                    },
                ],
                "responses": {
                    "200": _json("the alert", schemas.AlertOut),
                    **_errors("NotFound", "DatabaseUnavailable"),
                },
            }
        },
    )
    spec.path(
        path="/inbox/{object_id}",
        operations={
            "get": {
                "summary": "Watch an object's inbox (WebSocket or Server-Sent Events)",
                "description": INBOX_DESCRIPTION,
                "parameters": [
                    _path_id("object_id", "object"),
                    AFTER_PARAMETER,
                    {
                        "name": "Last-Event-ID",
                        "in": "header",
                        "required": False,
                        "description": "SSE only: id of the last event received; wins over after",
                        "schema": {"type": "integer", "minimum": 0},
                    },
                ],
                "responses": {
                    "200": _plain(
                        "with Accept: text/event-stream, the inbox as Server-Sent Events",
                        "text/event-stream",
                    ),
                    "101": {
                        "description": "switching to the WebSocket protocol; frames are "
                        "`AlertFrame` JSON text",
                        "content": {"application/json": {"schema": schemas.AlertFrame}},
                    },
                    "400": _error(
                        f"{errors.MalformedRequest.code}: `after` or `Last-Event-ID` is not "
                        "an integer >= 0"
                    ),
                    "403": _error(
                        f"{errors.Forbidden.code}: a wrong credential, or an Origin not in "
                        "ALLOWED_ORIGINS"
                    ),
                    **_errors("TooManySocketsForObject", "NotFound"),
                    "503": _error(
                        f"{errors.DatabaseUnavailable.code}, or {errors.TooManySockets.code}: "
                        f"{errors.TooManySockets.meaning}"
                    ),
                },
            }
        },
    )
    spec.path(
        path="/healthz",
        operations={
            "get": {
                "summary": "Liveness: the process answers (no database check)",
                "responses": {"200": _json("alive", schemas.Health)},
            }
        },
    )
    spec.path(
        path="/readyz",
        operations={
            "get": {
                "summary": "Readiness: the database answers and LISTEN is up and caught up",
                "responses": {
                    "200": _json("ready to serve", schemas.Ready),
                    "503": _json("not ready; `reasons` says why", schemas.Ready),
                },
            }
        },
    )
    spec.path(
        path="/metrics",
        operations={
            "get": {
                "summary": "Prometheus metrics of the process that answers",
                "responses": {
                    "200": _plain("Prometheus text exposition format 0.0.4", "text/plain")
                },
            }
        },
    )
    spec.path(
        path="/openapi.json",
        operations={
            "get": {
                "summary": "This document",
                "responses": {"200": _json("OpenAPI 3 document", {"type": "object"})},
            }
        },
    )
    spec.path(
        path="/",
        operations={
            "get": {
                "summary": "The browser console: create objects, send alerts, watch inboxes",
                "responses": {"200": _plain("an HTML page", "text/html")},
            }
        },
    )
    spec.path(
        path="/static/{filename}",
        operations={
            "get": {
                "summary": "The console's script and style sheet",
                "parameters": [
                    {
                        "name": "filename",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string", "enum": ["app.js", "style.css"]},
                    }
                ],
                "responses": {
                    "200": _plain("the file", "text/javascript", "text/css"),
                    **_errors("NotFound"),
                },
            }
        },
    )
    document: dict[str, Any] = spec.to_dict()
    secure(document, config)
    return document


async def openapi_handler(request: web.Request) -> web.Response:
    return web.json_response(build(request.app[config_key]))
