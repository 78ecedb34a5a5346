"""Group commit of POST /alert and POST /object: committers that write concurrent requests
together, one set-based statement (so one transaction, one COMMIT) per batch.

Why alerts: every alert transaction notifies, and PostgreSQL takes a cluster-wide lock at the
COMMIT of a notifying transaction and holds it through the WAL flush (PreCommit_Notify); the id
lock of `alerts_assign_id` orders alert writers anyway. One alert per transaction caps alerts/s
at about 1 / commit latency. Why objects: nothing serialises them, but a round trip and a
COMMIT per object are most of what a POST /object costs this process (py-spy: the socket
writes to PostgreSQL), and a batch pays them once.

How: a request queues its item and waits. A committer task that is free takes everything
queued (up to its bounds), writes it in one statement, and answers each request with its own
row. There is no timer: an idle committer writes a lone item at once, and batches grow only
when requests pile up behind the batches in flight.

How many in flight: alerts have ONE committer per process. A second would only wait on the id
lock for the first to commit, holding a pooled connection and halving the batches. Objects have
two, so one batch can be sent while the other waits for its WAL flush.

Several processes (`--workers W`, or hosts): their alert committers take turns at the id lock.
A batch sent while another process's batch holds the lock waits for it inside PostgreSQL, with
only what its own process had gathered when it was sent: with 2 workers, batches half the size
and twice the commits for the same alerts (7.5 against 14 alerts per commit, 32 in flight),
each commit costing PostgreSQL about 1 ms of CPU. So a committer whose last batch found the
lock held (the statement says so) first waits for its turn (sql/wait_alert_id_lock.sql: until
the lock is free, without taking it), and only then takes its queue: its batch gathers for the
whole of the other process's commit. It does so for as long as the lock was found held within
the last second (CONTENTION_MEMORY): a lone writer never pays the extra round trip.

Failures: a lost or unreachable database fails the whole batch with the same 503 (one
statement: all of it committed or none). Any other error re-runs each item of the batch on its
own, so the item at fault gets its own error and its batch-mates their own answers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from aiohttp import web

from .db import Database, Row
from .errors import DatabaseUnavailable, ServerBusy
from .keys import admission_key, alert_committer_key, db_key, object_committer_key

log = logging.getLogger(__name__)

Item = TypeVar("Item")

# One statement should stay quick to plan, send and run: a batch stops growing at whichever
# bound it meets first (it always takes at least one item).
MAX_BATCH = 512
MAX_RECIPIENTS = 100_000  # object ids over all the alerts of one batch
OBJECT_COMMITTERS = 2
# How long, after an alert batch (or a turn) last found the id lock held by another transaction,
# each batch first waits for its turn (see the module docstring).
CONTENTION_MEMORY = 1.0


@dataclass(slots=True, frozen=True)
class NewAlert:
    text: str
    object_ids: Sequence[int]


@dataclass(slots=True, frozen=True)
class NewObject:
    email: str
    phone_number: str


@dataclass(slots=True)
class Pending(Generic[Item]):
    item: Item
    queued_at: float = field(default_factory=time.monotonic)
    answer: asyncio.Future[Row] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class Committer(Generic[Item]):
    """Queues items and writes them in batches, in arrival order, `concurrency` at a time."""

    def __init__(
        self,
        name: str,
        write: Callable[[list[Item]], Awaitable[list[Row]]],
        *,
        concurrency: int = 1,
        weight: Callable[[Item], int] = lambda _: 0,
        max_weight: int = 0,
        turn: Callable[[], Awaitable[bool]] | None = None,
    ) -> None:
        self.name = name
        self._write = write
        # Awaited before each batch is taken (the queue gathers meanwhile); True: it waited.
        self._turn = turn
        self._concurrency = concurrency
        self._weight = weight
        self._max_weight = max_weight
        self._queue: deque[Pending[Item]] = deque()
        self._ready = asyncio.Condition()
        self._tasks: list[asyncio.Task[None]] = []
        self.batches = 0
        self.items = 0
        self.turns = 0  # batches that waited for their turn first

    @property
    def waiting(self) -> int:
        """Items queued for a next batch (not those being written now)."""
        return len(self._queue)

    def oldest_wait(self) -> float:
        """Seconds the oldest queued item has waited for a batch (0 with none queued): what
        admission control (WRITES_MAX_WAIT) judges the queue by."""
        if not self._queue:
            return 0.0
        return time.monotonic() - self._queue[0].queued_at

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._run(), name=f"{self.name}-committer-{n}")
            for n in range(self._concurrency)
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        while self._queue:
            self._fail(self._queue.popleft(), ServerBusy("the server is shutting down"))

    async def submit(self, item: Item) -> Row:
        """Write `item` in the next batch; its row once committed."""
        if not any(not task.done() for task in self._tasks):
            raise ServerBusy(f"the {self.name} committer is not running")
        pending = Pending(item)
        self._queue.append(pending)
        async with self._ready:
            self._ready.notify()
        return await pending.answer

    async def _run(self) -> None:
        while True:
            async with self._ready:
                await self._ready.wait_for(lambda: bool(self._queue))
            if self._turn is not None and await self._turn():
                self.turns += 1
            batch = self._take()
            try:
                await self._commit(batch)
            except Exception as exc:  # the committer outlives any one batch
                log.exception("writing a batch of %d %s failed", len(batch), self.name)
                for pending in batch:
                    self._fail(pending, exc)

    def _take(self) -> list[Pending[Item]]:
        batch: list[Pending[Item]] = []
        weight = 0
        while self._queue and len(batch) < MAX_BATCH:
            pending = self._queue[0]
            item_weight = self._weight(pending.item)
            if batch and self._max_weight and weight + item_weight > self._max_weight:
                break
            self._queue.popleft()
            if pending.answer.done():  # its request was cancelled while it waited
                continue
            batch.append(pending)
            weight += item_weight
        return batch

    async def _commit(self, batch: list[Pending[Item]]) -> None:
        if not batch:
            return
        try:
            rows = await self._write([pending.item for pending in batch])
        except (DatabaseUnavailable, ServerBusy) as exc:
            # Nothing of the batch is stored (or, if the connection died during COMMIT, all of
            # it is: the same uncertainty as one request, which Idempotency-Key resolves).
            for pending in batch:
                self._fail(pending, type(exc)(exc.message))
            return
        except Exception as exc:
            if len(batch) == 1:
                self._fail(batch[0], exc)
                return
            log.warning(
                "a batch of %d %s failed (%s: %s); writing each on its own",
                len(batch),
                self.name,
                type(exc).__name__,
                exc,
            )
            for pending in batch:
                await self._commit([pending])
            return
        self.batches += 1
        self.items += len(rows)
        for pending, row in zip(batch, rows, strict=True):
            if not pending.answer.done():
                pending.answer.set_result(row)

    @staticmethod
    def _fail(pending: Pending[Item], exc: BaseException) -> None:
        if not pending.answer.done():
            pending.answer.set_exception(exc)


class AlertWrites:
    """How the alert committer writes a batch, and when its next batch may go (see the module
    docstring: turns at the id lock)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.contended_at = float("-inf")  # when a batch or a turn last found the lock held

    async def write(self, alerts: list[NewAlert]) -> list[Row]:
        rows = await self.db.insert_alerts([a.text for a in alerts], [a.object_ids for a in alerts])
        if rows and not rows[0]["id_lock_was_free"]:
            self.contended_at = time.monotonic()
        return rows

    async def turn(self) -> bool:
        """Wait until the id lock is free (one round trip) if it was found held within the last
        CONTENTION_MEMORY seconds; True when it did."""
        if time.monotonic() - self.contended_at >= CONTENTION_MEMORY:
            return False
        try:
            if not await self.db.wait_for_alert_id_lock():
                self.contended_at = time.monotonic()
        except Exception as exc:
            # Only a wait: the batch goes now and meets (and answers for) the same trouble.
            log.warning("waiting for the alert-id lock failed (%s: %s)", type(exc).__name__, exc)
        return True


def alert_committer(db: Database) -> Committer[NewAlert]:
    writes = AlertWrites(db)
    return Committer(
        "alerts",
        writes.write,
        concurrency=1,
        weight=lambda alert: len(alert.object_ids),
        max_weight=MAX_RECIPIENTS,
        turn=writes.turn,
    )


def object_committer(db: Database) -> Committer[NewObject]:
    async def write(objects: list[NewObject]) -> list[Row]:
        return await db.insert_objects(
            [o.email for o in objects], [o.phone_number for o in objects]
        )

    return Committer("objects", write, concurrency=OBJECT_COMMITTERS)


async def committers_context(app: web.Application) -> AsyncIterator[None]:
    """The app's committers, on its pool, as a cleanup context: stopped after the last request
    (a request still queued then is answered 503 server_busy)."""
    alerts = app[alert_committer_key] = alert_committer(app[db_key])
    objects = app[object_committer_key] = object_committer(app[db_key])
    app[admission_key].watch(alerts.oldest_wait)
    app[admission_key].watch(objects.oldest_wait)
    alerts.start()
    objects.start()
    yield
    await alerts.stop()
    await objects.stop()
