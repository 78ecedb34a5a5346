"""The bench's database: the server (DATABASE_URL's or the embedded one with room for 300
clients), a throwaway database per run, and the helpers scenarios use to reset, seed and read it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import psutil

import testbed
from service import migrate

from .common import Tree
from .plan import EMBEDDED_DIR, progress

SEED_OBJECTS = """
INSERT INTO objects (email, phone_number)
SELECT 'seed' || g || '@example.com', '+12125550100' FROM generate_series(1, $1) AS g
RETURNING id
"""
SEED_BACKLOG = """
WITH a AS (
    INSERT INTO alerts (text, number_of_objects_receiving_alert)
    SELECT 'Backlog alert number ' || g || ': severe weather warning for your area.', 1
    FROM generate_series(1, $2) AS g
    RETURNING id
)
INSERT INTO object_alerts (object_id, alert_id) SELECT $1, id FROM a
"""
NO_LOCK = """
CREATE OR REPLACE FUNCTION alerts_assign_id() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.id := nextval('alerts_id_seq');
    RETURN NEW;
END
$$
"""


@dataclass
class BenchDatabase:
    admin_url: str  # a database to run CREATE/DROP DATABASE from
    url: str  # this run's database, migrated
    pg: Tree  # the postmaster and its backends
    max_connections: int


def postmaster_pid(backend_pid: int) -> int:
    return psutil.Process(backend_pid).ppid()


async def server_facts(url: str) -> tuple[int, int]:
    conn = await asyncpg.connect(url)
    try:  # the backend's parent is the postmaster; read it while the backend lives
        postmaster = postmaster_pid(await conn.fetchval("SELECT pg_backend_pid()"))
        max_conn = int(await conn.fetchval("SHOW max_connections"))
    finally:
        await conn.close()
    return postmaster, max_conn


@contextlib.contextmanager
def database_server() -> Iterator[tuple[str, str]]:
    """(admin URL, kind): DATABASE_URL's server, or the embedded one with room for 300 clients
    (100 LISTEN processes + pools + load generators do not fit the default 100)."""
    with testbed.pg_server(
        os.environ.get("DATABASE_URL"), EMBEDDED_DIR, max_connections=300
    ) as server:
        yield server.admin_url, server.description


async def create_database(admin_url: str, suffix: str) -> str:
    """A migrated database of this run's own (testbed.create_database)."""
    url = await asyncio.to_thread(testbed.create_database, admin_url, f"inbox_bench_{suffix}")
    await asyncio.to_thread(migrate.apply, url)
    return url


async def drop_database(admin_url: str, url: str) -> None:
    await asyncio.to_thread(testbed.drop_database, admin_url, url)


async def sql(url: str, query: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(url)
    try:
        return list(await conn.fetch(query, *args))
    finally:
        await conn.close()


BLOCKERS = """
SELECT pid, state, application_name, now() - xact_start AS in_transaction, left(query, 120) AS query
FROM pg_stat_activity WHERE pid = ANY (pg_blocking_pids($1))
"""


async def truncate(url: str) -> None:
    """TRUNCATE waits for every transaction that touched the tables: never forever. Once, a
    full run stalled here for 13 minutes; if it happens again, say who held the lock."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("SET lock_timeout = '60s'")
        waiting = asyncio.ensure_future(conn.execute("TRUNCATE object_alerts, alerts, objects"))
        done, _ = await asyncio.wait({waiting}, timeout=10)
        if not done:
            watcher = await asyncpg.connect(url)
            try:
                pid = conn.get_server_pid()
                for row in await watcher.fetch(BLOCKERS, pid):
                    progress(f"TRUNCATE waits for {dict(row)}")
            finally:
                await watcher.close()
        await waiting
    finally:
        await conn.close()


async def reset(url: str, objects: int = 0) -> list[int]:
    """Empty tables (sequences go on, so alert ids keep rising) and `objects` fresh objects."""
    await truncate(url)
    if not objects:
        return []
    ids = [row["id"] for row in await sql(url, SEED_OBJECTS, objects)]
    await analyze(url, "objects")
    return ids


async def analyze(url: str, tables: str) -> None:
    """Statistics as autovacuum would have them in steady state, right after a bulk load.

    Only of tables that hold their rows: cached generic plans follow the statistics, so
    without them pooled connections read a 10,000-alert backlog in seconds instead of
    milliseconds (inbox_page), and with statistics of an empty `alerts` every new alert
    pays a sequential scan of it (the foreign-key check) until the next ANALYZE.
    """
    await sql(url, f"ANALYZE {tables}")


async def last_alert_id(url: str) -> int:
    rows = await sql(url, "SELECT coalesce(max(id), 0) AS id FROM alerts")
    return int(rows[0]["id"])
