"""The bytes of every frame the inbox writes, built once per alert and shared by every recipient.

A server-to-client WebSocket frame is not masked (RFC 6455, section 5.1), so a whole frame,
header and payload, is the same bytes for every socket. A Server-Sent Event is the same for
every stream too, and so is the HTTP/1.1 chunk that carries it. `Prepared` builds each encoding
the first time a recipient needs it and keeps it for the others.
"""

from __future__ import annotations

import struct

WS_TEXT = 0x81  # FIN + opcode 1 (text); no RSV bits: per-message deflate is off
WS_PING = bytes((0x89, 0x00))  # a whole ping frame with no payload: the heartbeat's, every socket's
SSE_KEEPALIVE = b": keep-alive\n\n"


def ws_text_frame(payload: bytes) -> bytes:
    """A whole unmasked WebSocket text frame carrying `payload` (UTF-8)."""
    size = len(payload)
    if size < 126:
        header = struct.pack("!BB", WS_TEXT, size)
    elif size < 65536:
        header = struct.pack("!BBH", WS_TEXT, 126, size)
    else:
        header = struct.pack("!BBQ", WS_TEXT, 127, size)
    return header + payload


def sse_event(payload: bytes, *, event_id: int | None = None, event: bytes | None = None) -> bytes:
    """One Server-Sent Event: `event:` (when not a plain message), `id:`, then the data lines."""
    lines = []
    if event is not None:
        lines.append(b"event: " + event)
    if event_id is not None:
        lines.append(b"id: %d" % event_id)
    # JSON from PostgreSQL has no raw line breaks; should a payload ever carry one, each line
    # becomes its own data: line, which a client joins back with "\n".
    lines.extend(b"data: " + line for line in payload.splitlines() or [b""])
    return b"\n".join(lines) + b"\n\n"


def http_chunk(data: bytes) -> bytes:
    """`data` as one chunk of an HTTP/1.1 chunked body."""
    return b"%x\r\n%s\r\n" % (len(data), data)


class Prepared:
    """One frame to fan out: an alert (`alert_id` > 0) or a notice such as an ack (0).

    Alerts are SSE messages with `id:` (a client resumes from the last one it saw); a notice is
    a named event without an id, so it never moves a client's resume point.
    """

    __slots__ = ("_sse", "_sse_chunk", "_ws", "alert_id", "event", "payload")

    def __init__(self, alert_id: int, payload: bytes, event: bytes | None = None) -> None:
        self.alert_id = alert_id
        self.payload = payload  # the JSON text, UTF-8
        self.event = event
        self._ws: bytes | None = None
        self._sse: bytes | None = None
        self._sse_chunk: bytes | None = None

    @property
    def ws(self) -> bytes:
        if self._ws is None:
            self._ws = ws_text_frame(self.payload)
        return self._ws

    @property
    def sse(self) -> bytes:
        if self._sse is None:
            event_id = self.alert_id if self.alert_id > 0 else None
            self._sse = sse_event(self.payload, event_id=event_id, event=self.event)
        return self._sse

    @property
    def sse_chunk(self) -> bytes:
        if self._sse_chunk is None:
            self._sse_chunk = http_chunk(self.sse)
        return self._sse_chunk
