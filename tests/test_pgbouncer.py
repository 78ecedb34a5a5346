"""Behind a transaction-pooling PgBouncer (`.ci/pgbouncer start`, then TEST_PGBOUNCER=host:port).

Every test of the suite that uses `client`/`make_client` already runs through it in that run
(conftest.through_pgbouncer); these add concurrency aimed at what breaks there: many requests
at once, each on whichever server connection PgBouncer lends, reads and writes mixed, with the
inbox backlog read (planned afresh) and live frames checked for exactly-once.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from aiohttp import WSMsgType
from aiohttp.test_utils import TestClient

from service.config import Config, ConfigError

from .conftest import PGBOUNCER, create_alert, create_object
from .test_inbox import connect, connected

Client = TestClient[Any, Any]

needs_pgbouncer = pytest.mark.skipif(
    not PGBOUNCER, reason="TEST_PGBOUNCER is not set (.ci/run sets it for its PgBouncer run)"
)


def test_transaction_pooling_needs_a_direct_listen_url() -> None:
    """A transaction pooler cannot hold a LISTEN: start-up says so in one line."""
    environ = {"DATABASE_URL": "postgresql://u@pgbouncer:6432/db", "DB_TRANSACTION_POOLING": "1"}
    with pytest.raises(ConfigError, match="LISTEN_DATABASE_URL"):
        Config.from_env(environ=environ, env_file=None)
    environ["LISTEN_DATABASE_URL"] = "postgresql://u@primary:5432/db"
    assert Config.from_env(environ=environ, env_file=None).db_transaction_pooling


@needs_pgbouncer
async def test_concurrent_reads_writes_and_backlogs_through_pgbouncer(client: Client) -> None:
    objects = await asyncio.gather(*(create_object(client) for _ in range(10)))
    ids = [o["id"] for o in objects]
    watched = await connect(client, ids[0])
    await connected(client, ids[0])

    async def writer(n: int) -> list[int]:
        return [
            (await create_alert(client, text=f"w{n}-{i}", object_ids=ids))["id"] for i in range(10)
        ]

    async def reader() -> None:
        for oid in ids:
            response = await client.get(f"/object/{oid}")
            assert response.status == 200, await response.text()

    async def backlog(oid: int) -> int:
        ws = await connect(client, oid, after=0)
        count = 0
        while (await ws.receive(timeout=2)).type == WSMsgType.TEXT:
            count += 1
            if count == 10:
                break
        await ws.close()
        return count

    written = await asyncio.gather(*(writer(n) for n in range(8)), reader(), reader())
    alert_ids = sorted(i for batch in written[:8] if batch for i in batch)
    assert len(alert_ids) == 80
    assert await asyncio.gather(*(backlog(oid) for oid in ids[1:])) == [10] * 9
    live = [json.loads((await watched.receive(timeout=5)).data)["id"] for _ in alert_ids]
    assert live == alert_ids  # each once, in id order
    await watched.close()
