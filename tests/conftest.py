"""Test fixtures: a real PostgreSQL, a fresh database per test run, clean tables per test.

With DATABASE_URL (or DB_*) configured, that server is used; otherwise the embedded server
the service itself would use. Either way each run creates its own database
(`inbox_test_<pid>_<random>`), migrates it, and drops it at the end, so runs never see each
other's rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import psycopg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from hypothesis import HealthCheck, settings

import testbed
from service import server
from service.app import create_app
from service.config import Config
from service.keys import hub_key, sockets_key

TABLES = "object_alerts, alerts, objects, idempotency_keys"


@pytest.fixture(scope="session")
def server_url() -> Iterator[str]:
    """An admin URL of the PostgreSQL server the tests run against."""
    config = Config.from_env()
    with testbed.pg_server(config.database_url, config.embedded_data_dir) as server:
        yield server.admin_url


@pytest.fixture(scope="session")
def database_url(server_url: str) -> Iterator[str]:
    """This run's own database, migrated to the newest schema."""
    with testbed.throwaway_database(server_url, "inbox_test") as url:
        yield url


@pytest.fixture
def scratch_database(server_url: str) -> Iterator[str]:
    """An empty database of its own, for tests of migrations themselves."""
    with testbed.throwaway_database(server_url, "inbox_scratch", migrated=False) as url:
        yield url


@pytest.fixture(autouse=True)
def clean_tables(request: pytest.FixtureRequest) -> None:
    if "database_url" not in request.fixturenames:
        return
    url = request.getfixturevalue("database_url")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"TRUNCATE {TABLES} RESTART IDENTITY CASCADE")
        conn.execute("ALTER SEQUENCE alerts_id_seq RESTART")


# With TEST_PGBOUNCER=host:port (a transaction-pooling PgBouncer in front of the same server, as
# `.ci/pgbouncer start` runs one), the apps of `make_client` reach the database through it, as a
# deployment behind PgBouncer does: DATABASE_URL through the pooler, LISTEN_DATABASE_URL
# straight to PostgreSQL, DB_TRANSACTION_POOLING=true. The tests' own connections stay direct.
PGBOUNCER = os.environ.get("TEST_PGBOUNCER", "")


def through_pgbouncer(database_url: str) -> dict[str, str]:
    """The settings that point an app at `database_url`, through TEST_PGBOUNCER when set."""
    if not PGBOUNCER:
        return {"DATABASE_URL": database_url}
    parts = urlsplit(database_url)
    user = f"{parts.username}@" if parts.username else ""
    return {
        "DATABASE_URL": urlunsplit(parts._replace(netloc=user + PGBOUNCER)),
        "LISTEN_DATABASE_URL": database_url,
        "DB_TRANSACTION_POOLING": "true",
    }


def make_config(database_url: str, **overrides: str) -> Config:
    environ = {"DATABASE_URL": database_url, "DB_TIMEOUT": "3", "WS_HEARTBEAT": "5"}
    environ.update(overrides)
    return Config.from_env(environ=environ, env_file=None)


@pytest.fixture
def config(database_url: str) -> Config:
    return make_config(database_url)


ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]


@pytest.fixture
async def make_client(
    aiohttp_client: Callable[..., Awaitable[TestClient[Any, Any]]], database_url: str
) -> ClientFactory:
    """A client of a fresh app, with settings overridden as keyword arguments."""

    async def make(**overrides: str) -> TestClient[Any, Any]:
        config = make_config(database_url, **{**through_pgbouncer(database_url), **overrides})
        assert config.database_url is not None
        # The request-handler settings `inbox serve` uses (no body inflated by aiohttp).
        settings = server.handler_settings(config)
        # aiohttp's test server cancels a handler whose client goes away; `inbox serve` does
        # not (the test server takes no say in it: it is set on its request handler instead).
        cancellation = settings.pop("handler_cancellation")
        app = create_app(config, config.database_url)
        client = await aiohttp_client(app, server_kwargs=settings)
        runner = client.server.runner
        assert runner is not None
        assert runner.server is not None
        runner.server.handler_cancellation = cancellation
        return client

    return make


@pytest.fixture
async def client(make_client: ClientFactory) -> TestClient[Any, Any]:
    return await make_client()


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A direct connection, for checking what the service stored and writing as a DBA would."""
    conn = await asyncpg.connect(database_url)
    try:
        yield conn
    finally:
        await conn.close()


async def create_object(client: TestClient[Any, Any], **fields: Any) -> dict[str, Any]:
    body = {"email": "bob@example.com", "phone_number": "212-555-1234", **fields}
    response = await client.post("/object", json=body)
    assert response.status == 200, await response.text()
    result: dict[str, Any] = await response.json()
    return result


async def create_alert(client: TestClient[Any, Any], **fields: Any) -> dict[str, Any]:
    response = await client.post("/alert", json={"text": "hello", **fields})
    assert response.status == 200, await response.text()
    result: dict[str, Any] = await response.json()
    return result


def app_of(client: TestClient[Any, Any]) -> web.Application:
    app = client.server.app
    assert app is not None
    return app


@contextlib.asynccontextmanager
async def failing_inserts(
    db: asyncpg.Connection, table: str, when: str = "true"
) -> AsyncIterator[None]:
    """While inside, an insert into `table` whose row meets `when` (SQL over NEW) fails with
    'injected failure': a write that breaks part-way, or one bad request among others."""
    name = f"fail_{table}"
    await db.execute(
        f"""
        CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF {when} THEN RAISE EXCEPTION 'injected failure'; END IF;
            RETURN NEW;
        END $$;
        CREATE TRIGGER {name} BEFORE INSERT ON {table}
            FOR EACH ROW EXECUTE FUNCTION {name}();
        """
    )
    try:
        yield
    finally:
        await db.execute(f"DROP TRIGGER {name} ON {table}; DROP FUNCTION {name}();")


async def eventually(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait until `predicate()` holds, polling the event loop (not a fixed sleep)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


async def assert_cycles_leave_nothing(
    app: web.Application,
    cycle: Callable[[int], Awaitable[None]],
    what: str,
    settle_timeout: float = 5.0,
) -> None:
    """`cycle(i)` opens an inbox stream and ends it: after 20 to warm up (lazily created caches,
    pooled connections) and 300 measured, no session, socket or task may be left once
    `settle_timeout` has passed, nor 256 KiB of memory more than before the 300."""

    def settled() -> bool:
        return len(app[hub_key]) == 0 and not app[sockets_key]

    for i in range(20):
        await cycle(i)
    await eventually(settled)
    gc.collect()
    tasks_before = len(asyncio.all_tasks())
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        for i in range(300):
            await cycle(i)
        await eventually(settled, timeout=settle_timeout)
        await eventually(lambda: len(asyncio.all_tasks()) <= tasks_before)
        gc.collect()
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    growth = sum(s.size_diff for s in after.compare_to(before, "filename"))
    top = "\n".join(str(stat) for stat in after.compare_to(before, "lineno")[:5])
    assert growth < 256 * 1024, f"{growth} bytes retained after 300 {what}:\n{top}"
    assert len(asyncio.all_tasks()) == tasks_before


# Hypothesis: a few hundred examples across the suite keep `make test` fast. The fuzz tests
# share one live server per test function on purpose (the function-scoped fixture check).
settings.register_profile(
    "inbox",
    max_examples=100,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
settings.register_profile("thorough", parent=settings.get_profile("inbox"), max_examples=3000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "inbox"))
