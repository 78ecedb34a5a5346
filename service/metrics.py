"""Prometheus metrics: one set per application, the request middleware, GET /metrics.

HTTP requests are counted by a middleware. The real-time path is counted elsewhere, as plain
numbers: the hub's `Meter` (frames sent, clients dropped as too slow, notification-to-send
latency) and the listener's own counters (alerts dispatched, LISTEN reconnects). `sync()`
copies those into the Prometheus metrics, as it reads the open sockets; /metrics also asks
PostgreSQL, with one query, how full its NOTIFY queue is.

With several worker processes (`inbox serve --workers W`, which sets PROMETHEUS_MULTIPROC_DIR
for them), prometheus_client's multiprocess mode keeps every worker's samples in files there,
and a scrape answered by any worker reports the whole server: counters and histograms summed
over the workers, open sockets summed over the live ones, LISTEN ready only if it is in every
live worker. Each worker copies its real-time numbers there every `SYNC_INTERVAL` seconds, and
at once when it answers a scrape. With one process, each application keeps its own registry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import hdrs, web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from .keys import (
    admission_key,
    alert_committer_key,
    config_key,
    db_key,
    gate_key,
    hub_key,
    listener_key,
    metrics_key,
    object_committer_key,
    sockets_key,
)
from .meter import BURST_BUCKETS, LATENCY_BUCKETS
from .wire import STATUS_CLIENT_GONE

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

UNMATCHED = "unmatched"  # one label for every path that matches no route, to bound cardinality
UNPARSED_METHOD = "UNKNOWN"  # the method label of a request the HTTP parser could not read
# prometheus_client reads it when it is first imported: `inbox serve --workers W` sets it in
# the parent before the workers start (cli.py).
MULTIPROC_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
SYNC_INTERVAL = 1.0  # seconds between copies of a worker's real-time numbers (multiprocess)


def multiprocess() -> bool:
    return bool(os.environ.get(MULTIPROC_DIR_ENV))


class Metrics:
    """The metrics of one application, and how to copy the real-time path's numbers in."""

    def __init__(self, app: web.Application) -> None:
        self.app = app
        self.multiprocess = multiprocess()
        # Multiprocess: the samples live in files, and a scrape collects them all.
        self.registry = None if self.multiprocess else CollectorRegistry()
        registry = self.registry
        self.requests = Counter(
            "inbox_http_requests",
            "HTTP requests answered, by route template, method and status",
            ["route", "method", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "inbox_http_request_duration_seconds",
            "time to answer an HTTP request (WebSocket sessions excluded), by route template",
            ["route", "method"],
            registry=registry,
        )
        self.queue_usage = Gauge(
            "inbox_pg_notification_queue_usage",
            "fraction of PostgreSQL's NOTIFY queue in use, read at scrape time "
            "(NaN when the database did not answer)",
            multiprocess_mode="mostrecent",
            registry=registry,
        )
        self.open_sockets = Gauge(
            "inbox_open_sockets",
            "inbox WebSockets and SSE streams open",
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.listener_ready = Gauge(
            "inbox_listener_ready",
            "1 when LISTEN is active and caught up (in every worker), else 0",
            multiprocess_mode="livemin",
            registry=registry,
        )
        self.open_connections = Gauge(
            "inbox_open_connections",
            "TCP connections open, in every state (waiting for a request, in one, sockets)",
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.connections_refused = Counter(
            "inbox_connections_refused",
            "connections answered 503 and closed at once: MAX_CONNECTIONS were open",
            registry=registry,
        )
        self.dispatched = Counter(
            "inbox_alerts_dispatched",
            "alerts handed to open sockets by the listener (each worker counts its own)",
            registry=registry,
        )
        self.reconnects = Counter(
            "inbox_listen_reconnects",
            "times the LISTEN connection was re-opened after failing or dropping",
            registry=registry,
        )
        self.frames_sent = Counter(
            "inbox_frames_sent", "alert frames written to WebSockets", registry=registry
        )
        self.dropped_slow = Counter(
            "inbox_clients_dropped_slow",
            "sockets closed with 4008 because their queue filled up",
            registry=registry,
        )
        self.notification_latency = Histogram(
            "inbox_notification_to_send_seconds",
            "from a NOTIFY reaching the process to the frame being written to a socket",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.beside_burst_latency = Histogram(
            "inbox_notification_to_send_beside_burst_seconds",
            "inbox_notification_to_send_seconds of the alerts published while a burst (see "
            "inbox_burst_seconds) was being written: their frames go ahead of the burst's rest",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.burst_seconds = Histogram(
            "inbox_burst_seconds",
            "from a NOTIFY reaching the process to the last frame of an alert for more open "
            "inboxes than one slice (500) written (or queued for a backed-up socket)",
            buckets=BURST_BUCKETS,
            registry=registry,
        )
        self.writes_in_flight = Gauge(
            "inbox_writes_in_flight",
            "POST /object and POST /alert requests being handled (at most WRITES_IN_FLIGHT each)",
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.writes_refused = Counter(
            "inbox_writes_refused",
            "writes refused with 503 server_busy because WRITES_IN_FLIGHT were in flight",
            registry=registry,
        )
        self.write_batches = Counter(
            "inbox_write_batches",
            "group-committed batches written (one statement, one transaction each), by kind",
            ["kind"],
            registry=registry,
        )
        self.writes_batched = Counter(
            "inbox_writes_batched",
            "alerts or objects written in group-committed batches, by kind",
            ["kind"],
            registry=registry,
        )
        # The labelled children the middleware uses, by label values: labels() takes a lock and
        # validates and joins its arguments on every call. A child is never removed, so a cached
        # one is the very object labels() would return.
        self._answered: dict[tuple[str, str, int], Counter] = {}
        self._timed: dict[tuple[str, str], Histogram] = {}
        self._copied: dict[str, float] = {}
        self._copied_buckets: dict[str, list[int]] = {}  # per histogram: counts copied so far

    def answered(self, route: str, method: str, status: int) -> Counter:
        """`requests` labelled with this route template, method and status."""
        key = (route, method, status)
        child = self._answered.get(key)
        if child is None:
            child = self._answered[key] = self.requests.labels(route, method, str(status))
        return child

    def timed(self, route: str, method: str) -> Histogram:
        """`latency` labelled with this route template and method."""
        key = (route, method)
        child = self._timed.get(key)
        if child is None:
            child = self._timed[key] = self.latency.labels(*key)
        return child

    def _add(self, counter: Counter, key: str, total: float) -> None:
        """Bring `counter` up to `total` (a running count kept elsewhere)."""
        delta = total - self._copied.get(key, 0)
        if delta > 0:
            counter.inc(delta)
            self._copied[key] = total

    def sync(self) -> None:
        """Copy the real-time path's plain numbers (hub meter, listener, sockets) in."""
        app = self.app
        meter = app[hub_key].meter
        listener = app.get(listener_key)
        self.open_sockets.set(len(app[sockets_key]))
        self.listener_ready.set(1 if listener is not None and listener.ready else 0)
        if listener is not None:
            self._add(self.dispatched, "dispatched", listener.dispatched)
            self._add(self.reconnects, "reconnects", listener.reconnects)
        gate = app.get(gate_key)
        if gate is not None:  # counted by the server `inbox serve` runs (server.py)
            self.open_connections.set(gate.open)
            self._add(self.connections_refused, "connections_refused", gate.refused)
            # Requests its parser refused never reach the middleware: counted as answers to
            # no route, with aiohttp's placeholder for the method it could not read.
            for status, count in gate.unparsed.items():
                answers = self.requests.labels(UNMATCHED, UNPARSED_METHOD, str(status))
                self._add(answers, f"unparsed {status}", count)
        admission = app.get(admission_key)
        if admission is not None:
            self.writes_in_flight.set(admission.in_flight)
            self._add(self.writes_refused, "writes_refused", admission.refused)
        for key in (alert_committer_key, object_committer_key):
            committer = app.get(key)
            if committer is not None:
                kind = committer.name
                self._add(self.write_batches.labels(kind), f"batches {kind}", committer.batches)
                self._add(self.writes_batched.labels(kind), f"batched {kind}", committer.items)
        self._add(self.frames_sent, "frames_sent", meter.frames_sent)
        self._add(self.dropped_slow, "dropped_slow", meter.dropped_slow)
        self._add_buckets(
            self.notification_latency, "latency", meter.latency_counts, meter.latency_sum
        )
        self._add_buckets(
            self.beside_burst_latency, "beside_burst", meter.beside_counts, meter.beside_sum
        )
        self._add_buckets(self.burst_seconds, "burst", meter.burst_counts, meter.burst_sum)

    def _add_buckets(self, histogram: Histogram, key: str, counts: list[int], total: float) -> None:
        """Copy what the meter counted since the last sync into `histogram`. The meter counts
        per bucket as a Histogram does; prometheus_client offers no public way to add counts to
        a bucket, so its (long stable) per-bucket values are used."""
        copied = self._copied_buckets.setdefault(key, [0] * len(counts))
        for i, count in enumerate(counts):
            if count > copied[i]:
                histogram._buckets[i].inc(count - copied[i])
                copied[i] = count
        self._add_sum(histogram, f"{key}_sum", total)

    def _add_sum(self, histogram: Histogram, key: str, total: float) -> None:
        delta = total - self._copied.get(key, 0.0)
        if delta > 0:
            histogram._sum.inc(delta)
            self._copied[key] = total

    def exposition(self) -> bytes:
        """The Prometheus text of this application, or of every worker (multiprocess)."""
        self.sync()
        registry = self.registry
        if registry is None:
            registry = CollectorRegistry()
            MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)


async def sync_context(app: web.Application) -> AsyncIterator[None]:
    """Multiprocess only: copy this worker's real-time numbers every SYNC_INTERVAL, so that a
    scrape answered by another worker sees them."""
    metrics = app[metrics_key]

    async def every_interval() -> None:
        while True:
            await asyncio.sleep(SYNC_INTERVAL)
            metrics.sync()

    task = asyncio.create_task(every_interval(), name="metrics-sync")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    metrics.sync()


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count every answer by route template and status; time those that are not WebSockets."""
    started = time.perf_counter()
    status, websocket = 500, False
    try:
        response = await handler(request)
        # An inbox (a WebSocket or an SSE stream) lasts as long as its client: not timed.
        status = response.status
        # The raw header first: parsing it (content_type) for every JSON answer costs more.
        websocket = isinstance(response, web.WebSocketResponse) or (
            "event-stream" in response.headers.get(hdrs.CONTENT_TYPE, "").lower()
            and response.content_type == "text/event-stream"
        )
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    except asyncio.CancelledError:
        status = STATUS_CLIENT_GONE
        raise
    finally:
        count_answer(request, status, None if websocket else time.perf_counter() - started)


def count_answer(request: web.Request, status: int, elapsed: float | None) -> None:
    """Count one answer by route template and status, and time it unless `elapsed` is None
    (also called by admission control for a write it refuses before this middleware runs)."""
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else UNMATCHED
    metrics = request.app[metrics_key]
    metrics.answered(route, request.method, status).inc()
    if elapsed is not None:
        metrics.timed(route, request.method).observe(elapsed)


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
    return web.Response(body=metrics.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST})
