"""The application factory: middlewares, routes and resources. It does no I/O itself.

Resources are cleanup contexts, each defined beside its resource (db.pool_context,
batch.committers_context, listener.listener_context) and added here in dependency order: the
pool, then the committers (group commit) and the listener that need it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from . import (
    admission,
    auth,
    batch,
    console,
    errors,
    handlers,
    history,
    inbox,
    logs,
    metrics,
    openapi,
)
from .config import Config
from .db import pool_context
from .errors import ServiceError
from .hub import Hub
from .keys import admission_key, config_key, hub_key, metrics_key, sockets_key
from .listener import listener_context
from .wire import STATUS_CLIENT_GONE

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error leaves as {"error": code, "message": text}; nothing leaves as a traceback."""
    try:
        return await handler(request)
    except ServiceError as exc:
        response = handlers.json_response(exc.body(), status=exc.status)
        response.headers.update(exc.headers)
        return response
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        known = errors.BY_AIOHTTP_STATUS.get(exc.status)
        code = known.code if known else exc.reason.lower().replace(" ", "_")
        response = handlers.json_response({"error": code, "message": exc.reason}, exc.status)
        for header in ("Allow",):
            if header in exc.headers:
                response.headers[header] = exc.headers[header]
        return response
    except ConnectionError:
        if request.transport is None or request.transport.is_closing():
            # The peer went away under the handler (a WebSocket handshake reset, a write to a
            # socket it dropped): its doing, not ours. Nobody is left to read an answer; this
            # one is for the access log and the metrics, and aiohttp drops it quietly.
            log.info("client went away during %s %s", request.method, request.path)
            return web.Response(status=STATUS_CLIENT_GONE)
        log.exception("unhandled error in %s %s", request.method, request.path)
        return internal_error()
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return internal_error()


def internal_error() -> web.Response:
    internal = errors.ServiceError("an unexpected error occurred")
    return handlers.json_response(internal.body(), status=internal.status)


def setup_routes(app: web.Application) -> None:
    app.router.add_post("/object", handlers.create_object)
    app.router.add_get("/object/{object_id}", handlers.get_object)
    app.router.add_get("/object/{object_id}/alerts", history.history)
    app.router.add_post("/object/{object_id}/ack", history.ack)
    app.router.add_post("/alert", handlers.create_alert)
    app.router.add_get("/alert/{alert_id}", handlers.get_alert)
    app.router.add_get("/inbox/{object_id}", inbox.inbox)
    app.router.add_get("/healthz", handlers.healthz)
    app.router.add_get("/readyz", handlers.readyz)
    app.router.add_get("/metrics", metrics.metrics_handler)
    app.router.add_get("/openapi.json", openapi.openapi_handler)
    app.router.add_get("/", console.index)
    app.router.add_get("/static/{filename}", console.static_file)


def create_app(config: Config, database_url: str) -> web.Application:
    """The application for `config` on `database_url`, the database start-up settled on (the
    configured server, or the embedded one it started)."""
    app = web.Application(
        middlewares=[
            admission.admit_writes,  # first: a refused write costs little (admission.py)
            logs.access_log_middleware,
            metrics.metrics_middleware,
            json_errors,
            auth.access_control,
        ],
        client_max_size=config.max_body_bytes,
    )
    auth.warn_if_open(config)
    app[config_key] = config
    app[hub_key] = Hub()
    app[sockets_key] = set()
    app[admission_key] = admission.Admission(config.writes_bound(), config.writes_max_wait)
    app[metrics_key] = metrics.Metrics(app)
    app.on_response_prepare.append(logs.add_response_headers)
    setup_routes(app)
    app.cleanup_ctx.append(pool_context(database_url))
    app.cleanup_ctx.append(batch.committers_context)
    app.cleanup_ctx.append(listener_context(config.listen_database_url or database_url))
    app.cleanup_ctx.append(inbox.ping_sockets)
    if app[metrics_key].multiprocess:
        app.cleanup_ctx.append(metrics.sync_context)
    app.on_shutdown.append(inbox.close_all_inboxes)
    return app
