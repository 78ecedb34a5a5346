"""Group commit of POST /alert (service/batch.py) and admission control (service/admission.py).

Batches are staged deterministically: the test holds the alert-id lock (migration 0002) from
its own connection, so the committer's statement blocks inside PostgreSQL and the requests that
arrive meanwhile queue for the next batch; releasing the lock lets both run.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from service.batch import AlertWrites, Committer, NewAlert
from service.errors import DatabaseUnavailable
from service.keys import alert_committer_key, db_key, object_committer_key

from .conftest import app_of, create_alert, create_object, eventually, failing_inserts
from .test_workers import fresh_connections, served, wait_all_listening

Client = TestClient[Any, Any]
ALERT_LOCK = 452823510904  # the advisory lock every alert insert takes (migration 0002)
STALL_LOCK = 77  # held by the test to stall a batch part-way (see stall_on_text)

__all__ = ["served"]  # a fixture, used by name below

WAITING_ON_LOCK = """
SELECT count(*) FROM pg_stat_activity
WHERE application_name = 'inbox' AND datname = current_database()
  AND wait_event_type = 'Lock' AND wait_event = $1
"""


async def blocked_backends(db: asyncpg.Connection, count: int, lock: str = "advisory") -> None:
    """Until `count` of the service's connections wait on a lock of that kind."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5
    while await db.fetchval(WAITING_ON_LOCK, lock) < count:
        assert loop.time() < deadline, "the write never blocked on the lock"
        await asyncio.sleep(0.01)


@asynccontextmanager
async def alert_lock_held(db: asyncpg.Connection) -> AsyncIterator[None]:
    await db.execute("SELECT pg_advisory_lock($1)", ALERT_LOCK)
    try:
        yield
    finally:
        await db.execute("SELECT pg_advisory_unlock($1)", ALERT_LOCK)


def committer_of(client: Client) -> Committer[NewAlert]:
    return app_of(client)[alert_committer_key]


async def queue_behind(
    client: Client, committer: Committer[Any], bodies: list[dict[str, Any]], **kwargs: Any
) -> list[asyncio.Future[aiohttp.ClientResponse]]:
    """POST each body in turn, each once the previous one is queued: arrival order is known."""
    posted = []
    start = committer.waiting
    for n, body in enumerate(bodies, start=1):
        posted.append(asyncio.ensure_future(client.post("/alert", json=body, **kwargs)))
        await eventually(lambda n=n: committer.waiting == start + n)  # type: ignore[misc]
    return posted


async def answers(posted: list[asyncio.Future[aiohttp.ClientResponse]]) -> list[Any]:
    results = []
    for future in posted:
        response = await future
        results.append((response.status, await response.json()))
    return results


async def receive_ids(ws: aiohttp.ClientWebSocketResponse, n: int) -> list[int]:
    return [json.loads((await ws.receive(timeout=5)).data)["id"] for _ in range(n)]


async def nothing_more(ws: aiohttp.ClientWebSocketResponse) -> None:
    try:
        msg = await ws.receive(timeout=0.3)
    except TimeoutError:
        return
    raise AssertionError(f"unexpected frame {msg.data!r}")


