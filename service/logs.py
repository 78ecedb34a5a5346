"""Logging: the line formats (text or JSON lines), request ids, and the access log.

Every request gets an id: the client's `X-Request-Id` when it sent a sane one, a new random one
otherwise. It is echoed in the `X-Request-Id` response header (the WebSocket handshake too),
ends the access log line, and is attached to every log line written while the request is
handled (a context variable, so tasks the handler starts inherit it). Each response also names
the process that served it in `X-Inbox-Worker` (its pid, as in the log lines), which tells
workers sharing a port apart.

No credential reaches a log line: both formats pass the whole line (message, exception text,
extra fields) through `redact`, which blanks `token=` and other secret query parameters,
`Bearer` values and the password of a database URL, whichever logger wrote it (aiohttp's own
include the request line in some errors).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import re
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from .wire import STATUS_CLIENT_GONE

REQUEST_ID_HEADER = "X-Request-Id"
WORKER_HEADER = "X-Inbox-Worker"
# Letters, digits and a little punctuation, as tracing systems generate; anything else (say,
# a header smuggling a newline or a megabyte) is replaced rather than written to the logs.
SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/+=-]{0,127}")

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "request_id", default=None
)
access_log = logging.getLogger("inbox.access")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Query parameters whose values are secrets; matched anywhere in a line, case-insensitively, so
# a URL inside an error message or an exception is covered too.
SECRET_PARAMS = ("token", "access_token", "api_key", "apikey", "key", "secret", "password")
REDACTED = "[redacted]"
_SECRETS = re.compile(
    rf"(?i)(?P<param>(?<![A-Za-z0-9_-])(?:{'|'.join(SECRET_PARAMS)})=)[^&\s\"'\\]+"
    r"|(?P<scheme>\bBearer\s+)[^\s\"'\\,]+"
    r"|(?P<url>\b[a-z][a-z0-9+.-]*://[^:/@\s\"']*:)[^@/\s\"']+@"
)


def _hide(match: re.Match[str]) -> str:
    kept = match.group("param") or match.group("scheme")
    if kept:
        return kept + REDACTED
    return f"{match.group('url')}{REDACTED}@"


# Every match of _SECRETS holds one of these (in ASCII lower case): a parameter name ending in
# "token", "key", "secret" or "password" before its "=", the "bearer" scheme, or a URL's "://".
_MARKERS = ("token=", "key=", "secret=", "password=", "bearer", "://")


def redact(text: str) -> str:
    """`text` with every credential it carries replaced by [redacted]."""
    # Most lines carry none: one scan for the markers is far cheaper than the regex. Only for
    # ASCII text is lower() the regex's case folding (it also folds "\u017f" to "s", "\u212a"
    # to "k"), so other text always goes through the regex.
    if text.isascii():
        lowered = text.lower()
        if not any(marker in lowered for marker in _MARKERS):
            return text
    return _SECRETS.sub(_hide, text)


# LogRecord attributes that are not "extra" fields worth a JSON key.
_RECORD_ATTRS = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "request_id"}


# -- formats --------------------------------------------------------------------------------


class RequestIdFilter(logging.Filter):
    """Stamp each record with the id of the request being handled (None outside requests)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = request_id_var.get()
        return True


class TextFormatter(logging.Formatter):
    """`time LEVEL logger pid=N: message request_id=...`, one line per event."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s pid=%(process)d: %(message)s")
        self._second: tuple[int, str] = (-1, "")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        """logging's own text, with the part to the second formatted once per second."""
        if datefmt or not self.default_msec_format or self.converter is not time.localtime:
            return super().formatTime(record, datefmt)
        second = int(record.created)
        cached_second, text = self._second
        if second != cached_second:
            text = time.strftime(self.default_time_format, time.localtime(second))
            self._second = (second, text)
        return self.default_msec_format % (text, record.msecs)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        request_id = getattr(record, "request_id", None)
        return redact(f"{line} request_id={request_id}" if request_id else line)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, pid, message, request_id, extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "pid": record.process,
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None)
        if request_id:
            entry["request_id"] = request_id
        for key, value in vars(record).items():
            if key not in _RECORD_ATTRS and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        # The whole line, so that nested extra fields are covered too.
        return redact(orjson.dumps(entry, default=str).decode())


