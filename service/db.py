"""The database layer: the connection pool, the SQL in `sql/`, and one typed call per query.

Handlers pass plain, validated values in; rows come back as dicts or typed tuples. Every call
runs inside a transaction on a pooled connection: a call of one statement in that statement's
own (implicit) transaction, one round trip in all; a call of several in an explicit one. One
style for reads and writes: a `Database` method takes its own connection; a call that may
share the caller's transaction (a single write, the idempotency claim around it) is a function
of the connection the caller holds. The tables are read and written only through these
calls. A lost or unreachable server surfaces as `DatabaseUnavailable` (503), never as a driver
exception; a pool whose connections are all busy past DB_TIMEOUT, while the server answers, as
`ServerBusy`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, NamedTuple

import asyncpg
from aiohttp import web
from asyncpg.pool import PoolConnectionProxy

from .errors import DatabaseUnavailable, NotAnAlertOfObject, NotFound, ServerBusy
from .keys import config_key, db_key

log = logging.getLogger(__name__)

SQL_DIR = Path(__file__).resolve().parent.parent / "sql"

# What a dropped, restarting or unreachable server looks like from asyncpg.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.InterfaceError,  # includes ConnectionDoesNotExistError
    asyncpg.PostgresConnectionError,  # SQLSTATE class 08
    asyncpg.exceptions.OperatorInterventionError,  # class 57: admin shutdown, cannot connect now
    asyncpg.exceptions.InsufficientResourcesError,  # class 53: too many connections
    # A pooled connection whose server was killed while it sat idle: until the socket's EOF
    # is read, its next query fails with "cannot switch to state ...". The pool drops it.
    asyncpg.exceptions.InternalClientError,
)

# A named prepared statement missing on, or already on, the server connection: what a
# transaction pooler does to asyncpg's statement cache when DB_TRANSACTION_POOLING is off.
POOLER_SYMPTOMS: tuple[type[BaseException], ...] = (
    asyncpg.exceptions.InvalidSQLStatementNameError,
    asyncpg.exceptions.DuplicatePreparedStatementError,
)

SERVER_SETTINGS = {"timezone": "UTC", "application_name": "inbox"}
STATEMENT_CACHE_SIZE = 100  # asyncpg's default


def load_queries(directory: Path = SQL_DIR) -> SimpleNamespace:
    """Every `name.sql` in `directory` as attribute `name`."""
    return SimpleNamespace(
        **{path.stem: path.read_text() for path in sorted(directory.glob("*.sql"))}
    )


Q = load_queries()

Row = dict[str, Any]


class ReadState(NamedTuple):
    """Where an object's read cursor stands, and how many of its alerts are after it."""

    object_id: int
    acked_alert_id: int
    unread: int


@asynccontextmanager
async def unavailable_as_503() -> AsyncIterator[None]:
    """Turn connection failures into the one domain error the middleware maps to 503."""
    try:
        yield
    except CONNECTION_ERRORS as exc:
        log.warning("database unavailable: %s: %s", type(exc).__name__, exc)
        raise DatabaseUnavailable("the database is unreachable; retry shortly") from exc
    except POOLER_SYMPTOMS as exc:
        log.error(
            "%s: %s: is DATABASE_URL a transaction-pooling PgBouncer? Then set "
            "DB_TRANSACTION_POOLING=true (see the README, Behind PgBouncer)",
            type(exc).__name__,
            exc,
        )
        raise


async def keep_session(_conn: asyncpg.Connection) -> None:
    """Pool reset: nothing beyond what asyncpg always does (roll back an open transaction).

    Pooled connections never carry session state (no SET, LISTEN, cursor or session-level
    lock: the id lock is transaction-scoped), so the default reset query would only cost
    one more round trip per call.
    """


async def create_pool(
    dsn: str, *, min_size: int, max_size: int, timeout: float, transaction_pooling: bool = False
) -> asyncpg.Pool:
    """With `transaction_pooling` (DB_TRANSACTION_POOLING), asyncpg keeps no named statement:
    behind a transaction pooler the next call may run on another server connection."""
    return await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        timeout=timeout,
        command_timeout=timeout,
        server_settings=SERVER_SETTINGS,
        reset=keep_session,
        statement_cache_size=0 if transaction_pooling else STATEMENT_CACHE_SIZE,
    )


if TYPE_CHECKING:
    Connection = PoolConnectionProxy[asyncpg.Record]
else:
    Connection = PoolConnectionProxy


# Calls on a connection the caller holds, for statements that may share its transaction: the
# single writes (alone, one statement in its own transaction: Database.connection) and the
# idempotency claim, lookup and stored response around them (idempotency.py, in an explicit
# one). Every other call is a Database method that takes its own connection.


async def insert_object(conn: Connection, email: str, phone_number: str) -> Row:
    row = await conn.fetchrow(Q.insert_object, email, phone_number)
    assert row is not None
    return dict(row)


async def insert_alert(conn: Connection, text: str, object_ids: Sequence[int] | None) -> Row:
    """Store an alert for the existing ids among `object_ids`, or for everyone if None."""
    if object_ids is None:
        row = await conn.fetchrow(Q.insert_alert_to_all, text)
    else:
        row = await conn.fetchrow(Q.insert_alert_to_ids, text, object_ids)
    assert row is not None
    return dict(row)