async def test_alerts_that_queue_behind_a_commit_share_the_next_one(
    client: Client, db: asyncpg.Connection
) -> None:
    objects = [(await create_object(client))["id"] for _ in range(4)]
    sockets = [await client.ws_connect(f"/inbox/{oid}") for oid in objects]
    committer = committer_of(client)
    ghost = max(objects) + 1000  # an id no object has: filtered out, as today
    bodies = [
        {"text": f"batched {n}", "object_ids": [*objects[n % 4 : n % 4 + 2], ghost]}
        for n in range(6)
    ]
    bodies += [{"text": "to nobody", "object_ids": []}, {"text": "ghost", "object_ids": [ghost]}]
    before = committer.batches
    async with alert_lock_held(db):
        first = asyncio.ensure_future(
            client.post("/alert", json={"text": "alone", "object_ids": objects})
        )
        await blocked_backends(db, 1)
        posted = await queue_behind(client, committer, bodies)
    alone = await first
    assert alone.status == 200
    results = await answers(posted)
    assert committer.batches - before == 2  # the lone alert, then the rest together

    ids = [body["id"] for _, body in results]
    assert ids == sorted(ids)  # arrival order, within the batch ...
    assert ids[0] > (await alone.json())["id"]  # ... and after the batch before it
    for (status, answer), body in zip(results, bodies, strict=True):
        wanted = sorted(set(body["object_ids"]) - {ghost})
        assert status == 200
        assert answer["text"] == body["text"]
        assert answer["object_ids"] == wanted
        assert answer["number_of_objects_receiving_alert"] == len(wanted)
        assert answer["alert_all"] is False
        stored = await db.fetch(
            "SELECT object_id FROM object_alerts WHERE alert_id = $1 ORDER BY 1", answer["id"]
        )
        assert [r["object_id"] for r in stored] == wanted
        row = await db.fetchrow("SELECT * FROM alerts WHERE id = $1", answer["id"])
        assert row["text"] == body["text"]
        assert row["number_of_objects_receiving_alert"] == len(wanted)

    metrics = await (await client.get("/metrics")).text()
    assert 'inbox_write_batches_total{kind="alerts"} 2.0' in metrics
    assert 'inbox_writes_batched_total{kind="alerts"} 9.0' in metrics

    # Each alert its own frame, to exactly its recipients, once, in id order.
    alone_id = (await alone.json())["id"]
    for oid, ws in zip(objects, sockets, strict=True):
        mine = [alone_id] + [a["id"] for _, a in results if oid in a["object_ids"]]
        assert await receive_ids(ws, len(mine)) == mine
        await nothing_more(ws)
        await ws.close()


WAITING_FOR_TURN = """
SELECT count(*) FROM pg_locks JOIN pg_stat_activity USING (pid)
WHERE application_name = 'inbox' AND datname = current_database()
  AND locktype = 'advisory' AND mode = 'ShareLock' AND NOT granted
"""


async def test_a_batch_that_found_the_id_lock_held_makes_the_next_gather_until_it_is_free(
    client: Client, db: asyncpg.Connection
) -> None:
    """The test's connection stands for another process's batch holding the id lock. Once a
    batch has found it held, the next one waits for the lock to be free before it is taken, so
    everything that arrives meanwhile joins it (without the wait, the first of them would go
    alone and wait inside PostgreSQL, the rest forming the batch after it)."""
    oid = (await create_object(client))["id"]
    ws = await client.ws_connect(f"/inbox/{oid}")
    committer = committer_of(client)
    async with alert_lock_held(db):
        first = asyncio.ensure_future(
            client.post("/alert", json={"text": "a", "object_ids": [oid]})
        )
        await blocked_backends(db, 1)
    assert (await first).status == 200
    batches, turns = committer.batches, committer.turns
    bodies = [{"text": f"n{n}", "object_ids": [oid]} for n in range(4)]
    async with alert_lock_held(db):
        posted = [asyncio.ensure_future(client.post("/alert", json=bodies[0]))]
        await eventually(lambda: committer.waiting == 1)
        deadline = asyncio.get_running_loop().time() + 5
        while await db.fetchval(WAITING_FOR_TURN) < 1:  # the turn waits, not the batch
            assert asyncio.get_running_loop().time() < deadline, "no turn waited"
            await asyncio.sleep(0.01)
        assert await db.fetchval(WAITING_ON_LOCK, "advisory") == 1
        posted += await queue_behind(client, committer, bodies[1:])
        assert committer.waiting == 4  # nothing taken yet: all four gather
    results = await answers(posted)
    assert [status for status, _ in results] == [200] * 4
    assert committer.batches - batches == 1  # one batch of all four
    assert committer.turns - turns == 1
    ids = [body["id"] for _, body in results]
    first_id = (await (await first).json())["id"]
    assert ids == sorted(ids)
    assert ids[0] > first_id
    assert [body["text"] for _, body in results] == [b["text"] for b in bodies]
    assert await receive_ids(ws, 5) == [first_id, *ids]
    await nothing_more(ws)
    await ws.close()


async def test_a_lone_writer_never_waits_for_a_turn(client: Client) -> None:
    """No other transaction holds the id lock: no batch waits for its turn (no extra round
    trip), whether the alerts come one by one or queue behind a commit."""
    oid = (await create_object(client))["id"]
    committer = committer_of(client)
    for n in range(3):
        await create_alert(client, text=f"one {n}", object_ids=[oid])
    posted = [
        client.post("/alert", json={"text": f"many {n}", "object_ids": [oid]}) for n in range(20)
    ]
    assert [r.status for r in await asyncio.gather(*posted)] == [200] * 20
    assert committer.turns == 0


