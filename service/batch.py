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
lock for the first to commit, holding a pooled connection and halving the batches; with
several worker processes their committers already take turns at that lock. Objects have two,
so one batch can be sent while the other waits for its WAL flush.

Failures: a lost or unreachable database fails the whole batch with the same 503 (one
statement: all of it committed or none). Any other error re-runs each item of the batch on its
own, so the item at fault gets its own error and its batch-mates their own answers.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from aiohttp import web

from .db import Database, Row
from .errors import DatabaseUnavailable, ServerBusy
from .keys import alert_committer_key, db_key, object_committer_key

log = logging.getLogger(__name__)

Item = TypeVar("Item")

# One statement should stay quick to plan, send and run: a batch stops growing at whichever
# bound it meets first (it always takes at least one item).
MAX_BATCH = 512
MAX_RECIPIENTS = 100_000  # object ids over all the alerts of one batch
OBJECT_COMMITTERS = 2


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
    ) -> None:
        self.name = name
        self._write = write
        self._concurrency = concurrency
        self._weight = weight
        self._max_weight = max_weight
        self._queue: deque[Pending[Item]] = deque()
        self._ready = asyncio.Condition()
        self._tasks: list[asyncio.Task[None]] = []
        self.batches = 0
        self.items = 0

    @property
    def waiting(self) -> int:
        """Items queued for a next batch (not those being written now)."""
        return len(self._queue)

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


def alert_committer(db: Database) -> Committer[NewAlert]:
    async def write(alerts: list[NewAlert]) -> list[Row]:
        return await db.insert_alerts([a.text for a in alerts], [a.object_ids for a in alerts])

    return Committer(
        "alerts",
        write,
        concurrency=1,
        weight=lambda alert: len(alert.object_ids),
        max_weight=MAX_RECIPIENTS,
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
    alerts.start()
    objects.start()
    yield
    await alerts.stop()
    await objects.stop()