class StoredResponse(NamedTuple):
    """An idempotency key's row: what the claiming request hashed to, and its answer (None
    until the claiming transaction stores it)."""

    request_hash: bytes
    status: int | None
    response: str | None


async def claim_idempotency_key(
    conn: Connection, key: str, route: str, request_hash: bytes, ttl: int
) -> bool:
    """Claim `key` on `route` (or re-claim it once older than `ttl` s); False: it is live and
    answered. Waits while another transaction holds a claim on it."""
    return bool(await conn.fetchval(Q.claim_idempotency_key, key, route, request_hash, ttl))


async def get_idempotency_key(conn: Connection, key: str, route: str) -> StoredResponse | None:
    row = await conn.fetchrow(Q.get_idempotency_key, key, route)
    if row is None:
        return None
    return StoredResponse(bytes(row["request_hash"]), row["status"], row["response"])


async def store_idempotent_response(
    conn: Connection, key: str, route: str, status: int, response: str
) -> None:
    """The answer to replay, stored before the claiming transaction commits."""
    await conn.execute(Q.store_idempotent_response, key, route, status, response)


class Database:
    """The queries of the service over one pool."""

    def __init__(
        self, pool: asyncpg.Pool, *, timeout: float, transaction_pooling: bool = False
    ) -> None:
        self.pool = pool
        self.timeout = timeout
        # Behind a transaction pooler (PgBouncer, pool_mode=transaction), a server connection
        # is ours only inside a transaction. asyncpg sends a query in two round trips (Parse
        # and Describe, then Bind and Execute): outside a transaction the second may land on
        # another server connection, which never saw the first.
        self.transaction_pooling = transaction_pooling

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Connection]:
        """For one statement, which is its own transaction: no BEGIN/COMMIT round trips.

        For an alert that matters beyond speed: the id lock of `alerts_assign_id` is then held
        only inside the server, never across a round trip to this process. Behind a transaction
        pooler (DB_TRANSACTION_POOLING) it is an explicit transaction all the same.
        """
        if self.transaction_pooling:
            async with self.transaction() as conn:
                yield conn
            return
        async with unavailable_as_503():
            conn = await self._acquire()
            try:
                yield conn
            finally:
                await self.pool.release(conn)

    @asynccontextmanager
    async def transaction(self, **options: Any) -> AsyncIterator[Connection]:
        """Several statements in one explicit transaction (`options` as asyncpg's)."""
        async with unavailable_as_503():
            conn = await self._acquire()
            try:
                async with conn.transaction(**options):
                    yield conn
            finally:
                await self.pool.release(conn)

    async def _acquire(self) -> Connection:
        """A pooled connection; waiting too long for one the pool has is `ServerBusy`.

        A timeout while every connection is open and in use means this process has more work
        than connections, not that the database is down: that is `server_busy`. A timeout with
        room in the pool was spent opening a connection: the database is unreachable.
        """
        try:
            conn: Connection = await self.pool.acquire(timeout=self.timeout)
        except TimeoutError:
            pool = self.pool
            if pool.get_size() >= pool.get_max_size() and pool.get_idle_size() == 0:
                raise ServerBusy(
                    f"no database connection came free in {self.timeout:g} s; retry shortly"
                ) from None
            raise
        return conn

    async def ping(self) -> None:
        async with self.connection() as conn:
            await conn.fetchval("SELECT 1")

    # -- objects --------------------------------------------------------------------------

    async def get_object(self, object_id: int) -> Row | None:
        async with self.connection() as conn:
            row = await conn.fetchrow(Q.get_object, object_id)
        return dict(row) if row else None

    async def object_exists(self, object_id: int) -> bool:
        async with self.connection() as conn:
            return bool(await conn.fetchval(Q.object_exists, object_id))

    # -- alerts ---------------------------------------------------------------------------

    async def get_alert(self, alert_id: int) -> Row | None:
        async with self.connection() as conn:
            row = await conn.fetchrow(Q.get_alert, alert_id)
        return dict(row) if row else None

    async def insert_objects(
        self, emails: Sequence[str], phone_numbers: Sequence[str]
    ) -> list[Row]:
        """Store a batch of objects in one statement (one transaction); rows in input order."""
        async with self.connection() as conn:
            rows = await conn.fetch(Q.insert_objects, emails, phone_numbers)
        return [dict(row) for row in rows]

    async def insert_alerts(
        self, texts: Sequence[str], object_ids: Sequence[Sequence[int]]
    ) -> list[Row]:
        """Store a batch of alerts in one statement (one transaction); rows in input order.

        Alert n goes to the existing ids among `object_ids[n]` (see service/batch.py).
        """
        owners = [n for n, ids in enumerate(object_ids, start=1) for _ in ids]
        wanted = [object_id for ids in object_ids for object_id in ids]
        async with self.connection() as conn:
            rows = await conn.fetch(Q.insert_alerts_to_ids, texts, owners, wanted)
        return [dict(row) for row in rows]

    async def wait_for_alert_id_lock(self) -> bool:
        """Once no other transaction holds the alert-id lock (without taking it); True when it
        was free at once (service/batch.py: a committer's turn)."""
        async with self.connection() as conn:
            return bool(await conn.fetchval(Q.wait_alert_id_lock))

    async def get_alert_for_object(self, alert_id: int, object_id: int) -> Row | None:
        """The alert as one recipient sees it (no other recipients), or None when it is not
        addressed to that object."""
        async with self.connection() as conn:
            row = await conn.fetchrow(Q.get_alert_for_object, alert_id, object_id)
        return dict(row) if row else None

    async def purge_idempotency_keys(self, ttl: int) -> None:
        """Forget keys older than `ttl` s (already ignored; this only reclaims space)."""
        async with self.connection() as conn:
            await conn.execute(Q.purge_idempotency_keys, ttl)

    async def notification_queue_usage(self) -> float:
        """The fraction of the server's NOTIFY queue in use (read by /metrics)."""
        async with self.connection() as conn:
            return float(await conn.fetchval(Q.notification_queue_usage))

    # -- the real-time path ---------------------------------------------------------------

    async def inbox_page(self, object_id: int, after: int, limit: int) -> list[tuple[int, bytes]]:
        """Frames of `object_id`'s alerts with id > `after`, oldest first.

        Planned afresh each time (an unnamed-cache prepare, one more round trip): a generic
        plan cached while the tables looked empty nests two sequential scans, and a 10,000-alert
        backlog then takes seconds instead of milliseconds until the next ANALYZE.
        """
        async with self.connection() as conn:
            if self.transaction_pooling:  # no statement cache: an unnamed one, planned afresh
                rows = await conn.fetch(Q.inbox_page, object_id, after, limit)
            else:
                statement = await conn.prepare(Q.inbox_page)
                rows = await statement.fetch(object_id, after, limit)
        return [(row["id"], row["frame"]) for row in rows]

    async def alert_frames(self, alert_ids: Sequence[int]) -> dict[int, bytes]:
        async with self.connection() as conn:
            rows = await conn.fetch(Q.alert_frames, alert_ids)
        return {row["id"]: row["frame"] for row in rows}

    async def connected_recipients(self, alert_id: int, object_ids: Sequence[int]) -> list[int]:
        async with self.connection() as conn:
            rows = await conn.fetch(Q.connected_recipients, alert_id, object_ids)
        return [row["object_id"] for row in rows]

    async def catch_up(
        self, after: int, object_ids: Sequence[int]
    ) -> tuple[int, list[tuple[int, bytes, list[int]]], list[ReadState]]:
        """The newest alert id, every alert after `after` for `object_ids`, and the read state
        of those of `object_ids` whose cursor ever moved, all in one snapshot (so each unread
        count covers exactly the alerts up to the newest id)."""
        async with self.transaction(isolation="repeatable_read", readonly=True) as conn:
            last = await conn.fetchval(Q.last_alert_id)
            rows = await conn.fetch(Q.catch_up, after, object_ids) if object_ids else []
            reads = await conn.fetch(Q.read_states, object_ids) if object_ids else []
        return (
            last,
            [(row["id"], row["frame"], row["object_ids"]) for row in rows],
            [ReadState(r["object_id"], r["acked_alert_id"], r["unread"]) for r in reads],
        )

    # -- history and the read cursor --------------------------------------------------------

    async def read_cursor(self, object_id: int) -> int | None:
        """The object's read cursor (0: nothing read yet), or None when it does not exist."""
        async with self.connection() as conn:
            value = await conn.fetchval(Q.read_cursor, object_id)
        return None if value is None else int(value)

    async def ack(self, object_id: int, alert_id: int) -> tuple[int, int]:
        """Move the object's read cursor up to `alert_id` (never back): (cursor, unread).

        Raises NotFound for an unknown object and NotAnAlertOfObject when `alert_id` is not
        one of its alerts. When the cursor moves, the database notifies every listening
        process at COMMIT (migration 0004).
        """
        async with self.connection() as conn:
            row = await conn.fetchrow(Q.ack, object_id, alert_id)
        assert row is not None
        if not row["object_exists"]:
            raise NotFound(f"no object with id {object_id}")
        if not row["is_alert_of_object"]:
            raise NotAnAlertOfObject(alert_id, object_id)
        return int(row["acked_alert_id"]), int(row["unread"])


def pool_context(dsn: str) -> Callable[[web.Application], AsyncIterator[None]]:
    """The app's pool on `dsn` as a cleanup context: opened before the server accepts
    connections (a wrong setting fails start-up), closed after the last request."""

    async def pool_ctx(app: web.Application) -> AsyncIterator[None]:
        config = app[config_key]
        pool = await create_pool(
            dsn,
            min_size=config.db_pool_min_size,
            max_size=config.db_pool_max_size,
            timeout=config.db_timeout,
            transaction_pooling=config.db_transaction_pooling,
        )
        app[db_key] = Database(
            pool, timeout=config.db_timeout, transaction_pooling=config.db_transaction_pooling
        )
        yield
        await pool.close()

    return pool_ctx
