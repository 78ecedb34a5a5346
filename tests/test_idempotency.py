"""Safe retries: Idempotency-Key replays the first response and never writes twice."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import asyncpg
import psycopg
import pytest
from aiohttp.test_utils import TestClient

from service import idempotency, migrate
from service.keys import db_key

from .conftest import app_of, create_object, failing_inserts
from .test_migrations import all_migrations

Client = TestClient[Any, Any]
ALERT_LOCK = 452823510904  # the advisory lock every alert insert takes (migration 0002)


def key(value: str) -> dict[str, str]:
    return {"Idempotency-Key": value}


async def count(db: asyncpg.Connection, table: str) -> int:
    result: int = await db.fetchval(f"SELECT count(*) FROM {table}")
    return result


async def test_retry_replays_the_first_response(client: Client, db: asyncpg.Connection) -> None:
    obj_body = {"email": "bob@example.com", "phone_number": "212-555-1234"}
    first = await client.post("/object", json=obj_body, headers=key("obj-1"))
    first_raw = await first.read()
    # The same JSON with other spacing and key order is the same request.
    again = await client.post(
        "/object",
        data=json.dumps(dict(reversed(obj_body.items())), indent=2),
        headers={**key("obj-1"), "Content-Type": "application/json"},
    )
    assert (again.status, await again.read()) == (first.status, first_raw)
    assert again.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert await count(db, "objects") == 1

    oid = json.loads(first_raw)["id"]
    alert_body = {"text": "storm", "object_ids": [oid]}
    first = await client.post("/alert", json=alert_body, headers=key("alert-1"))
    assert first.status == 200
    first_raw = await first.read()
    for _ in range(3):
        again = await client.post("/alert", json=alert_body, headers=key("alert-1"))
        assert (again.status, await again.read()) == (200, first_raw)
    assert await count(db, "alerts") == 1
    assert await count(db, "object_alerts") == 1
    # Without a key every POST is a new alert.
    await client.post("/alert", json=alert_body)
    assert await count(db, "alerts") == 2


async def test_same_key_other_body_is_422(client: Client, db: asyncpg.Connection) -> None:
    response = await client.post(
        "/alert", json={"text": "one", "alert_all": True}, headers=key("k")
    )
    assert response.status == 200
    response = await client.post(
        "/alert", json={"text": "two", "alert_all": True}, headers=key("k")
    )
    assert response.status == 422
    assert (await response.json())["error"] == "idempotency_key_reused"
    assert await count(db, "alerts") == 1
    # Keys are per route: the same key on /object is a different request.
    response = await client.post(
        "/object", json={"email": "a@example.com", "phone_number": "212-555-1234"}, headers=key("k")
    )
    assert response.status == 200


async def test_keys_belong_to_the_api_key_that_sent_them(
    make_client: Any, db: asyncpg.Connection
) -> None:
    """Two API keys never see each other's responses, even with the same Idempotency-Key and
    body (the response carries an inbox token)."""
    client = await make_client(API_KEYS="key-one,key-two", INBOX_SECRET="s" * 32)
    one, two = ({"Authorization": f"Bearer {k}"} for k in ("key-one", "key-two"))
    body = {"email": "bob@example.com", "phone_number": "212-555-1234"}
    first = await client.post("/object", json=body, headers={**one, **key("shared")})
    assert first.status == 200
    first_raw = await first.read()
    other = await client.post("/object", json=body, headers={**two, **key("shared")})
    assert other.status == 200
    assert "Idempotent-Replayed" not in other.headers
    assert json.loads(await other.read())["id"] != json.loads(first_raw)["id"]
    # Each key's own retry still replays its own first answer.
    again = await client.post("/object", json=body, headers={**one, **key("shared")})
    assert (again.status, await again.read()) == (200, first_raw)
    assert await count(db, "objects") == 2
    # The database holds the key's digest, never the key.
    routes = [r["route"] for r in await db.fetch("SELECT route FROM idempotency_keys")]
    assert len(set(routes)) == 2
    assert not any("key-one" in r or "key-two" in r for r in routes)


async def test_a_default_spelled_out_is_the_same_request(
    client: Client, db: asyncpg.Connection
) -> None:
    """The hash is over the validated, normalised request: what would be stored."""
    obj = await create_object(client)
    first = await client.post(
        "/alert", json={"text": "t", "object_ids": [obj["id"]]}, headers=key("spelled")
    )
    assert first.status == 200
    first_raw = await first.read()
    for retry in (
        {"text": "t", "object_ids": [obj["id"]], "alert_all": False},
        {"alert_all": False, "object_ids": [obj["id"], obj["id"]], "text": "t"},
    ):
        again = await client.post("/alert", json=retry, headers=key("spelled"))
        assert (again.status, await again.read()) == (200, first_raw)
        assert again.headers["Idempotent-Replayed"] == "true"
    # The same contact written another way is the same object.
    body = {"email": "Ann@Example.com", "phone_number": "212-555-1234"}
    made = await client.post("/object", json=body, headers=key("ann"))
    respelled = await client.post(
        "/object",
        json={"email": "Ann@example.com", "phone_number": "+1 212 555 1234"},
        headers=key("ann"),
    )
    assert (respelled.status, await respelled.read()) == (200, await made.read())
    assert await count(db, "alerts") == 1
    assert await count(db, "objects") == 2


@pytest.mark.parametrize("value", ["", "x" * 256, "naïve", "tab\there"])
async def test_malformed_key_is_400(client: Client, db: asyncpg.Connection, value: str) -> None:
    headers = {"Idempotency-Key": value.encode("utf-8").decode("latin-1")}
    response = await client.post("/alert", json={"text": "x", "alert_all": True}, headers=headers)
    assert response.status == 400
    assert (await response.json())["error"] == "malformed_request"
    assert await count(db, "alerts") == 0


async def test_injection_in_the_key_is_stored_verbatim(
    client: Client, db: asyncpg.Connection
) -> None:
    value = "'; DROP TABLE idempotency_keys; --"
    for _ in range(2):
        response = await client.post(
            "/alert", json={"text": "x", "alert_all": True}, headers=key(value)
        )
        assert response.status == 200
    assert await db.fetchval("SELECT key FROM idempotency_keys") == value
    assert await count(db, "alerts") == 1


async def test_concurrent_requests_with_one_key_make_one_alert(
    client: Client, db: asyncpg.Connection
) -> None:
    obj = await create_object(client)
    body = {"text": "once", "object_ids": [obj["id"]]}
    responses = await asyncio.gather(
        *(client.post("/alert", json=body, headers=key("burst")) for _ in range(5))
    )
    bodies = {(r.status, await r.read()) for r in responses}
    assert len(bodies) == 1, bodies
    assert next(iter(bodies))[0] == 200
    assert await count(db, "alerts") == 1
    assert sum("Idempotent-Replayed" in r.headers for r in responses) == 4


async def waiting_on_lock(db: asyncpg.Connection, count: int) -> None:
    """Until `count` server transactions wait on a lock (the alert lock or a key's row)."""
    query = """SELECT count(*) FROM pg_stat_activity
               WHERE application_name = 'inbox' AND datname = current_database()
                 AND wait_event_type = 'Lock'"""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5
    while await db.fetchval(query) < count:
        assert loop.time() < deadline, "the request never blocked on the lock"
        await asyncio.sleep(0.01)


async def test_second_request_waits_for_the_first(client: Client, db: asyncpg.Connection) -> None:
    """The first request holds the claim; the second blocks on it, then replays its answer."""
    body = {"text": "slow", "alert_all": True}
    await db.execute("SELECT pg_advisory_lock($1)", ALERT_LOCK)
    try:
        first = asyncio.ensure_future(client.post("/alert", json=body, headers=key("wait")))
        await waiting_on_lock(db, 1)
        second = asyncio.ensure_future(client.post("/alert", json=body, headers=key("wait")))
        await waiting_on_lock(db, 2)
        done, _ = await asyncio.wait({first, second}, timeout=0.2)
        assert not done
    finally:
        await db.execute("SELECT pg_advisory_unlock($1)", ALERT_LOCK)
    a, b = await first, await second
    assert (a.status, await a.read()) == (b.status, await b.read())
    assert await count(db, "alerts") == 1


async def test_failed_transaction_leaves_no_claim(client: Client, db: asyncpg.Connection) -> None:
    """The claim is in the writing transaction: when the write fails, a retry starts afresh."""
    obj = await create_object(client)
    body = {"text": "x", "object_ids": [obj["id"]]}
    async with failing_inserts(db, "object_alerts"):
        response = await client.post("/alert", json=body, headers=key("retry-me"))
        assert response.status == 500
    assert await count(db, "idempotency_keys") == 0
    assert await count(db, "alerts") == 0
    response = await client.post("/alert", json=body, headers=key("retry-me"))
    assert response.status == 200
    assert await count(db, "alerts") == 1


async def test_expired_key_is_a_new_request(make_client: Any, db: asyncpg.Connection) -> None:
    client = await make_client(IDEMPOTENCY_TTL="60")
    body = {"text": "x", "alert_all": True}
    first = await (await client.post("/alert", json=body, headers=key("old"))).json()
    await db.execute("UPDATE idempotency_keys SET created_at = now() - interval '61 seconds'")
    second = await (await client.post("/alert", json=body, headers=key("old"))).json()
    assert second["id"] != first["id"]
    # ... and the key is live again, for the new response.
    third = await (await client.post("/alert", json=body, headers=key("old"))).json()
    assert third == second
    # An expired key with another body is not "reused": it is simply new.
    await db.execute("UPDATE idempotency_keys SET created_at = now() - interval '61 seconds'")
    response = await client.post("/alert", json={**body, "text": "y"}, headers=key("old"))
    assert response.status == 200
    assert await count(db, "alerts") == 3


async def test_purge_deletes_only_expired_keys(client: Client, db: asyncpg.Connection) -> None:
    for name in ("a", "b"):
        await client.post("/alert", json={"text": "x", "alert_all": True}, headers=key(name))
    await db.execute(
        "UPDATE idempotency_keys SET created_at = now() - interval '2 days' WHERE key = 'a'"
    )
    await idempotency.purge(app_of(client)[db_key], 86400)
    assert [r["key"] for r in await db.fetch("SELECT key FROM idempotency_keys")] == ["b"]


async def test_client_gone_mid_request_leaves_all_or_nothing(
    client: Client, db: asyncpg.Connection
) -> None:
    """The client hangs up while its alert waits on a lock held here; after the lock is
    released the alert is either wholly there (with its recipients and its key) or absent."""
    objs = [await create_object(client) for _ in range(3)]
    body = {"text": "gone", "object_ids": [o["id"] for o in objs]}
    await db.execute("SELECT pg_advisory_lock($1)", ALERT_LOCK)
    try:
        request = asyncio.ensure_future(client.post("/alert", json=body, headers=key("gone")))
        await waiting_on_lock(db, 1)
        request.cancel()
        with pytest.raises(asyncio.CancelledError):
            await request
    finally:
        await db.execute("SELECT pg_advisory_unlock($1)", ALERT_LOCK)
    busy = """SELECT count(*) FROM pg_stat_activity
              WHERE application_name = 'inbox' AND datname = current_database()
                AND state <> 'idle'"""
    settled: list[int] = []

    async def poll() -> None:
        settled.append(await db.fetchval(busy))

    await eventually_async(poll, lambda: settled[-1] == 0)
    alerts = await db.fetch("SELECT id, number_of_objects_receiving_alert AS n FROM alerts")
    keys = await count(db, "idempotency_keys")
    if alerts:
        assert len(alerts) == 1
        assert alerts[0]["n"] == 3
        assert await count(db, "object_alerts") == 3
        assert keys == 1
    else:
        assert await count(db, "object_alerts") == 0
        assert keys == 0
    # The client retries: it gets one alert, whichever way the first attempt ended.
    response = await client.post("/alert", json=body, headers=key("gone"))
    assert response.status == 200
    assert await count(db, "alerts") == 1
    assert await count(db, "object_alerts") == 3


async def eventually_async(step: Any, predicate: Any, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        await step()
        if predicate():
            return
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def test_migration_0003_rolls_back_and_reapplies(scratch_database: str) -> None:
    def exists() -> bool:
        with psycopg.connect(scratch_database) as conn:
            row = conn.execute("SELECT to_regclass('idempotency_keys')").fetchone()
            return row is not None and row[0] is not None

    migrate.apply(scratch_database)
    assert exists()
    # 0003 and every migration after it, newest first
    newest_first = sorted((m for m in all_migrations() if m >= "0003"), reverse=True)
    assert migrate.rollback(scratch_database, len(newest_first)) == newest_first
    assert not exists()
    assert migrate.apply(scratch_database) == newest_first[::-1]
    assert exists()
