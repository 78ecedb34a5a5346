"""The process's one LISTEN connection: receive notifications, resolve them, hand them to the hub.

Two tasks:
- the supervisor keeps a dedicated connection (never a pooled one) LISTENing on `alerts`,
  reconnecting with capped exponential backoff when it drops;
- the dispatcher takes notifications off a queue in arrival order (= commit order = id order)
  and publishes each alert's frame, which its notification carries (migration 0005), to the
  hub; the frames of a batch too long to ride in their notifications are read in one query.

Read-cursor moves arrive on channel `acks` on the same connection, so they keep their commit
order relative to alerts: each is handed to the hub (`publish_ack`) after every alert that
committed before it and before every alert that committed after it, which is what makes its
`unread` count right at that point of each stream (migration 0004).

No alert is lost across a lost connection: each (re)connect queues a catch-up *before* it
issues LISTEN, and the dispatcher runs it only once LISTEN is active, with a fresh snapshot:
everything committed after the last alert dispatched (`high_water`) is read from the tables;
everything committing later arrives as a notification. Overlap is dropped by id (`high_water`
here, each session's `last_id` in the hub). If the dispatcher itself fails (say the pool is
down), it drops its queue and forces a reconnect, whose catch-up covers what was dropped.
Acks missed meanwhile are not replayed one by one: the catch-up reads, in its snapshot, the
cursor and unread count of every connected object whose cursor ever moved, and tells its
inboxes once. An ack notification that committed before that snapshot (a cursor no higher than
the one just told) is then dropped, so a stale count never follows a fresh one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import asyncpg
import orjson
from aiohttp import web

from .db import CONNECTION_ERRORS, SERVER_SETTINGS, Database
from .errors import DatabaseUnavailable
from .hub import Hub
from .keys import config_key, db_key, hub_key, listener_key

log = logging.getLogger(__name__)

CHANNEL = "alerts"
ACK_CHANNEL = "acks"
# A failed dispatch is recovered by reconnecting and catching up from the tables.
# The db layer reports a lost pool connection as DatabaseUnavailable: without it here, the
# first failed catch-up killed the dispatcher and every later alert went undelivered.
RESYNC_ERRORS: tuple[type[BaseException], ...] = (
    *CONNECTION_ERRORS,
    asyncpg.PostgresError,
    DatabaseUnavailable,
)
BATCH = 256  # notifications resolved per query; below WS_QUEUE_SIZE so a burst fits a queue


@dataclass(frozen=True, slots=True)
class Notification:
    alert_id: int
    object_ids: list[int] | None  # None: too many to list in the payload, look them up
    frame: bytes | None  # None: too long to carry in the payload, read it (migration 0005)


@dataclass(frozen=True, slots=True)
class AckNotification:
    object_id: int
    acked_alert_id: int
    unread: int


@dataclass(frozen=True, slots=True)
class _CatchUp:
    """Queue marker: read what was committed while this process was not listening."""

    generation: int  # which connection queued it; only the current one may report "ready"


class Listener:
    def __init__(
        self,
        dsn: str,
        db: Database,
        hub: Hub,
        *,
        timeout: float = 5.0,
        reconnect_max: float = 5.0,
        probe_interval: float = 10.0,
    ) -> None:
        self.dsn = dsn
        self.db = db
        self.hub = hub
        self.timeout = timeout
        self.reconnect_max = reconnect_max
        self.probe_interval = probe_interval
        self._generation = 0
        self.high_water: int | None = None  # last alert id dispatched (or known to be past)
        # The newest alert id this process has heard of, dispatched or still queued.
        self.last_seen = 0
        self.reconnects = 0
        self.dispatched = 0
        self.recovered = 0  # alerts delivered by a catch-up rather than by a notification
        self._queue: asyncio.Queue[Notification | AckNotification | _CatchUp] = asyncio.Queue()
        # Cursors told by the last catch-up: an ack notification not above one is older.
        self._caught_up_acks: dict[int, int] = {}
        self._listening = asyncio.Event()
        self._caught_up = asyncio.Event()
        self._conn: asyncpg.Connection | None = None
        self._lost: asyncio.Event | None = None
        self._tasks: list[asyncio.Task[None]] = []

    # -- state ------------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """LISTEN is active and what was missed while it was not has been delivered."""
        return self._listening.is_set() and self._caught_up.is_set()

    def nothing_after(self, alert_id: int) -> bool:
        """True when no alert newer than `alert_id` has committed before now, as far as this
        process can know: LISTEN is up and caught up, and no notification of a newer one came.

        An inbox registered with the hub and resuming after such an id has no backlog: any
        newer alert committed before it registered has not been heard of yet, so it will be
        dispatched, with the inbox among its recipients, once its notification comes.
        """
        return self.ready and alert_id >= self.last_seen

    async def wait_ready(self, timeout: float) -> None:
        async def both() -> None:
            await self._listening.wait()
            await self._caught_up.wait()

        await asyncio.wait_for(both(), timeout)

    # -- life cycle -------------------------------------------------------------------------

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._supervise(), name="listener-supervisor"),
            asyncio.create_task(self._dispatch_forever(), name="listener-dispatcher"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._close_connection()

    # -- the connection ---------------------------------------------------------------------

    async def _supervise(self) -> None:
        delay = 0.05
        while True:
            try:
                await self._listen_once()
                delay = 0.05  # it was up: come back quickly
            except CONNECTION_ERRORS as exc:
                log.warning("LISTEN connection failed: %s: %s", type(exc).__name__, exc)
            except Exception:  # the supervisor must outlive any one connection's failure
                log.exception("LISTEN connection failed unexpectedly")
            finally:
                self._listening.clear()
                self._caught_up.clear()
                await self._close_connection()
            self.reconnects += 1
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, self.reconnect_max)

    async def _listen_once(self) -> None:
        conn = await asyncpg.connect(
            self.dsn, timeout=self.timeout, server_settings=SERVER_SETTINGS
        )
        self._conn = conn
        self._generation += 1
        lost = self._lost = asyncio.Event()
        conn.add_termination_listener(lambda _conn: lost.set())
        # Queued before LISTEN: no notification received on this connection can overtake it.
        self._queue.put_nowait(_CatchUp(self._generation))
        await conn.add_listener(CHANNEL, self._on_notification)
        await conn.add_listener(ACK_CHANNEL, self._on_ack)
        self._listening.set()
        log.info("listening on channels %r and %r", CHANNEL, ACK_CHANNEL)
        while not lost.is_set():
            # A connection can also die silently (a dropped network path sends no reset):
            # probe it now and then, and treat a probe that fails or hangs as a lost connection.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(lost.wait(), self.probe_interval)
                break
            await conn.fetchval("SELECT 1", timeout=self.timeout)
        log.warning("LISTEN connection lost")

    async def _close_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            with contextlib.suppress(*CONNECTION_ERRORS):
                await asyncio.wait_for(conn.close(), self.timeout)
            if not conn.is_closed():
                conn.terminate()

    def _force_reconnect(self) -> None:
        if self._lost is not None:
            self._lost.set()

    def _on_notification(self, _conn: object, _pid: int, _channel: str, payload: object) -> None:
        try:
            assert isinstance(payload, str)
            data = orjson.loads(payload)
            ids = data["object_ids"]
            frame = data.get("frame")
            notification = Notification(
                int(data["alert_id"]),
                None if ids is None else [int(i) for i in ids],
                None if frame is None else frame.encode(),
            )
        except (AssertionError, AttributeError, ValueError, KeyError, TypeError) as exc:
            log.error("ignoring malformed notification %r: %s", str(payload)[:200], exc)
            return
        self.hub.meter.notified(notification.alert_id)
        self.last_seen = max(self.last_seen, notification.alert_id)
        self._queue.put_nowait(notification)

    def _on_ack(self, _conn: object, _pid: int, _channel: str, payload: object) -> None:
        try:
            assert isinstance(payload, str)
            data = orjson.loads(payload)
            note = AckNotification(
                int(data["object_id"]), int(data["acked_alert_id"]), int(data["unread"])
            )
        except (AssertionError, ValueError, KeyError, TypeError) as exc:
            log.error("ignoring malformed ack notification %r: %s", str(payload)[:200], exc)
            return
        self._queue.put_nowait(note)

    # -- dispatch ---------------------------------------------------------------------------

    async def _dispatch_forever(self) -> None:
        while True:
            first = await self._queue.get()
            try:
                if isinstance(first, _CatchUp):
                    await self._catch_up(first)
                    continue
                if isinstance(first, AckNotification):
                    self._publish_ack(first)
                    continue
                batch = [first]
                while len(batch) < BATCH and not self._queue.empty():
                    item = self._queue.get_nowait()
                    if isinstance(item, _CatchUp):
                        await self._dispatch(batch)
                        batch = []
                        await self._catch_up(item)
                        break
                    if isinstance(item, AckNotification):
                        # In commit order: the alerts before it first.
                        await self._dispatch(batch)
                        batch = []
                        self._publish_ack(item)
                        break
                    batch.append(item)
                if batch:
                    await self._dispatch(batch)
                if not self._queue.empty():
                    # Frames ride in the notifications, so a dispatch need not wait for
                    # anything: let the loop read sockets between batches rather than write
                    # every frame of a long run of notifications first.
                    await asyncio.sleep(0)
            except Exception as exc:
                # high_water did not move past what failed: the reconnect's catch-up re-reads it.
                if isinstance(exc, RESYNC_ERRORS):
                    log.warning(
                        "dispatch failed (%s: %s); re-synchronising", type(exc).__name__, exc
                    )
                else:  # a bug, but the dispatcher must not die of it: nothing would be delivered
                    log.exception("dispatch failed unexpectedly; re-synchronising")
                self._drain_queue()
                self._force_reconnect()
                await asyncio.sleep(0.05)

    def _drain_queue(self) -> None:
        while not self._queue.empty():
            self._queue.get_nowait()

    async def _catch_up(self, marker: _CatchUp) -> None:
        await self._listening.wait()
        since = self.high_water
        if since is None:
            # First start: nothing was dispatched yet and no socket can predate the listener.
            since_objects: list[int] = []
        else:
            since_objects = self.hub.connected_objects()
        last, rows, reads = await self.db.catch_up(since or 0, since_objects)
        for alert_id, frame, object_ids in rows:
            self.hub.publish(alert_id, frame, object_ids)
            self.dispatched += 1
            self.recovered += 1
        if rows:
            log.info("caught up %d alert(s) after id %s", len(rows), since)
        # Acks missed while not listening: where each cursor stands now, told once (it may
        # not have moved: the frame is a state, so telling it again is harmless).
        for state in reads:
            self.hub.publish_ack(state.object_id, state.acked_alert_id, state.unread)
        self._caught_up_acks = {state.object_id: state.acked_alert_id for state in reads}
        self.high_water = max(last, since or 0)
        self.last_seen = max(self.last_seen, self.high_water)
        if marker.generation == self._generation and self._listening.is_set():
            self._caught_up.set()

    def _publish_ack(self, note: AckNotification) -> None:
        if note.acked_alert_id <= self._caught_up_acks.get(note.object_id, 0):
            return  # committed before the last catch-up's snapshot, which told a newer state
        self.hub.publish_ack(note.object_id, note.acked_alert_id, note.unread)

    async def _dispatch(self, batch: list[Notification]) -> None:
        high_water = self.high_water or 0
        targets: list[tuple[int, list[int]]] = []
        frames: dict[int, bytes] = {}
        for note in batch:
            if note.alert_id <= high_water:
                continue  # already delivered by a catch-up
            if note.object_ids is None:
                connected = self.hub.connected_objects()
                recipients = (
                    await self.db.connected_recipients(note.alert_id, connected)
                    if connected
                    else []
                )
            else:
                recipients = [oid for oid in note.object_ids if self.hub.is_connected(oid)]
            if recipients:
                targets.append((note.alert_id, recipients))
                if note.frame is not None:
                    frames[note.alert_id] = note.frame
        # Frames too long to ride in their notification (rare): read in one query.
        missing = [alert_id for alert_id, _ in targets if alert_id not in frames]
        if missing:
            frames.update(await self.db.alert_frames(missing))
        for alert_id, recipients in targets:
            frame = frames.get(alert_id)
            if frame is not None:
                self.hub.publish(alert_id, frame, recipients)
                self.dispatched += 1
        self.high_water = max(high_water, batch[-1].alert_id)


def listener_context(dsn: str) -> Callable[[web.Application], AsyncIterator[None]]:
    """The app's LISTEN connection on `dsn` as a cleanup context, after the pool's: the server
    accepts connections only once it listens and has caught up, so no inbox can connect while
    alerts would go unheard."""

    async def listener_ctx(app: web.Application) -> AsyncIterator[None]:
        config = app[config_key]
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

    return listener_ctx
