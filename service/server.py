"""The HTTP server around the application: connection-level limits and timeouts.

aiohttp's defaults suit a trusted network: a connection may sit an hour without sending a
request (keep-alive 3,630 s), a body is inflated as it arrives whatever the route, `100
Continue` is sent before the application has looked at the request, and nothing bounds how
many connections a process holds. `serve` (what `inbox serve` runs) changes that:

- HTTP_HEADER_TIMEOUT: a connection must send a complete request head within this many
  seconds of opening, and of the end of its previous response (the keep-alive idle time);
  else it is closed. This is aiohttp's keep-alive timer, which covers both waits, and so also
  a head sent byte by byte (slowloris).
- A body its route does not read is drained for at most LINGER seconds, as raw bytes, then the
  connection is closed; a body a route reads is bounded by body.py (HTTP_BODY_TIMEOUT).
- Bodies are never inflated by aiohttp (`auto_decompress` off): body.py does it, bounded, for
  the routes that read one.
- `Expect` is taken off the request before the application sees it, so aiohttp does not
  answer `100 Continue` before routing and access control; body.py sends it when a route that
  accepted the caller starts reading.
- MAX_CONNECTIONS: every open connection is counted, whatever its state (waiting for a head,
  in a request, an inbox socket). One more is answered 503 `server_busy` and closed at once,
  so a flood cannot exhaust the process's file descriptors; the open-files limit is raised to
  fit at start-up (or the bound lowered to fit it, with a WARNING).
- A write refused by admission control (admission.py) is answered here when the whole request
  is already in the connection's buffer and nothing else is going on on the connection:
  canned bytes, before aiohttp builds a request (EarlyRefusals). The framing of each
  connection's requests is followed (heads and Content-Length bodies) so that a refusal never
  starts in the middle of one.
- A request aiohttp's parser cannot read (a control character in a header, a malformed
  request line, a line over 8190 bytes, a bad chunk size, an invalid method) never reaches
  the application: aiohttp answers it from `RequestHandler.handle_error`, in plain text that
  quotes the offending bytes (a token in the request line included), and logs it at ERROR
  with a traceback. `Protocol` answers it with the JSON error body instead, echoing nothing
  the client sent, logs one INFO line (DEBUG for a bad method: scanners, TLS on this port),
  and counts it on the gate for /metrics. A parser error inside the body of the request a
  route is handling (a bad chunk size) fails that body at once: the route answers 400.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import resource
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import hdrs, web, web_protocol
from aiohttp.helpers import rfc822_formatted_time
from aiohttp.http_exceptions import BadHttpMethod, HttpProcessingError

from .admission import Admission
from .config import Config
from .errors import BY_AIOHTTP_STATUS, MalformedRequest, ServerBusy, ServiceError
from .keys import admission_key, expects_continue_key, gate_key, metrics_key
from .logs import REQUEST_ID_HEADER, WORKER_HEADER, access_log, new_request_id, redact
from .metrics import Metrics

log = logging.getLogger(__name__)

LINGER = 2.0  # seconds aiohttp keeps reading, and discarding, a body its route did not read
# Descriptors the process needs besides client connections: its pool, LISTEN, logs, files.
RESERVED_FDS = 64

RequestHandler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]

_BUSY_BODY = orjson.dumps(
    {"error": "server_busy", "message": "this server has no room for another connection"}
)
BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    b"Content-Type: application/json\r\n"
    b"Retry-After: 1\r\n"
    b"Connection: close\r\n"
    b"Content-Length: " + str(len(_BUSY_BODY)).encode() + b"\r\n\r\n" + _BUSY_BODY
)


def handler_settings(config: Config) -> dict[str, Any]:
    """aiohttp request-handler settings (for AppRunner and the test server alike)."""
    return {
        "keepalive_timeout": config.http_header_timeout,
        "lingering_time": LINGER,
        "auto_decompress": False,
        # A client that goes away does not cancel its request's handler: a write it sent is
        # committed and answered for the log (an Idempotency-Key retry then finds it), and a
        # stream notices the loss itself (inbox.py). aiohttp's default, said out loud because
        # its test server turns it on.
        "handler_cancellation": False,
    }


# -- Expect: 100-continue ---------------------------------------------------------------------


def hold_back_continue(handle: RequestHandler) -> RequestHandler:
    """Hand the application the request without `Expect` (aiohttp would answer it before
    routing); body.send_continue answers it once a route reads the body."""

    def handler(request: web.BaseRequest) -> Awaitable[web.StreamResponse]:
        # A plain function: a request without Expect (an inbox socket among them) keeps no
        # coroutine of this wrapper suspended for its whole life.
        expect = request.headers.get(hdrs.EXPECT)
        if expect is None:
            return handle(request)
        return without_expect(request, expect)

    async def without_expect(request: web.BaseRequest, expect: str) -> web.StreamResponse:
        headers = request.headers.copy()
        del headers[hdrs.EXPECT]
        clone = request.clone(headers=headers)
        # Other expectations are ignored, as RFC 9110 allows.
        clone[expects_continue_key] = expect.strip().lower() == "100-continue"
        response = await handle(clone)
        if not response.prepared:
            # Prepared here, with the request the application routed: aiohttp would
            # prepare it with the original, which has no route, and the application's
            # on_response_prepare (X-Inbox-Worker, X-Request-Id) would not run.
            with contextlib.suppress(ConnectionError):  # aiohttp finds that out itself
                await response.prepare(clone)
        return response

    return handler


# -- counting and bounding connections --------------------------------------------------------


class Gate:
    """Counts the open connections of a server and refuses those past `limit`; also counts,
    by status, the requests its parser refused (the application never sees them)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open = 0
        self.refused = 0
        self.unparsed: Counter[int] = Counter()

    def protocols(self, factory: Callable[[], asyncio.Protocol]) -> Callable[[], asyncio.Protocol]:
        """A protocol factory for `loop.create_server` around aiohttp's own."""

        def make() -> asyncio.Protocol:
            # Counted when made, not when connected: asyncio accepts a burst of connections
            # before any of them is connected, and each must see the others.
            if self.open >= self.limit:
                self.refused += 1
                return _Refused()
            self.open += 1
            return _Counted(self, factory())

        return make