async def test_a_turn_that_fails_lets_the_batch_go() -> None:
    """Waiting for a turn is only a wait: if it fails (the database went away, a statement
    timeout), the batch goes at once and answers for itself."""

    class Db:
        async def wait_for_alert_id_lock(self) -> bool:
            raise DatabaseUnavailable("gone")

    writes = AlertWrites(Db())  # type: ignore[arg-type]
    assert await writes.turn() is False  # never contended: no round trip
    writes.contended_at = time.monotonic()
    assert await writes.turn() is True  # it tried, failed, and returned


async def test_one_failing_alert_does_not_fail_its_batch_mates(
    client: Client, db: asyncpg.Connection
) -> None:
    obj = await create_object(client)
    ws = await client.ws_connect(f"/inbox/{obj['id']}")
    committer = committer_of(client)
    texts = ["one", "poison", "two", "three"]
    async with failing_inserts(db, "alerts", "NEW.text = 'poison'"):
        async with alert_lock_held(db):
            first = asyncio.ensure_future(
                client.post("/alert", json={"text": "zero", "object_ids": [obj["id"]]})
            )
            await blocked_backends(db, 1)
            bodies = [{"text": t, "object_ids": [obj["id"]]} for t in texts]
            posted = await queue_behind(client, committer, bodies)
        assert (await first).status == 200
        results = await answers(posted)

    assert results[1] == (500, {"error": "internal_error", "message": results[1][1]["message"]})
    good = [results[0], results[2], results[3]]
    assert [status for status, _ in good] == [200, 200, 200]
    assert [body["text"] for _, body in good] == ["one", "two", "three"]
    assert all(body["object_ids"] == [obj["id"]] for _, body in good)
    stored = await db.fetch("SELECT id, text FROM alerts ORDER BY id")
    assert [r["text"] for r in stored] == ["zero", "one", "two", "three"]
    assert await db.fetchval("SELECT count(*) FROM object_alerts") == 4
    assert await receive_ids(ws, 4) == [r["id"] for r in stored]
    await nothing_more(ws)
    await ws.close()


async def test_a_connection_killed_mid_batch_leaves_no_partial_rows(
    client: Client, db: asyncpg.Connection
) -> None:
    obj = await create_object(client)
    ws = await client.ws_connect(f"/inbox/{obj['id']}")
    committer = committer_of(client)
    # Alert 'stall' waits for a lock the test holds: rows before it in its batch are inserted
    # by then, inside the statement's transaction.
    await db.execute(
        f"""
        CREATE FUNCTION stall_on_text() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.text = 'stall' THEN PERFORM pg_advisory_xact_lock({STALL_LOCK}); END IF;
            RETURN NEW;
        END $$;
        CREATE TRIGGER stall_on_text BEFORE INSERT ON alerts
            FOR EACH ROW EXECUTE FUNCTION stall_on_text();
        """
    )
    await db.execute("SELECT pg_advisory_lock($1)", STALL_LOCK)
    try:
        async with alert_lock_held(db):
            first = asyncio.ensure_future(
                client.post("/alert", json={"text": "before", "object_ids": [obj["id"]]})
            )
            await blocked_backends(db, 1)
            bodies = [{"text": t, "object_ids": [obj["id"]]} for t in ("a", "b", "stall", "c")]
            posted = await queue_behind(client, committer, bodies)
        assert (await first).status == 200
        await blocked_backends(db, 1)  # the batch, stalled at its third alert
        inserting = await db.fetchval(
            """SELECT pid FROM pg_stat_activity WHERE application_name = 'inbox'
               AND datname = current_database() AND wait_event = 'advisory'"""
        )
        assert await db.fetchval("SELECT pg_terminate_backend($1)", inserting)
        results = await answers(posted)
    finally:
        await db.execute("SELECT pg_advisory_unlock($1)", STALL_LOCK)
        await db.execute("DROP TRIGGER stall_on_text ON alerts; DROP FUNCTION stall_on_text();")

    assert [(status, body["error"]) for status, body in results] == [
        (503, "database_unavailable")
    ] * 4
    assert [r["text"] for r in await db.fetch("SELECT text FROM alerts")] == ["before"]
    assert await db.fetchval("SELECT count(*) FROM object_alerts") == 1
    assert len(await receive_ids(ws, 1)) == 1
    await nothing_more(ws)
    # The committer carries on with a new connection.
    response = await client.post("/alert", json={"text": "after", "object_ids": [obj["id"]]})
    assert response.status == 200
    await ws.close()


