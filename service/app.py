"""The application factory: middlewares, routes and resources. It does no I/O itself.

Resources are cleanup contexts, in dependency order: the pool, then the listener that needs
it. The server accepts connections only after the listener is up and caught up, so no inbox
can connect while alerts would go unheard.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web

from . import auth, console, handlers, history, logs, metrics, openapi
from .config import Config
from .db import Database, create_pool
from .errors import ServiceError
from .hub import Hub
from .keys import config_key, db_key, hub_key, listener_key, metrics_key, sockets_key
from .listener import Listener

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# aiohttp's own HTTP errors, as stable codes for the standard error body.
HTTP_ERROR_CODES = {
    400: "malformed_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
}


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
        code = HTTP_ERROR_CODES.get(exc.status, exc.reason.lower().replace(" ", "_"))
        response = handlers.json_response({"error": code, "message": exc.reason}, exc.status)
        for header in ("Allow",):
            if header in exc.headers:
                response.headers[header] = exc.headers[header]
        return response
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return handlers.json_response(
            {"error": "internal_error", "message": "an unexpected error occurred"}, status=500
        )


def setup_routes(app: web.Application) -> None:
    app.router.add_post("/object", handlers.create_object)
    app.router.add_get("/object/{object_id}", handlers.get_object)
    app.router.add_get("/object/{object_id}/alerts", history.history)
    app.router.add_post("/object/{object_id}/ack", history.ack)
    app.router.add_post("/alert", handlers.create_alert)
    app.router.add_get("/alert/{alert_id}", handlers.get_alert)
    app.router.add_get("/inbox/{object_id}", handlers.inbox)
    app.router.add_get("/healthz", handlers.healthz)
    app.router.add_get("/readyz", handlers.readyz)
    app.router.add_get("/metrics", metrics.metrics_handler)
    app.router.add_get("/openapi.json", openapi.openapi_handler)
    app.router.add_get("/", console.index)
    app.router.add_get("/static/{filename}", console.static_file)


async def database_ctx(app: web.Application) -> AsyncIterator[None]:
    config = app[config_key]
    assert config.database_url is not None, "start the embedded server before the app"
    pool = await create_pool(
        config.database_url,
        min_size=config.db_pool_min_size,
        max_size=config.db_pool_max_size,
        timeout=config.db_timeout,
    )
    app[db_key] = Database(pool, timeout=config.db_timeout)
    yield
    await pool.close()


async def listener_ctx(app: web.Application) -> AsyncIterator[None]:
    config = app[config_key]
    dsn = config.listen_database_url or config.database_url
    assert dsn is not None
    listener = Listener(
        dsn,
        app[db_key],
        app[hub_key],
        timeout=config.db_timeout,
        reconnect_max=config.listen_reconnect_max,
        probe_interval=config.listen_probe_interval,
    )
    app[listener_key] = listener
    listener.start()
    try:
        await listener.wait_ready(timeout=config.db_timeout * 2)
    except TimeoutError:
        await listener.stop()
        raise
    yield
    await listener.stop()


def create_app(config: Config) -> web.Application:
    app = web.Application(
        middlewares=[
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
    app[metrics_key] = metrics.Metrics(app)
    app.on_response_prepare.append(logs.add_response_headers)
    setup_routes(app)
    app.cleanup_ctx.append(database_ctx)
    app.cleanup_ctx.append(listener_ctx)
    app.on_shutdown.append(handlers.close_all_inboxes)
    return app
