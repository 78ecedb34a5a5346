"""What the service says on the wire besides its JSON bodies: WebSocket close codes and the
status recorded for a client that left. A leaf: every other module reads these from here.

The error codes of the JSON error body live on the error classes in errors.py, one class per
code (its status, code and meaning declared once); the middleware, the OpenAPI document and the
handlers all read them there.
"""

from __future__ import annotations

# WebSocket close codes (RFC 6455 section 7.4; 4000-4999 are ours).
CLOSE_GOING_AWAY = 1001  # the server is shutting down
CLOSE_MESSAGE_TOO_BIG = 1009  # a client frame over the limit (aiohttp closes with it)
CLOSE_INTERNAL_ERROR = 1011
CLOSE_TRY_AGAIN = 1013  # the backlog could not be read: the database is unreachable
CLOSE_TOO_SLOW = 4008  # the socket fell WS_QUEUE_SIZE frames behind

# What each close code means to a client; after any of them it reconnects with
# ?after=<id of the last frame received> and misses nothing.
CLOSE_MEANINGS: dict[int, str] = {
    CLOSE_TOO_SLOW: "too slow: the client fell `WS_QUEUE_SIZE` frames behind",
    CLOSE_GOING_AWAY: "going away: the server is shutting down",
    CLOSE_TRY_AGAIN: "try again later: the database was unavailable while reading the backlog",
    CLOSE_INTERNAL_ERROR: "internal error",
}

# Server-Sent Events: how long an EventSource waits before it reconnects (`retry:`), and the
# seconds between comments on an idle stream (proxies cut streams that stay silent).
SSE_RETRY_MS = 2000
SSE_KEEPALIVE_INTERVAL = 15.0

# Logged and counted for a request whose client went away before the answer (nginx's
# convention); never sent, as nobody is left to receive it.
STATUS_CLIENT_GONE = 499