async def test_idempotent_retries_inside_and_outside_a_batch_replay_the_first_answer(
    client: Client, db: asyncpg.Connection
) -> None:
    obj = await create_object(client)
    committer = committer_of(client)
    keyed = {"text": "keyed", "object_ids": [obj["id"]]}
    headers = {"Idempotency-Key": "batch-mate"}
    async with alert_lock_held(db):
        first = asyncio.ensure_future(
            client.post("/alert", json={"text": "lead", "object_ids": [obj["id"]]})
        )
        await blocked_backends(db, 1)
        unkeyed = [{"text": f"mate {n}", "object_ids": [obj["id"]]} for n in range(3)]
        posted = await queue_behind(client, committer, unkeyed)
        original = asyncio.ensure_future(client.post("/alert", json=keyed, headers=headers))
        await blocked_backends(db, 2)  # the keyed alert waits for the same id lock
    response = await original
    assert response.status == 200
    original_body = await response.read()
    assert (await first).status == 200
    assert [status for status, _ in await answers(posted)] == [200] * 3

    # A retry while a batch is being written replays at once: it takes no id lock.
    async with alert_lock_held(db):
        lead = asyncio.ensure_future(
            client.post("/alert", json={"text": "lead 2", "object_ids": [obj["id"]]})
        )
        await blocked_backends(db, 1)
        behind = await queue_behind(client, committer, unkeyed)
        retry = await asyncio.wait_for(client.post("/alert", json=keyed, headers=headers), 5)
        assert (retry.status, await retry.read()) == (200, original_body)
        assert retry.headers["Idempotent-Replayed"] == "true"
    assert (await lead).status == 200
    assert [status for status, _ in await answers(behind)] == [200] * 3
    # ... and one after the batches, too.
    retry = await client.post("/alert", json=keyed, headers=headers)
    assert (retry.status, await retry.read()) == (200, original_body)
    assert await db.fetchval("SELECT count(*) FROM alerts WHERE text = 'keyed'") == 1