class _Counted(asyncio.Protocol):
    """aiohttp's protocol, unchanged, with the connection counted until it is lost."""

    def __init__(self, gate: Gate, inner: asyncio.Protocol) -> None:
        self.gate = gate
        self.inner = inner

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.gate.open -= 1
        self.inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()


class _Refused(asyncio.Protocol):
    """One connection too many: 503 and closed, without reading what it sends."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        transport.write(BUSY)
        transport.close()


# -- writes refused before aiohttp reads them -------------------------------------------------

# The request lines of the writes admission control bounds (admission.WRITE_ROUTES), exactly as
# a client writes them; anything else (a query string, HTTP/1.0) takes aiohttp's path.
ALERT_LINE = b"POST /alert HTTP/1.1\r\n"
OBJECT_LINE = b"POST /object HTTP/1.1\r\n"
HEAD_END = b"\r\n\r\n"
MAX_HEAD = 8190  # aiohttp's own bound on a request line or a header field
_CONTENT_LENGTH = b"\r\ncontent-length:"
# A head with one of these is left to aiohttp: it decides what they mean (the connection's
# fate, 100 Continue, the client's own request id, a body without a length).
_CONNECTION, _EXPECT, _REQUEST_ID = b"\r\nconnection:", b"\r\nexpect:", b"\r\nx-request-id:"
# A head after which the framing below stops following the connection: a chunked body, an
# upgrade to another protocol.
_UNFOLLOWED = (b"\r\ntransfer-encoding:", b"\r\nupgrade:")
MAX_UNSENT = 65536  # bytes of answers a connection may leave unread before refuse_early stops
SUMMARY_EVERY = 1.0  # seconds: at most one access log line for the writes refused early


def body_length(lower_head: bytes) -> int | None:
    """The Content-Length of a request head (lower-cased, without its blank line): 0 when it
    has none, None when the body cannot be framed by a length (chunked, upgraded, a length
    given twice or not as plain digits: aiohttp's parser decides about those)."""
    for marker in _UNFOLLOWED:
        if marker in lower_head:
            return None
    at = lower_head.find(_CONTENT_LENGTH)
    if at < 0:
        return 0
    start = at + len(_CONTENT_LENGTH)
    if lower_head.find(_CONTENT_LENGTH, start) >= 0:
        return None
    end = lower_head.find(b"\r\n", start)
    value = lower_head[start : end if end >= 0 else len(lower_head)].strip(b" \t")
    if not value.isdigit() or len(value) > 15:
        return None
    return int(value)


class EarlyRefusals:
    """Writes refused by the connection's protocol, before aiohttp builds a request for them.

    Under overload refusals are most of what a process answers, and aiohttp's request object,
    routing, the middlewares and a response cost as much as a third of an accepted write. When
    admission control (admission.py) has no room, an idle keep-alive connection whose buffer
    holds a whole POST /alert or POST /object (head and Content-Length body) is answered here
    with the same 503 `server_busy` the middleware would give (the JSON body, `Retry-After`,
    `X-Request-Id`, `X-Inbox-Worker`), and the request's bytes are consumed: the connection
    stays open for the next request. Each is counted in /metrics as the middleware counts it
    (`inbox_writes_refused_total`, `inbox_http_requests_total{status="503"}` and the latency
    histogram); instead of one access log line each, one line per second sums them up.
    Anything else (half a request, a head with `Connection`, `Expect` or `X-Request-Id`, a
    connection already handling a request) takes aiohttp's path, where the middleware refuses.
    """

    def __init__(self, admission: Admission, metrics: Metrics | None) -> None:
        self.admission = admission
        self.metrics = metrics
        self.worker = str(os.getpid()).encode()
        self.count: Counter[str] = Counter()  # by route, since the last summary line
        self.total = 0
        self._since = 0.0
        self._summary: asyncio.TimerHandle | None = None

    def answer(self, message: str) -> bytes:
        """The bytes of the 503, as json_errors and logs.add_response_headers would write it."""
        body = orjson.dumps({"error": ServerBusy.code, "message": message})
        return b"".join(
            (
                b"HTTP/1.1 503 Service Unavailable\r\n"
                b"Content-Type: application/json\r\n"
                b"Retry-After: %d\r\n" % ServerBusy.RETRY_AFTER,
                b"Date: %s\r\n" % rfc822_formatted_time().encode(),
                b"X-Request-Id: %s\r\n" % new_request_id().encode(),
                b"X-Inbox-Worker: %s\r\n" % self.worker,
                b"Content-Length: %d\r\n\r\n" % len(body),
                body,
            )
        )

    def counted(self, route: str, elapsed: float) -> None:
        self.total += 1
        self.count[route] += 1
        if self.metrics is not None:
            self.metrics.answered(route, "POST", 503).inc()
            self.metrics.timed(route, "POST").observe(elapsed)
        if self._summary is None:
            self._since = time.monotonic()
            self._summary = asyncio.get_running_loop().call_later(SUMMARY_EVERY, self.summarize)

    def summarize(self) -> None:
        """The access log line for the writes refused early since the last one."""
        self._summary = None
        if not self.count:
            return
        count, self.count = self.count, Counter()
        refused = sum(count.values())
        routes = ", ".join(f"POST {route} {n}" for route, n in sorted(count.items()))
        access_log.info(
            "%d writes refused with 503 server_busy before they were read, in %.1f s (%s)",
            refused,
            time.monotonic() - self._since,
            routes,
            extra={"status": 503, "method": "POST", "refused": refused, "routes": dict(count)},
        )

    def close(self) -> None:
        if self._summary is not None:
            self._summary.cancel()
        self.summarize()


# -- requests the parser refuses --------------------------------------------------------------

# Where aiohttp's parser messages start quoting what the client sent: `b'...'`, `bytearray(`,
# a quoted string, the `^` pointing into it. Everything from there on is dropped.
_QUOTED = re.compile(r"""\s*:?\s*(?:\bb['"]|(?<![A-Za-z])['"]|bytearray\(|\^).*""", re.DOTALL)
# What is left must read as a plain description; anything else is not repeated at all.
_PLAIN = re.compile(r"[A-Za-z0-9 ,;:'/()-]{1,120}")
UNPARSED = "the request could not be read as HTTP"


def parser_reason(exc: BaseException | None) -> str:
    """What aiohttp's parser found wrong, without the bytes it quotes (a request line may
    carry a token): "Invalid header value char", "Got more than 8190 bytes when reading"."""
    text = " ".join(getattr(exc, "message", "").split())
    text = _QUOTED.sub("", text, count=1).rstrip(" :.")
    return text if _PLAIN.fullmatch(text) and redact(text) == text else ""


class Protocol(web_protocol.RequestHandler):
    """aiohttp's connection protocol, answering what its parser refuses with the JSON error
    body (the application never sees those requests, so its middlewares cannot)."""

    def __init__(self, manager: Server, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self.gate = manager.gate
        self.early = manager.early
        # Where the next request starts in what is passed to aiohttp's parser (see follow):
        self._framed = True  # known (False for good after a body not framed by a length)
        self._body_left = 0  # body bytes of the last request still to come
        self._head_part = b""  # the start of a head still to be completed

    def data_received(self, data: bytes) -> None:
        if (
            self.early is not None
            and self._framed
            and not self._body_left
            and not self._head_part
            and self._idle()
            and self.early.admission.full()
        ):
            taken = self.refuse_early(data)
            if taken:
                data = data[taken:]
                if not data:
                    return
        if self._framed and self._payload_parser is None and not self._upgraded:
            self.follow(data)
        queued = len(self._messages)
        super().data_received(data)
        request = self._current_request
        if request is None or len(self._messages) == queued:
            return
        refused, _ = self._messages[-1]
        if isinstance(refused, web_protocol._ErrInfo) and not request.content.is_eof():
            # The parser failed inside the body of the request being handled (a bad chunk
            # size): aiohttp queues its error for after that request and leaves the body
            # waiting, so a route reading it would answer 408 only after HTTP_BODY_TIMEOUT.
            # The route gets the 400 now instead, and it is this connection's last answer.
            reason = parser_reason(refused.exc)
            error = MalformedRequest(f"{UNPARSED}: {reason}" if reason else UNPARSED)
            error.headers = {hdrs.CONNECTION: "close"}
            request.content.set_exception(error)
            request.content.feed_eof()  # nothing left for aiohttp to drain after the answer
            self.close()  # the queued error is not answered a second time

    def _idle(self) -> bool:
        """Waiting for the next request, with none queued, half-read or being answered."""
        waiter = self._waiter
        return (
            waiter is not None
            and not waiter.done()
            and not self._messages
            and not self._force_close
            and not self._close
            and not self._upgraded
            and not self._buffer_paused
            and not self._paused  # a client not reading its answers: aiohttp's flow control
            and self._payload_parser is None
            and self.transport is not None
        )

    def follow(self, data: bytes) -> None:
        """Follow the framing of what aiohttp's parser is given (heads, Content-Length bodies),
        so that refuse_early knows a buffer starts with a request; a body it cannot frame by
        its length (chunked, an upgrade) ends the following for this connection."""
        left = self._body_left
        if left:
            if left >= len(data):
                self._body_left = left - len(data)
                return
            data, self._body_left = data[left:], 0
        if self._head_part:
            data, self._head_part = self._head_part + data, b""
        at, size = 0, len(data)
        while at < size:
            end = data.find(HEAD_END, at)
            if end < 0:
                self._head_part = data[at:]
                if len(self._head_part) > MAX_HEAD * 4:  # aiohttp refuses it anyway
                    self._framed, self._head_part = False, b""
                return
            length = body_length(data[at:end].lower())
            if length is None:
                self._framed = False
                return
            at = end + len(HEAD_END) + length
        self._body_left = at - size

    def refuse_early(self, data: bytes) -> int:
        """Answer the whole write requests at the start of `data` with 503 `server_busy` while
        admission control has no room (EarlyRefusals); the number of bytes they took."""
        early = self.early
        assert early is not None
        assert self.transport is not None
        started = time.perf_counter()
        at, size = 0, len(data)
        while at < size:
            if data.startswith(ALERT_LINE, at):
                route = "/alert"
            elif data.startswith(OBJECT_LINE, at):
                route = "/object"
            else:
                break
            end = data.find(HEAD_END, at, at + MAX_HEAD)
            if end < 0:
                break
            head = data[at:end]
            lower = head.lower()
            # Bare CR or LF are left to aiohttp's parser, which refuses them.
            crlf = head.count(b"\r\n")
            if head.count(b"\n") != crlf or head.count(b"\r") != crlf:
                break
            if _CONNECTION in lower or _EXPECT in lower or _REQUEST_ID in lower:
                break
            length = body_length(lower)
            if length is None or end + len(HEAD_END) + length > size:
                break
            if self.transport.get_write_buffer_size() > MAX_UNSENT:
                break  # answers pile up unread: aiohttp's path, which waits for the client
            message = early.admission.refusal()
            if message is None:  # room for it: aiohttp's path
                break
            self.transport.write(early.answer(message))
            at = end + len(HEAD_END) + length
            early.counted(route, time.perf_counter() - started)
        if at:
            # The keep-alive (header) timer counts from the end of this answer, as after any.
            self._next_keepalive_close_time = self._loop.time() + self._keepalive_timeout
            if self._keepalive_handle is None and self._keepalive_timeout > 0:
                self._keepalive_handle = self._loop.call_at(
                    self._next_keepalive_close_time, self._process_keepalive
                )
        return at

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if not isinstance(exc, HttpProcessingError):  # a handler's own failure (500, 504)
            super().handle_error(request, status, exc, message)  # logged as aiohttp does
            return json_error(status, ServiceError.code, ServiceError.meaning)
        if request.writer.output_size > 0:  # as aiohttp: an answer has begun, cannot replace it
            raise ConnectionError("Response is sent already, cannot send another response")
        request_id = uuid.uuid4().hex  # the request's own headers were never read
        reason = parser_reason(exc)
        # A bad method is mostly scanners and TLS sent to this port: as aiohttp, kept quiet.
        level = logging.DEBUG if isinstance(exc, BadHttpMethod) else logging.INFO
        self.logger.log(
            level,
            "Refused a request the HTTP parser could not read from %s: %d (%s)",
            request.remote,
            status,
            reason or type(exc).__name__,
            extra={"request_id": request_id},
        )
        self.gate.unparsed[status] += 1
        cls = BY_AIOHTTP_STATUS.get(status, MalformedRequest)
        text = f"{UNPARSED}: {reason}" if reason else UNPARSED
        return json_error(status, cls.code, text, request_id)


def json_error(status: int, code: str, message: str, request_id: str | None = None) -> web.Response:
    """The standard error body, for an answer made outside the application: it closes the
    connection, and carries the headers logs.add_response_headers gives the others."""
    response = web.json_response(
        {"error": code, "message": message},
        status=status,
        dumps=lambda body: orjson.dumps(body).decode(),
        headers={
            hdrs.CONNECTION: "close",
            REQUEST_ID_HEADER: request_id or uuid.uuid4().hex,
            WORKER_HEADER: str(os.getpid()),
        },
    )
    response.force_close()
    return response


class Server(web.Server):
    """aiohttp's low-level server making `Protocol`s (its `__call__` makes its own class)."""

    def __init__(self, base: web.Server, gate: Gate, early: EarlyRefusals | None = None) -> None:
        # The one aiohttp made for the application, its settings (timeouts, LINGER) kept.
        super().__init__(
            hold_back_continue(base.request_handler),
            request_factory=base.request_factory,
            handler_cancellation=base.handler_cancellation,
            loop=base._loop,
            **base._kwargs,
        )
        self.gate = gate
        self.early = early

    def __call__(self) -> Protocol:
        return Protocol(self, loop=self._loop, **self._kwargs)

    async def shutdown(self, timeout: float | None = None) -> None:
        await super().shutdown(timeout)
        if self.early is not None:
            self.early.close()  # the last summary line


# -- the runner and its site ------------------------------------------------------------------


class Runner(web.AppRunner):
    """The application's runner with the settings above; `gate` counts its connections."""

    def __init__(self, app: web.Application, config: Config, **kwargs: Any) -> None:
        super().__init__(app, access_log=None, **handler_settings(config), **kwargs)
        self.gate = Gate(config.max_connections)
        app[gate_key] = self.gate  # for /metrics

    async def _make_server(self) -> web.Server:
        app = self.app
        admission = app.get(admission_key)
        early = None if admission is None else EarlyRefusals(admission, app.get(metrics_key))
        return Server(await super()._make_server(), self.gate, early)


class Site(web.BaseSite):
    """A TCP site whose connections pass through the runner's gate."""

    def __init__(self, runner: Runner, host: str, port: int, *, reuse_port: bool = False) -> None:
        super().__init__(runner, backlog=1024)
        self.owner = runner
        self.host, self.port, self.reuse_port = host, port, reuse_port

    @property
    def name(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        await super().start()
        server = self.owner.server
        assert server is not None
        listening = await asyncio.get_running_loop().create_server(
            self.owner.gate.protocols(server),
            self.host,
            self.port,
            backlog=self._backlog,
            reuse_address=True,
            reuse_port=self.reuse_port or None,
        )
        self._server = listening
        if self.port == 0:  # the kernel chose one
            self.port = listening.sockets[0].getsockname()[1]


def fit_open_files(config: Config) -> int:
    """Raise the open-files soft limit to fit MAX_CONNECTIONS; return the bound that fits."""
    need = config.max_connections + config.db_pool_max_size + RESERVED_FDS
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < need:
        wanted = need if hard == resource.RLIM_INFINITY else min(need, hard)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
    if soft == resource.RLIM_INFINITY or soft >= need:
        return config.max_connections
    fits = max(1, soft - config.db_pool_max_size - RESERVED_FDS)
    log.warning(
        "MAX_CONNECTIONS=%d does not fit the open-files limit (%d): serving at most %d "
        "connections at a time",
        config.max_connections,
        soft,
        fits,
    )
    return fits


async def start(
    app: web.Application, config: Config, *, reuse_port: bool = False, handle_signals: bool = False
) -> Site:
    """Set the application up and listen on HOST:PORT (PORT 0: any free port)."""
    runner = Runner(app, config, handle_signals=handle_signals)
    runner.gate.limit = fit_open_files(config)
    await runner.setup()
    site = Site(runner, config.host, config.port, reuse_port=reuse_port)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    return site


def serve(app: web.Application, config: Config, *, reuse_port: bool = False) -> None:
    """Serve until SIGINT or SIGTERM, then shut down as aiohttp's run_app does: the runner's
    cleanup first, while connections are still alive (inbox sockets get 1001), then whatever
    tasks are left."""

    async def main() -> None:
        site = await start(app, config, reuse_port=reuse_port, handle_signals=True)
        log.info("serving on %s", site.name)
        try:
            await asyncio.Event().wait()
        finally:
            await site.owner.cleanup()

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    task = loop.create_task(main())
    try:
        loop.run_until_complete(task)
    except (web.GracefulExit, KeyboardInterrupt):
        pass
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            loop.run_until_complete(task)
        left = asyncio.all_tasks(loop)
        for other in left:
            other.cancel()
        loop.run_until_complete(asyncio.gather(*left, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
        asyncio.set_event_loop(None)
        loop.close()
