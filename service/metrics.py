"""Prometheus metrics: one registry per application, the request middleware, GET /metrics.

HTTP requests are counted by a middleware. The real-time path is counted elsewhere, as plain
numbers: the hub's `Meter` (frames sent, clients dropped as too slow, notification-to-send
latency) and the listener's own counters (alerts dispatched, LISTEN reconnects). A collector
reads those when /metrics is scraped, as it reads the open sockets and, with one query, how
full PostgreSQL's NOTIFY queue is. Each worker process answers for itself: the samples of a
scrape are those of the process that served it (`X-Inbox-Worker`).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterator

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector

from .keys import config_key, db_key, hub_key, listener_key, metrics_key, sockets_key
from .meter import LATENCY_BUCKETS
from .wire import STATUS_CLIENT_GONE

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

UNMATCHED = "unmatched"  # one label for every path that matches no route, to bound cardinality


class Metrics:
    """The registry of one application and the metrics the middleware updates."""

    def __init__(self, app: web.Application) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "inbox_http_requests",
            "HTTP requests answered, by route template, method and status",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "inbox_http_request_duration_seconds",
            "time to answer an HTTP request (WebSocket sessions excluded), by route template",
            ["route", "method"],
            registry=self.registry,
        )
        self.queue_usage = Gauge(
            "inbox_pg_notification_queue_usage",
            "fraction of PostgreSQL's NOTIFY queue in use, read at scrape time "
            "(NaN when the database did not answer)",
            registry=self.registry,
        )
        self.registry.register(RealtimeCollector(app))


class RealtimeCollector(Collector):
    """Samples of the real-time path, read from the application's objects at scrape time."""

    def __init__(self, app: web.Application) -> None:
        self.app = app

    def collect(self) -> Iterator[Metric]:
        app = self.app
        meter = app[hub_key].meter
        listener = app.get(listener_key)
        yield GaugeMetricFamily(
            "inbox_open_sockets", "inbox WebSockets open", value=len(app[sockets_key])
        )
        yield GaugeMetricFamily(
            "inbox_listener_ready",
            "1 when LISTEN is active and caught up, else 0",
            value=1 if listener is not None and listener.ready else 0,
        )
        yield CounterMetricFamily(
            "inbox_alerts_dispatched",
            "alerts handed to this process's open sockets by the listener",
            value=listener.dispatched if listener is not None else 0,
        )
        yield CounterMetricFamily(
            "inbox_listen_reconnects",
            "times the LISTEN connection was re-opened after failing or dropping",
            value=listener.reconnects if listener is not None else 0,
        )
        yield CounterMetricFamily(
            "inbox_frames_sent", "alert frames written to WebSockets", value=meter.frames_sent
        )
        yield CounterMetricFamily(
            "inbox_clients_dropped_slow",
            "sockets closed with 4008 because their queue filled up",
            value=meter.dropped_slow,
        )
        cumulative, buckets = 0, []
        for bound, count in zip((*LATENCY_BUCKETS, math.inf), meter.latency_counts, strict=True):
            cumulative += count
            buckets.append(("+Inf" if bound == math.inf else repr(bound), cumulative))
        yield HistogramMetricFamily(
            "inbox_notification_to_send_seconds",
            "from a NOTIFY reaching this process to the frame being written to a socket",
            buckets=buckets,
            sum_value=meter.latency_sum,
        )


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count every answer by route template and status; time those that are not WebSockets."""
    started = time.perf_counter()
    status, websocket = 500, False
    try:
        response = await handler(request)
        status, websocket = response.status, isinstance(response, web.WebSocketResponse)
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    except asyncio.CancelledError:
        status = STATUS_CLIENT_GONE
        raise
    finally:
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else UNMATCHED
        metrics = request.app[metrics_key]
        metrics.requests.labels(route, request.method, str(status)).inc()
        if not websocket:
            metrics.latency.labels(route, request.method).observe(time.perf_counter() - started)


async def metrics_handler(request: web.Request) -> web.Response:
    """GET /metrics: the Prometheus text format."""
    metrics = request.app[metrics_key]
    try:
        usage = await asyncio.wait_for(
            request.app[db_key].notification_queue_usage(), request.app[config_key].db_timeout
        )
    except Exception as exc:  # a scrape must still answer when the database does not
        log.warning("metrics: pg_notification_queue_usage() failed: %s", type(exc).__name__)
        usage = math.nan
    metrics.queue_usage.set(usage)
    return web.Response(
        body=generate_latest(metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
    )