async def test_objects_that_queue_behind_the_commits_share_the_next_one(
    client: Client, db: asyncpg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    committer = app_of(client)[object_committer_key]
    emails = ["A@Example.com", "b@example.com", "poison@example.com", "c@example.com"]
    async with failing_inserts(db, "objects", "NEW.email = 'poison@example.com'"):
        async with db.transaction():
            # Inserts wait for this lock: both committers' batches stall on it, and the
            # requests that arrive meanwhile queue for the next batch.
            await db.execute("LOCK TABLE objects IN SHARE MODE")
            first = []
            for n in range(2):
                body = {"email": f"lead{n}@example.com", "phone_number": "2125551234"}
                first.append(asyncio.ensure_future(client.post("/object", json=body)))
                await blocked_backends(db, n + 1, lock="relation")
            posted = []
            for n, email in enumerate(emails, start=1):
                body = {"email": email, "phone_number": f"212-555-{1000 + n}"}
                posted.append(asyncio.ensure_future(client.post("/object", json=body)))
                await eventually(lambda n=n: committer.waiting == n)  # type: ignore[misc]
        assert [(await f).status for f in first] == [200, 200]
        results = await answers(posted)
    # The four went as one batch; it failed, and each was then written on its own.
    assert "a batch of 4 objects failed (RaiseError: injected failure)" in caplog.text
    assert results[2][0] == 500
    good = [results[0], results[1], results[3]]
    assert [status for status, _ in good] == [200, 200, 200]
    assert [body["email"] for _, body in good] == [
        "A@example.com",
        "b@example.com",
        "c@example.com",
    ]
    assert [body["phone_number"] for _, body in good] == [
        "+12125551001",
        "+12125551002",
        "+12125551004",
    ]
    ids = [body["id"] for _, body in good]
    assert ids == sorted(ids)
    for _, body in good:
        row = await db.fetchrow("SELECT email, phone_number FROM objects WHERE id = $1", body["id"])
        assert dict(row) == {"email": body["email"], "phone_number": body["phone_number"]}
    assert await db.fetchval("SELECT count(*) FROM objects") == 5


async def test_writes_past_the_bound_are_refused_at_once(
    make_client: Callable[..., Awaitable[Client]], db: asyncpg.Connection
) -> None:
    client = await make_client(WRITES_IN_FLIGHT="2")
    obj = await create_object(client)
    async with alert_lock_held(db):
        held = [
            asyncio.ensure_future(
                client.post("/alert", json={"text": f"held {n}", "object_ids": [obj["id"]]})
            )
            for n in range(2)
        ]
        await blocked_backends(db, 1)
        await eventually(lambda: committer_of(client).waiting == 1)
        # Both slots are taken by writes that cannot finish while the lock is held: an answer
        # now is an answer that did not wait for them.
        for path, body in [
            ("/alert", {"text": "one too many", "object_ids": [obj["id"]]}),
            ("/object", {"email": "late@example.com", "phone_number": "212-555-1234"}),
        ]:
            response = await asyncio.wait_for(client.post(path, json=body), 2)
            assert response.status == 503
            assert response.headers["Retry-After"] == "1"
            payload = await response.json()
            assert payload["error"] == "server_busy"
            assert isinstance(payload["message"], str)
        assert not any(future.done() for future in held)
        metrics = await (await client.get("/metrics")).text()
        assert "inbox_writes_in_flight 2.0" in metrics
        assert "inbox_writes_refused_total 2.0" in metrics
    assert [(await f).status for f in held] == [200, 200]
    assert await db.fetchval("SELECT count(*) FROM objects") == 1
    # The slots are free again.
    assert (await client.post("/alert", json={"text": "now", "object_ids": [obj["id"]]})).ok


async def test_a_write_queued_past_the_wait_bound_makes_the_next_refused_at_once(
    make_client: Callable[..., Awaitable[Client]],
    db: asyncpg.Connection,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Far below WRITES_IN_FLIGHT: only the time bound can refuse here.
    client = await make_client(WRITES_MAX_WAIT="0.05")
    obj = await create_object(client)
    committer = committer_of(client)
    async with alert_lock_held(db):
        first = asyncio.ensure_future(
            client.post("/alert", json={"text": "in the stalled batch", "object_ids": [obj["id"]]})
        )
        await blocked_backends(db, 1)
        queued = await queue_behind(
            client, committer, [{"text": "queued", "object_ids": [obj["id"]]}]
        )
        await eventually(lambda: committer.oldest_wait() > 0.05)
        with caplog.at_level(logging.INFO, logger="inbox.access"):
            for path, body in [
                ("/alert", {"text": "refused", "object_ids": [obj["id"]]}),
                ("/object", {"email": "late@example.com", "phone_number": "212-555-1234"}),
            ]:
                response = await asyncio.wait_for(client.post(path, json=body), 2)
                assert response.status == 503
                assert response.headers["Retry-After"] == "1"
                payload = await response.json()
                assert payload["error"] == "server_busy"
                assert "waited" in payload["message"]
                # The refusal keeps its access log line, under the id it answered with.
                line = caplog.records[-1]
                assert line.name == "inbox.access"
                assert getattr(line, "request_id", None) == response.headers["X-Request-Id"]
                assert (getattr(line, "path", None), getattr(line, "status", None)) == (path, 503)
        assert not first.done()
        assert not queued[0].done()
        metrics = await (await client.get("/metrics")).text()
        assert "inbox_writes_refused_total 2.0" in metrics
        assert 'inbox_http_requests_total{method="POST",route="/alert",status="503"} 1.0' in metrics
    # The writes accepted before the bound was passed still complete, in order.
    answers = [await first, await queued[0]]
    assert [r.status for r in answers] == [200, 200]
    ids = [(await r.json())["id"] for r in answers]
    assert ids == sorted(ids)
    assert await db.fetchval("SELECT count(*) FROM objects") == 1
    # The queue has drained: writes are admitted again.
    assert committer.oldest_wait() == 0
    assert (await client.post("/alert", json={"text": "now", "object_ids": [obj["id"]]})).ok


async def test_a_full_process_refuses_before_the_credential_check(
    make_client: Callable[..., Awaitable[Client]], db: asyncpg.Connection
) -> None:
    client = await make_client(WRITES_IN_FLIGHT="1", API_KEYS="key-one")
    key = {"Authorization": "Bearer key-one"}
    created = await client.post(
        "/object", json={"email": "a@example.com", "phone_number": "212-555-1234"}, headers=key
    )
    obj = await created.json()
    body = {"text": "held", "object_ids": [obj["id"]]}
    async with alert_lock_held(db):
        held = asyncio.ensure_future(client.post("/alert", json=body, headers=key))
        await blocked_backends(db, 1)
        # The refusal costs no credential check: a stranger learns only that it is busy.
        stranger = await asyncio.wait_for(client.post("/alert", json=body), 2)
        assert stranger.status == 503
        assert (await stranger.json())["error"] == "server_busy"
        assert not held.done()
    assert (await held).status == 200
    # With room again, the credential is checked as before.
    assert (await client.post("/alert", json=body)).status == 401


async def test_a_full_pool_is_server_busy_not_database_unavailable(
    make_client: Callable[..., Awaitable[Client]],
) -> None:
    client = await make_client(DB_POOL_MIN_SIZE="1", DB_POOL_MAX_SIZE="1", DB_TIMEOUT="0.5")
    pool = app_of(client)[db_key].pool
    # The pool's one connection is taken (as a long request would hold it); the database
    # itself answers throughout.
    held = await pool.acquire()
    try:
        response = await client.post(
            "/object", json={"email": "x@example.com", "phone_number": "212-555-1234"}
        )
        assert response.status == 503
        assert (await response.json())["error"] == "server_busy"
        assert response.headers["Retry-After"] == "1"
    finally:
        await pool.release(held)
    response = await client.post(
        "/object", json={"email": "x@example.com", "phone_number": "212-555-1234"}
    )
    assert response.status == 200


async def test_two_workers_and_hand_written_alerts_keep_commit_order(
    served: tuple[str, Path], database_url: str
) -> None:
    """Both processes' committers and a DBA's transactions write at once: ids follow commit
    order (NOTIFY order), and every socket gets each of its alerts once, in order."""
    base, _ = served
    rng = random.Random(9)
    listener = await asyncpg.connect(database_url)
    notified: list[int] = []
    await listener.add_listener(
        "alerts", lambda *args: notified.append(json.loads(args[3])["alert_id"])
    )
    dba = await asyncpg.connect(database_url)
    async with fresh_connections() as http:
        objects = []
        for n in range(4):
            body = {"email": f"w{n}@example.com", "phone_number": "212-555-1234"}
            async with http.post(f"{base}/object", json=body) as response:
                objects.append((await response.json())["id"])
        sockets: list[tuple[int, str, aiohttp.ClientWebSocketResponse]] = []
        while len({pid for _, pid, _ in sockets}) < 2 or len(sockets) < 8:
            assert len(sockets) < 64, "every socket landed on one process"
            oid = objects[len(sockets) % 4]
            ws = await http.ws_connect(f"{base}/inbox/{oid}")
            sockets.append((oid, ws._response.headers["X-Inbox-Worker"], ws))
        await wait_all_listening(http, base, len(sockets))

        async def post(n: int) -> None:
            body = {"text": f"api {n}", "object_ids": rng.sample(objects, rng.randint(1, 3))}
            async with http.post(f"{base}/alert", json=body) as response:
                assert response.status == 200, await response.text()

        async def by_hand(n: int) -> None:
            async with dba.transaction():
                alert_id = await dba.fetchval(
                    "INSERT INTO alerts (text, number_of_objects_receiving_alert) "
                    "VALUES ($1, 1) RETURNING id",
                    f"dba {n}",
                )
                await dba.execute(
                    "INSERT INTO object_alerts (object_id, alert_id) VALUES ($1, $2)",
                    objects[n % 4],
                    alert_id,
                )

        async def dba_writes() -> None:
            for n in range(20):
                await by_hand(n)

        await asyncio.gather(*(post(n) for n in range(200)), dba_writes())
        expected = {
            oid: [
                r["alert_id"]
                for r in await dba.fetch(
                    "SELECT alert_id FROM object_alerts WHERE object_id = $1 ORDER BY 1", oid
                )
            ]
            for oid in objects
        }
        try:
            for oid, _, ws in sockets:
                assert await receive_ids(ws, len(expected[oid])) == expected[oid]
                await nothing_more(ws)
        finally:
            for _, _, ws in sockets:
                await ws.close()
    all_ids = [r["id"] for r in await dba.fetch("SELECT id FROM alerts ORDER BY id")]
    await eventually(lambda: len(notified) == len(all_ids))
    assert notified == all_ids  # notifications arrive in commit order: ids rise with it
    await listener.close()
    await dba.close()
