"""POST /object/{id}/ack and the read cursor: forward only, racing acks end at the maximum,
`unread` right after each, bad input refused, and one NOTIFY on `acks` per move."""

from __future__ import annotations

import asyncio
import gzip
import json
import random
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from .conftest import ClientFactory, create_alert, create_object
from .served import Serve, serve

__all__ = ["serve"]  # the fixture

Client = TestClient[Any, Any]
QUIET = 0.3


async def ack(client: Client, object_id: int, alert_id: Any) -> dict[str, Any]:
    response = await client.post(f"/object/{object_id}/ack", json={"alert_id": alert_id})
    assert response.status == 200, await response.text()
    body: dict[str, Any] = await response.json()
    return body


async def read_state(client: Client, object_id: int) -> tuple[int, int]:
    response = await client.get(f"/object/{object_id}")
    assert response.status == 200
    body = await response.json()
    return body["acked_alert_id"], body["unread"]


async def test_ack_moves_the_cursor_forward_only(client: Client) -> None:
    obj, other = await create_object(client), await create_object(client)
    assert await read_state(client, obj["id"]) == (0, 0)
    ids = []
    for i in range(5):
        ids.append((await create_alert(client, text=str(i), object_ids=[obj["id"]]))["id"])
        await create_alert(client, text="not mine", object_ids=[other["id"]])
    assert await read_state(client, obj["id"]) == (0, 5)

    assert await ack(client, obj["id"], ids[2]) == {
        "object_id": obj["id"],
        "acked_alert_id": ids[2],
        "unread": 2,
    }
    assert await read_state(client, obj["id"]) == (ids[2], 2)

    # A lower id is accepted and changes nothing; the answer is the cursor as it stands.
    assert (await ack(client, obj["id"], ids[0]))["acked_alert_id"] == ids[2]
    assert await read_state(client, obj["id"]) == (ids[2], 2)
    assert (await ack(client, obj["id"], ids[2]))["unread"] == 2  # the same id again

    # New alerts count as unread; acking the newest reads everything.
    ids.append((await create_alert(client, alert_all=True))["id"])
    assert await read_state(client, obj["id"]) == (ids[2], 3)
    assert (await ack(client, obj["id"], ids[-1]))["unread"] == 0
    assert await read_state(client, obj["id"]) == (ids[-1], 0)
    assert await read_state(client, other["id"]) == (0, 6)  # the other object's cursor is its own


async def test_post_object_shows_an_empty_cursor(client: Client) -> None:
    created = await create_object(client)
    assert (created["acked_alert_id"], created["unread"]) == (0, 0)


async def test_racing_acks_from_two_clients_end_at_the_maximum(
    make_client: ClientFactory,
) -> None:
    """Two apps (two pools, as two processes would have) ack random alerts at once."""
    first, second = await make_client(), await make_client()
    obj = await create_object(first)
    ids = [(await create_alert(first, object_ids=[obj["id"]]))["id"] for _ in range(30)]
    rng = random.Random(11)
    for _round in range(5):
        picks = [rng.choice(ids) for _ in range(40)]
        before = (await read_state(first, obj["id"]))[0]
        answers = await asyncio.gather(
            *(ack((first, second)[i % 2], obj["id"], pick) for i, pick in enumerate(picks))
        )
        expected = max(before, *picks)
        assert await read_state(second, obj["id"]) == (expected, sum(i > expected for i in ids))
        # Each answer is the cursor after that ack: never below what it asked for.
        for pick, answer in zip(picks, answers, strict=True):
            assert answer["acked_alert_id"] >= pick
            assert answer["acked_alert_id"] <= expected
            assert answer["unread"] == sum(i > answer["acked_alert_id"] for i in ids)


async def test_an_alert_of_another_object_is_422(client: Client, db: asyncpg.Connection) -> None:
    mine, other = await create_object(client), await create_object(client)
    my_alert = await create_alert(client, object_ids=[mine["id"]])
    their_alert = await create_alert(client, object_ids=[other["id"]])
    for alert_id in (their_alert["id"], their_alert["id"] + 100):  # another's, and no alert
        response = await client.post(f"/object/{mine['id']}/ack", json={"alert_id": alert_id})
        assert response.status == 422
        body = await response.json()
        assert body["error"] == "validation_failed"
        assert str(alert_id) in body["fields"]["alert_id"][0]
    await ack(client, mine["id"], my_alert["id"])
    # Refused acks moved nothing, not even after a good one.
    response = await client.post(f"/object/{mine['id']}/ack", json={"alert_id": their_alert["id"]})
    assert response.status == 422
    assert (
        await db.fetchval("SELECT acked_alert_id FROM objects WHERE id = $1", mine["id"])
        == (my_alert["id"])
    )
    assert await db.fetchval("SELECT acked_alert_id FROM objects WHERE id = $1", other["id"]) == 0


