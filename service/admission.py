"""Admission control for writes: each process bounds the POST /object and POST /alert it takes.

Two bounds, both checked when a write arrives:

- WRITES_IN_FLIGHT, a count: at most that many writes at once in this process;
- WRITES_MAX_WAIT, a time: none while the oldest write queued for a batch (service/batch.py)
  has waited longer than that. This one follows the database's commit rate as it moves (a
  slower disk, a second worker taking turns at the commit lock, a DBA holding the id lock), so
  accepted writes keep a bounded wait where a fixed count would let them queue behind it
  (the head's sojourn time, as CoDel judges a queue).

Past either, the request is refused at once with 503 `server_busy` and `Retry-After`. Under
overload a refusal is most of what the process answers, so it must cost little:

- A whole write request (head and Content-Length body) waiting on an idle keep-alive
  connection is refused by the connection's protocol before aiohttp builds a request for it
  (server.EarlyRefusals): canned bytes, about a sixth of the CPU of the middleware's refusal.
  It is counted in /metrics like the others; the access log gets one line per second summing
  those refusals up, not one line each.
- Anything else (half a request in the buffer, a head the protocol leaves to aiohttp) is
  refused by the outermost middleware (`admit_writes`), before the request id, the credential
  check, the metrics and the access log middlewares do their work and before any body byte is
  read. It gets its access log line, its X-Request-Id and its count in
  `inbox_http_requests_total`, written here directly.

A refusal answers a stranger too (503 before 401): it says only that the process is full, as
a connection past MAX_CONNECTIONS does.

The check and the count happen with no `await` between them, so a burst cannot overshoot the
bound.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from . import handlers, logs, metrics
from .errors import ServerBusy
from .keys import admission_key

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

WRITE_ROUTES = frozenset({"/object", "/alert"})  # POST to these is admitted or refused here


class Admission:
    """At most `limit` writes at once in this process (WRITES_IN_FLIGHT), and none while a
    watched queue's oldest item has waited more than `max_wait` seconds (WRITES_MAX_WAIT)."""

    def __init__(self, limit: int, max_wait: float) -> None:
        self.limit = limit
        self.max_wait = max_wait
        self.in_flight = 0
        self.refused = 0
        self._waits: list[Callable[[], float]] = []

    def watch(self, oldest_wait: Callable[[], float]) -> None:
        """Also refuse while `oldest_wait()` (seconds) is over `max_wait`."""
        self._waits.append(oldest_wait)

    def full(self) -> bool:
        """A write arriving now would be refused (nothing counted): the connection's protocol
        (server.py) asks this before it looks at what a client sent."""
        return self._why_full() is not None

    def refusal(self) -> str | None:
        """Why a write arriving now is refused (and counted as refused), or None: there is
        room for it. Also asked by the connection's protocol (server.py) before aiohttp reads
        a write request."""
        why = self._why_full()
        if why is not None:
            self.refused += 1
        return why

    def _why_full(self) -> str | None:
        if self.in_flight >= self.limit:
            return f"this server has {self.limit} writes in flight already; retry shortly"
        for oldest_wait in self._waits:
            if oldest_wait() > self.max_wait:
                return (
                    "writes queued here have waited more than "
                    f"{self.max_wait:g} s for a commit already; retry shortly"
                )
        return None

    def enter(self) -> None:
        """Count one more write in flight, or raise ServerBusy."""
        message = self.refusal()
        if message is not None:
            raise ServerBusy(message)
        self.in_flight += 1

    def leave(self) -> None:
        self.in_flight -= 1


@web.middleware
def admit_writes(request: web.Request, handler: Handler) -> Awaitable[web.StreamResponse]:
    """Admit a write (counted until it is answered) or refuse it at once, cheaply.

    Anything but a write is handed on as the handler's own awaitable: no coroutine of this
    middleware stays suspended beside a long request (an inbox socket)."""
    resource = request.match_info.route.resource
    if (
        request.method != "POST"
        or resource is None
        or resource.canonical not in WRITE_ROUTES
        or request.match_info.http_exception is not None
    ):
        return handler(request)
    return admit_write(request, handler)


async def admit_write(request: web.Request, handler: Handler) -> web.StreamResponse:
    admission = request.app[admission_key]
    started = time.perf_counter()
    try:
        admission.enter()
    except ServerBusy as exc:
        return refusal(request, exc, started)
    try:
        return await handler(request)
    finally:
        admission.leave()


def refusal(request: web.Request, exc: ServerBusy, started: float) -> web.Response:
    """The 503 as json_errors would answer it, with the access log line and the count the
    outer middlewares would have written."""
    response = handlers.json_response(exc.body(), status=exc.status)
    response.headers.update(exc.headers)
    request_id = logs.request_id_for(request)
    response.headers[logs.REQUEST_ID_HEADER] = request_id
    elapsed = time.perf_counter() - started
    metrics.count_answer(request, exc.status, elapsed)
    logs.log_access(request, request_id, exc.status, response.content_length or 0, elapsed)
    return response
