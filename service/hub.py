"""Connected inbox sockets by object id, and the fan-out of frames to them.

Fan-out never awaits a client: `publish` only appends an already-encoded frame to each
recipient's bounded queue, and each socket's own sender task drains its queue. A socket whose
queue is full has fallen too far behind; it is dropped (close code 4008) and can resume with
`?after=<last id it received>`.

Exactly-once rests on one invariant: alert ids are handed out in commit order (migration 0002),
and frames are published in id order. A session therefore only needs the id of the last frame
it accepted: anything not greater is a duplicate (from backlog/live overlap or a catch-up).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable

import orjson

from .meter import Meter

log = logging.getLogger(__name__)

NOTICE = 0  # the id a frame that is not an alert (a read-cursor move) travels under

Frame = tuple[int, bytes]  # (alert id, the UTF-8 JSON text of a WebSocket text frame)


class Session:
    """One open inbox socket: what it has accepted so far and what it still has to send.

    Until its backlog has been read (`start_live`), live frames wait in `pending`; afterwards
    they go straight to `queue`. Both are bounded by `limit`.
    """

    meter = Meter()  # the hub's own replaces it in Hub.add

    def __init__(
        self, object_id: int, after: int, limit: int, on_overflow: Callable[[Session], None]
    ) -> None:
        self.object_id = object_id
        self.last_id = after
        self.limit = limit
        self.queue: asyncio.Queue[Frame] = asyncio.Queue(maxsize=limit)
        self.pending: list[Frame] | None = []
        self.overflowed = False
        self._on_overflow = on_overflow

    def offer(self, alert_id: int, frame: bytes) -> None:
        """Accept a frame unless it was already accepted or the session is dropped."""
        if self.overflowed:
            return
        if self.pending is not None:
            if len(self.pending) >= self.limit:
                self._overflow()
            else:
                self.pending.append((alert_id, frame))
            return
        if alert_id != NOTICE and alert_id <= self.last_id:
            return
        try:
            self.queue.put_nowait((alert_id, frame))
        except asyncio.QueueFull:
            self._overflow()
            return
        if alert_id != NOTICE:
            self.last_id = alert_id

    def start_live(self, last_backlog_id: int) -> None:
        """The backlog was sent up to `last_backlog_id`: queue what arrived meanwhile, in order."""
        pending, self.pending = self.pending or [], None
        self.last_id = max(self.last_id, last_backlog_id)
        for alert_id, frame in pending:
            self.offer(alert_id, frame)

    def _overflow(self) -> None:
        self.overflowed = True
        self.meter.dropped_slow += 1
        self._on_overflow(self)


class Hub:
    """The open sessions of this process, by object id."""

    def __init__(self) -> None:
        self._by_object: dict[int, set[Session]] = {}
        self.meter = Meter()  # counters read by /metrics

    def __len__(self) -> int:
        return sum(len(sessions) for sessions in self._by_object.values())

    def add(self, session: Session) -> None:
        session.meter = self.meter
        self._by_object.setdefault(session.object_id, set()).add(session)

    def discard(self, session: Session) -> None:
        sessions = self._by_object.get(session.object_id)
        if sessions is not None:
            sessions.discard(session)
            if not sessions:
                del self._by_object[session.object_id]

    def sessions(self) -> list[Session]:
        return [s for sessions in self._by_object.values() for s in sessions]

    def connected_objects(self) -> list[int]:
        return list(self._by_object)

    def count_for(self, object_id: int) -> int:
        return len(self._by_object.get(object_id, ()))

    def is_connected(self, object_id: int) -> bool:
        return object_id in self._by_object

    def publish(self, alert_id: int, frame: bytes, object_ids: Iterable[int]) -> int:
        """Offer one frame to every session of `object_ids`; returns how many sessions got it."""
        delivered = 0
        for object_id in object_ids:
            for session in tuple(self._by_object.get(object_id, ())):
                session.offer(alert_id, frame)
                delivered += 1
        return delivered

    def publish_ack(self, object_id: int, acked_alert_id: int, unread: int) -> None:
        """Tell every open inbox of `object_id` where its read cursor is now: a notice, not an
        alert, so never de-duplicated against alert ids; queued in order with the alerts."""
        frame = orjson.dumps({"acked_alert_id": acked_alert_id, "unread": unread})
        for session in tuple(self._by_object.get(object_id, ())):
            session.offer(NOTICE, frame)