@pytest.mark.parametrize("path", ["/object/999/ack", "/object/0/ack", "/object/abc/ack"])
async def test_unknown_object_is_404(client: Client, path: str) -> None:
    obj = await create_object(client)
    alert = await create_alert(client, object_ids=[obj["id"]])
    response = await client.post(path, json={"alert_id": alert["id"]})
    assert response.status == 404
    assert (await response.json())["error"] == "not_found"


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"not json", 400, "malformed_request"),
        (b"[1]", 400, "malformed_request"),
        (b"5", 400, "malformed_request"),
        (b"{}", 422, "validation_failed"),
        (b'{"alert_id": null}', 422, "validation_failed"),
        (b'{"alert_id": "1"}', 422, "validation_failed"),
        (b'{"alert_id": 1.5}', 422, "validation_failed"),
        (b'{"alert_id": true}', 422, "validation_failed"),
        (b'{"alert_id": 0}', 422, "validation_failed"),
        (b'{"alert_id": -1}', 422, "validation_failed"),
        (b'{"alert_id": 9223372036854775808}', 422, "validation_failed"),
        (b'{"alert_id": 1, "extra": 2}', 422, "validation_failed"),
        (b'{"ack": 1}', 422, "validation_failed"),
    ],
)
async def test_bad_ack_bodies(
    client: Client, db: asyncpg.Connection, body: bytes, status: int, code: str
) -> None:
    obj = await create_object(client)
    await create_alert(client, object_ids=[obj["id"]])
    response = await client.post(
        f"/object/{obj['id']}/ack", data=body, headers={"Content-Type": "application/json"}
    )
    assert response.status == status
    assert (await response.json())["error"] == code
    assert await db.fetchval("SELECT acked_alert_id FROM objects") == 0


async def test_an_ack_that_is_not_json_is_415(client: Client) -> None:
    obj = await create_object(client)
    response = await client.post(f"/object/{obj['id']}/ack", data=b"alert_id=1")
    assert response.status == 415
    assert (await response.json())["error"] == "unsupported_media_type"


async def test_each_move_notifies_acks_once_and_alerts_never(
    client: Client, db: asyncpg.Connection
) -> None:
    """What a DBA sees: LISTEN acks gets one notification per move; LISTEN alerts gets none."""
    obj = await create_object(client)
    ids = [(await create_alert(client, object_ids=[obj["id"]]))["id"] for _ in range(3)]
    acks: asyncio.Queue[str] = asyncio.Queue()
    alerts: asyncio.Queue[str] = asyncio.Queue()
    await db.add_listener("acks", lambda *args: acks.put_nowait(args[-1]))
    await db.add_listener("alerts", lambda *args: alerts.put_nowait(args[-1]))

    await ack(client, obj["id"], ids[1])
    payload = json.loads(await asyncio.wait_for(acks.get(), 5))
    assert payload == {"object_id": obj["id"], "acked_alert_id": ids[1], "unread": 1}
    await ack(client, obj["id"], ids[0])  # does not move: no notification
    await ack(client, obj["id"], ids[1])
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(acks.get(), QUIET)
    assert alerts.empty()

    # By hand, as a DBA would: the same notification, at COMMIT.
    async with db.transaction():
        await db.execute("UPDATE objects SET acked_alert_id = $1 WHERE id = $2", ids[2], obj["id"])
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(acks.get(), QUIET)
    payload = json.loads(await asyncio.wait_for(acks.get(), 5))
    assert payload == {"object_id": obj["id"], "acked_alert_id": ids[2], "unread": 0}


async def test_unread_in_the_notification_counts_exactly_what_committed_before_it(
    client: Client, db: asyncpg.Connection, database_url: str
) -> None:
    """An alert that commits while an ack is being written is either before the ack in the
    notification stream and counted, or after it and not: never in between."""
    obj = await create_object(client)
    first = await create_alert(client, object_ids=[obj["id"]])
    stream: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()
    for channel in ("acks", "alerts"):
        await db.add_listener(
            channel, lambda _c, _p, ch, payload: stream.put_nowait((ch, json.loads(payload)))
        )
    # The ack's transaction is open (its row updated) while an alert commits; then it commits.
    acker = await asyncpg.connect(database_url)
    try:
        tx = acker.transaction()
        await tx.start()
        await acker.execute(
            "UPDATE objects SET acked_alert_id = $1 WHERE id = $2", first["id"], obj["id"]
        )
        late = await create_alert(client, object_ids=[obj["id"]])
        await tx.commit()
    finally:
        await acker.close()
    events = [await asyncio.wait_for(stream.get(), 5) for _ in range(2)]
    assert [(channel, payload.get("alert_id")) for channel, payload in events] == [
        ("alerts", late["id"]),
        ("acks", None),
    ]
    assert events[0][1]["object_ids"] == [obj["id"]]
    assert events[1][1] == {"object_id": obj["id"], "acked_alert_id": first["id"], "unread": 1}


async def test_a_gzip_ack_body_is_read_like_any_other(serve: Serve, db: asyncpg.Connection) -> None:
    """On the server `inbox serve` runs: the ack reads its body like the writes do."""
    base = f"http://127.0.0.1:{(await serve()).port}"
    json_body = {"Content-Type": "application/json"}
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{base}/object", json=OBJECT) as response:
            object_id = (await response.json())["id"]
        body = {"text": "x", "object_ids": [object_id]}
        async with http.post(f"{base}/alert", json=body) as response:
            alert_id = (await response.json())["id"]
        for data, status in (
            (gzip.compress(json.dumps({"alert_id": alert_id}).encode()), 200),
            (b"\x1f\x8bnot gzip", 400),
        ):
            async with http.post(
                f"{base}/object/{object_id}/ack",
                data=data,
                headers={**json_body, "Content-Encoding": "gzip"},
                compress=None,
            ) as response:
                assert response.status == status, await response.text()
    assert await db.fetchval("SELECT acked_alert_id FROM objects") == alert_id


OBJECT = {"email": "bob@example.com", "phone_number": "212-555-1234"}
