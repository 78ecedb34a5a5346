"""Group commit for POST /alert: the committer that writes concurrent alerts together.

Every alert transaction that notifies takes a cluster-wide lock at COMMIT and holds it through
the WAL flush (PreCommit_Notify), and the id lock of `alerts_assign_id` orders alert writers
anyway: one alert per transaction caps alerts/s at about 1 / commit latency. So requests that
arrive while a batch is being written wait for it to finish and then go together, in arrival
order, in the next batch: one set-based statement (sql/insert_alerts_to_ids.sql), which is its
own transaction and one COMMIT. There is no timer: an idle committer writes a lone alert at
once, and batches grow only when requests pile up behind a commit.

One committer per process, so one batch in flight per process. A second one would only wait
on the id lock for the first to commit, holding a pooled connection and halving the batches;
with several worker processes their committers already take turns at that lock.

Failures: a lost or unreachable database fails the whole batch with the same 503 (one
statement: all of it committed or none). Any other error re-runs each alert of the batch on
its own, so the alert at fault gets its own error and its batch-mates their own answers.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from .db import Database, Row
from .errors import DatabaseUnavailable, ServerBusy

log = logging.getLogger(__name__)

# One statement should stay quick to plan, send and run: a batch stops growing at whichever
# bound it meets first (it always takes at least one alert).
MAX_ALERTS = 512
MAX_RECIPIENTS = 100_000


@dataclass(slots=True)
class Pending:
    text: str
    object_ids: Sequence[int]
    answer: asyncio.Future[Row] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class AlertCommitter:
    """Queues alerts and writes them in batches, one batch at a time, in arrival order."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._queue: deque[Pending] = deque()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.batches = 0
        self.alerts = 0

    @property
    def waiting(self) -> int:
        """Alerts queued for the next batch (not those being written now)."""
        return len(self._queue)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="alert-committer")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        while self._queue:
            self._fail(self._queue.popleft(), ServerBusy("the server is shutting down"))

    async def insert(self, text: str, object_ids: Sequence[int]) -> Row:
        """Store an alert for the existing ids among `object_ids`; its row once committed."""
        if self._task is None or self._task.done():
            raise ServerBusy("the alert committer is not running")
        pending = Pending(text, object_ids)
        self._queue.append(pending)
        self._wakeup.set()
        return await pending.answer

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._queue:
                batch = self._take()
                try:
                    await self._commit(batch)
                except Exception as exc:  # the committer outlives any one batch
                    log.exception("writing a batch of %d alerts failed", len(batch))
                    for pending in batch:
                        self._fail(pending, exc)

    def _take(self) -> list[Pending]:
        batch: list[Pending] = []
        recipients = 0
        while self._queue and len(batch) < MAX_ALERTS:
            pending = self._queue[0]
            if batch and recipients + len(pending.object_ids) > MAX_RECIPIENTS:
                break
            self._queue.popleft()
            if pending.answer.done():  # its request was cancelled while it waited
                continue
            batch.append(pending)
            recipients += len(pending.object_ids)
        return batch

    async def _commit(self, batch: list[Pending]) -> None:
        if not batch:
            return
        try:
            rows = await self.db.insert_alerts(
                [p.text for p in batch], [p.object_ids for p in batch]
            )
        except (DatabaseUnavailable, ServerBusy) as exc:
            # Nothing of the batch is stored (or, if the connection died during COMMIT, all of
            # it is: the same uncertainty as one alert, which Idempotency-Key resolves).
            for pending in batch:
                self._fail(pending, type(exc)(exc.message))
            return
        except Exception as exc:
            if len(batch) == 1:
                self._fail(batch[0], exc)
                return
            log.warning(
                "a batch of %d alerts failed (%s: %s); writing each on its own",
                len(batch),
                type(exc).__name__,
                exc,
            )
            for pending in batch:
                await self._commit([pending])
            return
        self.batches += 1
        self.alerts += len(rows)
        for pending, row in zip(batch, rows, strict=True):
            if not pending.answer.done():
                pending.answer.set_result(row)

    @staticmethod
    def _fail(pending: Pending, exc: BaseException) -> None:
        if not pending.answer.done():
            pending.answer.set_exception(exc)