class ClientMistakeFilter(logging.Filter):
    """aiohttp logs a request its parser cannot read (a control character in a header, a
    malformed request line) at ERROR with a traceback: any client could fill the logs with
    them. They are the client's mistake, answered 400: one INFO line saying what was wrong."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError | ConnectionError):
            reason = " ".join(str(exc).split())[:200]
            record.msg, record.args = "%s (%s)", (record.getMessage(), reason)
            if record.levelno > logging.INFO:
                record.levelno, record.levelname = logging.INFO, "INFO"
            record.exc_info = record.exc_text = None
        return True


CLIENT_MISTAKES = ClientMistakeFilter()


def setup(log_format: str = "text", level: str = "info") -> None:
    """Send every log line to stderr in `log_format` ("text" or "json") from `level` up."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    handler.addFilter(RequestIdFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    logging.getLogger("yoyo").setLevel(logging.WARNING)
    logging.getLogger("aiohttp.server").addFilter(CLIENT_MISTAKES)  # added once, however often


# -- request ids and the access log ---------------------------------------------------------


def new_request_id() -> str:
    """`uuid.uuid4().hex`, without building a UUID object: 16 random bytes with the version
    (4) and variant (RFC 4122) bits set as uuid4 sets them."""
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40
    raw[8] = (raw[8] & 0x3F) | 0x80
    return raw.hex()


def request_id_for(request: web.BaseRequest) -> str:
    sent = request.headers.get(REQUEST_ID_HEADER)
    if sent is not None and SANE_REQUEST_ID.fullmatch(sent):
        return sent
    return new_request_id()


def loggable_target(request: web.BaseRequest) -> str:
    """The path and query as the client meant them, with every secret parameter's value
    replaced (decoded first, so `?%74oken=` is caught like `?token=`)."""
    if not request.query_string:
        return request.path
    query = "&".join(
        f"{name}={REDACTED if name.lower() in SECRET_PARAMS else value}"
        for name, value in request.query.items()
    )
    return f"{request.path}?{query}"


@web.middleware
async def access_log_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Give the request its id, and log one line when it ends (for a WebSocket: when it closes)."""
    request_id = request_id_for(request)
    token = request_id_var.set(request_id)
    started = time.perf_counter()
    status, size = 500, 0
    try:
        response = await handler(request)
        status = response.status
        if response.prepared:  # a WebSocket, by now closed
            size = response.body_length
        else:
            # Most answers are sent after this returns, outside the context variable.
            size = response.content_length or 0
            response.headers[REQUEST_ID_HEADER] = request_id
        return response
    except web.HTTPException as exc:
        status = exc.status
        exc.headers[REQUEST_ID_HEADER] = request_id
        raise
    except asyncio.CancelledError:
        status = STATUS_CLIENT_GONE
        raise
    finally:
        log_access(request, request_id, status, size, time.perf_counter() - started)
        request_id_var.reset(token)


ACCESS_FORMAT = '%s "%s %s HTTP/%d.%d" %d %dB %.1fms'


def log_access(
    request: web.BaseRequest, request_id: str, status: int, size: int, elapsed: float
) -> None:
    """The access log line of one request (also written by admission control for a write it
    refuses before this middleware runs).

    `access_log.info(ACCESS_FORMAT, ...)`, less the search of the stack for the caller's file
    and line, which no format shows and every request would pay for: the same record (filters,
    handlers, propagation, `disabled`), naming the middleware as its origin."""
    if not access_log.isEnabledFor(logging.INFO):
        return
    target = loggable_target(request)
    args = (request.remote, request.method, target, *request.version, status, size, elapsed * 1000)
    extra = {
        "request_id": request_id,
        "remote": request.remote,
        "method": request.method,
        "path": target,
        "status": status,
        "bytes": size,
        "duration_ms": round(elapsed * 1000, 3),
        "user_agent": request.headers.get("User-Agent"),
    }
    record = access_log.makeRecord(
        access_log.name,
        logging.INFO,
        __file__,
        _ACCESS_LINE,
        ACCESS_FORMAT,
        args,
        None,
        "access_log_middleware",
        extra,
    )
    access_log.handle(record)


_ACCESS_LINE = access_log_middleware.__code__.co_firstlineno


async def add_response_headers(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: the request id and this process's pid on every response.

    A WebSocket handshake is prepared inside its handler, where the context variable holds the
    id; an answer the middleware never saw (a malformed request) gets an id of its own.
    """
    if REQUEST_ID_HEADER not in response.headers:
        response.headers[REQUEST_ID_HEADER] = request_id_var.get() or request_id_for(request)
    response.headers[WORKER_HEADER] = str(os.getpid())
