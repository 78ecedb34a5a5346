"""Open inbox streams by object id, and the fan-out of prepared frames to them.

Each alert's frame is built once (frames.py) and its bytes are written by `publish` straight to
every recipient's transport, with no task per socket woken and no await on any client. Only a
stream that is backed up (its transport holds more than `LOW_WATER` unsent bytes, which is
exactly when the transport has paused writing: see `Session.attach`) queues the frame; a drain
task of that stream alone then writes its queue once the transport resumes. A stream whose queue
reaches its bound has fallen too far behind: it is dropped (WebSocket close code 4008) and can
resume with `?after=<last id it received>`.

Frames are written whole with a synchronous `transport.write`, and aiohttp writes its pings,
pongs and close frames the same way, so they can interleave only between whole frames; once a
socket is closing nothing more is written to it (tests/test_aiohttp_contract.py pins this).

A publish to more than `BURST` streams (an alert to everyone) is a burst: written `SLICE`
streams at a time, yielding to the event loop in between, so an alert committed meanwhile for
up to `BURST` recipients is written as soon as the dispatcher hands it over, not behind the
whole burst. Before such a later alert is written to an object, every burst still in progress that
includes the object is written to it first, so each stream still sees ids in order; the burst's
own turn then finds the frame already accepted.

Exactly-once rests on one invariant: alert ids are handed out in commit order (migration 0002),
and frames are offered in id order. A session therefore only needs the id of the last frame it
accepted: anything not greater is a duplicate (from backlog/live overlap, a catch-up, or a burst
whose frame was written ahead of its turn). Notices (acks) are not alerts and are never
de-duplicated.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections import deque
from collections.abc import Awaitable, Callable, Iterable

import orjson

from .frames import Prepared
from .meter import Meter

# Unsent bytes a transport may hold before its stream counts as backed up and frames queue.
# Set as both of the transport's write-buffer marks, so "above it" and "paused" are one state
# and the transport's resume_writing tells when the queue can move again.
LOW_WATER = 16 * 1024
# A publish to more streams than this is a burst, written in slices; a smaller one is written
# at once, ahead of any burst in progress.
BURST = 500
# Streams written per step of a burst before the event loop gets a turn. A notification read
# in that turn reaches `publish` two turns later (asyncpg's callback, then the dispatcher's
# task), each after one more slice, so a smaller slice lets an alert published meanwhile out
# sooner; 128 did, but made an alert_all to 50,000 sockets over 4 workers slower (README,
# Fan-out), so it stays 500.
SLICE = 500

# Every this many sessions added, the process's objects are frozen (see `_Freezer`).
FREEZE_AFTER = 1000

UNMETERED = Meter()  # counts of sessions in no hub (tests)

Drain = Callable[[], Awaitable[None]]


class Session:
    """One open inbox stream: what it has accepted so far, and what it could not write yet.

    Until its backlog has been read (`start_live`), live frames wait in `pending`; afterwards
    they are written at once, or queued while the transport is backed up. Both are bounded by
    `limit`. Subclasses (inbox.py) say how a frame is encoded for their kind of stream and
    whether the stream still takes frames.
    """

    __slots__ = (
        "_drain",
        "_drainer",
        "_on_overflow",
        "last_id",
        "limit",
        "meter",
        "object_id",
        "overflowed",
        "pending",
        "queue",
        "transport",
    )

    def __init__(
        self, object_id: int, after: int, limit: int, on_overflow: Callable[[Session], None]
    ) -> None:
        self.object_id = object_id
        self.last_id = after
        self.limit = limit
        self.pending: list[Prepared] | None = []
        # Frames waiting for the transport: (alert id > 0 live, < 0 backlog, 0 notice, bytes).
        self.queue: deque[tuple[int, bytes]] | None = None  # most streams never need one
        self.overflowed = False
        self.transport: asyncio.Transport | None = None
        self._on_overflow = on_overflow
        self.meter = UNMETERED  # the hub's own replaces it in Hub.add
        self._drain: Drain | None = None
        self._drainer: asyncio.Task[None] | None = None

    # -- what the kind of stream decides ---------------------------------------------------

    def encode(self, prepared: Prepared) -> bytes:
        return prepared.ws

    def is_open(self) -> bool:
        """Whether frames may still be written (never after a WebSocket's close frame)."""
        return True

    async def going_away(self) -> None:
        """The server is shutting down: end the stream politely."""

    def gone(self) -> None:
        """A write found the connection closing: the stream may end now."""

    # -- the transport ---------------------------------------------------------------------

    def attach(self, transport: asyncio.Transport, drain: Drain) -> None:
        """The stream is ready for frames: they go to `transport`; `drain` waits while it is
        paused (aiohttp's `StreamWriter.drain`)."""
        transport.set_write_buffer_limits(high=LOW_WATER, low=LOW_WATER)
        self.transport = transport
        self._drain = drain

    def detach(self) -> None:
        """The stream is over: drop what is queued and write nothing more."""
        self.transport = None
        if self.queue:
            self.queue.clear()
        if self._drainer is not None:
            self._drainer.cancel()
            self._drainer = None

    def _writable(self) -> asyncio.Transport | None:
        transport = self.transport
        if transport is None or transport.is_closing() or not self.is_open():
            return None
        return transport

    def send(self, alert_id: int, data: bytes) -> bool:
        """Write `data` now if the stream is not backed up (True), else queue it (False)."""
        transport = self._writable()
        if transport is None:
            if self.transport is not None:
                self.gone()
            return False  # closed or closing: the frame is simply not sent
        queue = self.queue
        if not queue and transport.get_write_buffer_size() <= LOW_WATER:
            transport.write(data)
            return True
        if queue is None:
            queue = self.queue = deque()
        if len(queue) >= self.limit:
            self._overflow()
            return False
        queue.append((alert_id, data))
        if self._drainer is None:
            self._drainer = asyncio.get_running_loop().create_task(self._drain_queue())
        return False

    async def _drain_queue(self) -> None:
        queue, meter = self.queue, self.meter
        assert queue is not None
        assert self._drain is not None
        try:
            while queue:
                await self._drain()
                transport = self._writable()
                if transport is None:
                    queue.clear()
                    break
                if transport.get_write_buffer_size() > LOW_WATER:
                    # Not paused yet still full: marks changed under us. Never spin.
                    await asyncio.sleep(0.01)
                    continue
                while queue and transport.get_write_buffer_size() <= LOW_WATER:
                    alert_id, data = queue.popleft()
                    transport.write(data)
                    if alert_id > 0:
                        meter.sent(alert_id)
                    elif alert_id < 0:
                        meter.sent_backlog()
        except ConnectionError:
            queue.clear()
        finally:
            self._drainer = None

    async def flushed(self) -> None:
        """Return once nothing is queued (or the stream is over)."""
        while self._drainer is not None:
            await asyncio.wait({self._drainer})

    # -- frames ----------------------------------------------------------------------------

    def offer(self, prepared: Prepared) -> bool:
        """Accept a frame unless it was accepted before or the session is dropped; True when
        it was written to the transport at once."""
        if self.overflowed:
            return False
        if self.pending is not None:
            if len(self.pending) >= self.limit:
                self._overflow()
            else:
                self.pending.append(prepared)
            return False
        alert_id = prepared.alert_id
        if alert_id:
            if alert_id <= self.last_id:
                return False
            self.last_id = alert_id
        return self.send(alert_id, self.encode(prepared))

    def send_backlog(self, alert_id: int, payload: bytes) -> None:
        """One alert read from the tables, written before anything live."""
        if self.send(-alert_id, self.encode(Prepared(alert_id, payload))):
            self.meter.sent_backlog()

    def start_live(self, last_backlog_id: int) -> None:
        """The backlog was sent up to `last_backlog_id`: send what arrived meanwhile, in order."""
        pending, self.pending = self.pending or [], None
        self.last_id = max(self.last_id, last_backlog_id)
        for prepared in pending:
            if self.offer(prepared) and prepared.alert_id:
                self.meter.sent(prepared.alert_id)

    def _overflow(self) -> None:
        self.overflowed = True
        self.meter.dropped_slow += 1
        if self.queue:
            self.queue.clear()
        self._on_overflow(self)


class _Burst:
    """A publish to more streams than one slice: written a slice at a time."""

    __slots__ = ("done", "objects", "prepared", "sessions")

    def __init__(self, prepared: Prepared, sessions: list[Session]) -> None:
        self.prepared = prepared
        self.objects: set[int] = set()  # filled in when it is queued
        self.sessions = sessions
        self.done = 0  # sessions[:done] have been offered the frame


class _Freezer:
    """Keeps the objects of a wave of connections out of the full garbage collections.

    Each open inbox holds about a hundred objects the collector tracks (aiohttp's request,
    protocol, parser, timers; the session): 1.1 million at 10,000 sockets, and a full
    (generation 2) pass over them took 0.66 s of CPU, stopping the event loop, fan-out included.
    CPython runs one whenever the objects that survived since the last one reach a quarter of
    the old ones: after a wave of connections, typically soon, in the middle of the traffic.

    Every `FREEZE_AFTER` sessions added, the young generations are collected (cheap) and
    everything alive is frozen (`gc.freeze`): later passes skip it. It happens as a wave
    comes, not once it has settled: the full passes CPython runs during a wave each go over
    every socket opened so far that is not frozen (probe of 2026-11-27, 10,000 sockets
    connecting with a freeze only after a quiet second: 8 passes of 54 to 387 ms, 1.8 s of
    CPU, each stopping the loop and the handshakes waiting on it).

    Frozen objects are still freed by reference counting; only the cycles among them wait, so
    once as many sessions have ended as half the number open at the freeze (or the hub stops),
    everything is unfrozen and the next full pass collects those cycles. The garbage held back
    is bounded by that: the cycles of half a wave's connections.
    """

    __slots__ = ("_added", "_ended", "_frozen_at")

    def __init__(self) -> None:
        self._added = 0  # sessions added since the last freeze
        self._ended = 0  # sessions ended since the last freeze
        self._frozen_at = 0  # sessions open at the freeze in force (0: none)

    def added(self, count: int) -> None:
        self._added += 1
        if self._added >= FREEZE_AFTER:
            self._freeze(count)

    def ended(self) -> None:
        if not self._frozen_at:
            return
        self._ended += 1
        if 2 * self._ended >= self._frozen_at:
            self.thaw()

    def _freeze(self, count: int) -> None:
        gc.collect(1)
        gc.freeze()
        # A freeze on top of one in force keeps counting the sessions ended since the first:
        # the cycles held back stay bounded by half the most sessions ever frozen at once.
        self._frozen_at = max(self._frozen_at, count, 1)
        self._added = 0

    def thaw(self) -> None:
        if self._frozen_at:
            gc.unfreeze()
            self._frozen_at = self._ended = 0


class Hub:
    """The open sessions of this process, by object id."""

    def __init__(self) -> None:
        self._by_object: dict[int, set[Session]] = {}
        self._count = 0
        self._freezer = _Freezer()
        self._bursts: deque[_Burst] = deque()
        self._burst_writer: asyncio.Task[None] | None = None
        self.meter = Meter()  # counters read by /metrics

    def __len__(self) -> int:
        return self._count

    # -- sessions --------------------------------------------------------------------------

    def add(self, session: Session) -> None:
        session.meter = self.meter
        sessions = self._by_object.setdefault(session.object_id, set())
        if session not in sessions:
            sessions.add(session)
            self._count += 1
            self._freezer.added(self._count)

    def discard(self, session: Session) -> None:
        sessions = self._by_object.get(session.object_id)
        if sessions is not None and session in sessions:
            sessions.discard(session)
            self._count -= 1
            self._freezer.ended()
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

    # -- fan-out ---------------------------------------------------------------------------

    def publish(self, alert_id: int, frame: bytes, object_ids: Iterable[int]) -> int:
        """Send one alert to every session of `object_ids`; returns how many sessions that is.

        Up to `BURST` sessions are written before this returns; a larger publish is written
        in slices (see the module docstring).
        """
        by_object = self._by_object
        object_ids = [oid for oid in object_ids if oid in by_object]
        sessions = [s for oid in object_ids for s in by_object[oid]]
        burst = _Burst(Prepared(alert_id, frame), sessions)
        if len(sessions) <= BURST:
            beside_burst = bool(self._bursts)
            if beside_burst:
                self._write_bursts_ahead(object_ids)
            self._write_slice(burst, len(sessions), beside_burst)
            return len(sessions)
        if not self._bursts:
            self._write_slice(burst, SLICE)
        # else: a burst behind bursts is written after them, in order
        if burst.done < len(sessions):
            burst.objects = set(object_ids)
            self._bursts.append(burst)
            if self._burst_writer is None:
                self._burst_writer = asyncio.get_running_loop().create_task(
                    self._write_bursts(), name="hub-bursts"
                )
        return len(sessions)

    def publish_ack(self, object_id: int, acked_alert_id: int, unread: int) -> None:
        """Tell every open inbox of `object_id` where its read cursor is now.

        A notice, not an alert: `{"acked_alert_id": N, "unread": M}` (SSE: `event: ack`, no
        id), never de-duplicated against alert ids, under the same slow-client bound.
        """
        payload = orjson.dumps({"acked_alert_id": acked_alert_id, "unread": unread})
        prepared = Prepared(0, payload, event=b"ack")
        if self._bursts:  # its count includes alerts still being written: they go first
            self._write_bursts_ahead([object_id])
        for session in tuple(self._by_object.get(object_id, ())):
            session.offer(prepared)

    def _write_slice(self, burst: _Burst, size: int, beside_burst: bool = False) -> None:
        start = burst.done
        end = min(start + size, len(burst.sessions))
        prepared = burst.prepared
        written = 0
        for session in burst.sessions[start:end]:
            if session.offer(prepared):
                written += 1
        burst.done = end
        self.meter.sent_live(prepared.alert_id, written, beside_burst)

    def _write_bursts_ahead(self, object_ids: list[int]) -> None:
        """Write every unfinished burst's frame to these objects' sessions before a newer
        frame (oldest burst first), so ids reach each stream in order."""
        for burst in self._bursts:
            written = 0
            for oid in object_ids:
                if oid in burst.objects:
                    for session in self._by_object.get(oid, ()):
                        if session.offer(burst.prepared):
                            written += 1
            self.meter.sent_live(burst.prepared.alert_id, written)

    async def _write_bursts(self) -> None:
        try:
            while self._bursts:
                await asyncio.sleep(0)  # the loop's turn: other alerts, reads, pings
                burst = self._bursts[0]
                self._write_slice(burst, SLICE)
                if burst.done >= len(burst.sessions):
                    self._bursts.popleft()
                    self.meter.burst_done(burst.prepared.alert_id)
        finally:
            self._burst_writer = None

    async def stop(self) -> None:
        """Shutting down: finish no burst (its sockets are closing)."""
        self._freezer.thaw()
        self._bursts.clear()
        task = self._burst_writer
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
