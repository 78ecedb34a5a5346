"""POST /alert and GET /alert/{id}: recipients, counts, the transaction, error shapes."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from .conftest import create_alert, create_object, failing_inserts

Client = TestClient[Any, Any]


async def recipients(db: asyncpg.Connection, alert_id: int) -> list[int]:
    rows = await db.fetch(
        "SELECT object_id FROM object_alerts WHERE alert_id = $1 ORDER BY object_id", alert_id
    )
    return [row["object_id"] for row in rows]


async def test_only_existing_ids_are_kept_and_counted(
    client: Client, db: asyncpg.Connection
) -> None:
    a = await create_object(client)
    b = await create_object(client, phone_number="718-555-1234")
    alert = await create_alert(client, text="storm", object_ids=[a["id"], b["id"], 424242])
    assert alert["text"] == "storm"
    assert alert["alert_all"] is False
    assert alert["number_of_objects_receiving_alert"] == 2
    assert alert["object_ids"] == sorted([a["id"], b["id"]])
    assert await recipients(db, alert["id"]) == sorted([a["id"], b["id"]])
    stored = await db.fetchval(
        "SELECT number_of_objects_receiving_alert FROM alerts WHERE id = $1", alert["id"]
    )
    assert stored == 2


async def test_duplicate_ids_count_once(client: Client, db: asyncpg.Connection) -> None:
    a = await create_object(client)
    alert = await create_alert(client, object_ids=[a["id"], a["id"], a["id"]])
    assert alert["number_of_objects_receiving_alert"] == 1
    assert await recipients(db, alert["id"]) == [a["id"]]


async def test_no_existing_ids_stores_an_alert_for_nobody(
    client: Client, db: asyncpg.Connection
) -> None:
    alert = await create_alert(client, object_ids=[])
    assert alert["number_of_objects_receiving_alert"] == 0
    assert alert["object_ids"] == []
    assert await db.fetchval("SELECT count(*) FROM alerts") == 1


async def test_alert_all_reaches_every_object(client: Client, db: asyncpg.Connection) -> None:
    ids = [(await create_object(client))["id"] for _ in range(5)]
    alert = await create_alert(client, alert_all=True)
    assert alert["alert_all"] is True
    assert alert["number_of_objects_receiving_alert"] == 5
    assert "object_ids" not in alert
    assert await recipients(db, alert["id"]) == ids


async def test_alert_all_with_an_empty_list_is_accepted(client: Client) -> None:
    await create_object(client)
    alert = await create_alert(client, alert_all=True, object_ids=[])
    assert alert["number_of_objects_receiving_alert"] == 1


async def test_get_alert(client: Client) -> None:
    a = await create_object(client)
    alert = await create_alert(client, object_ids=[a["id"]])
    response = await client.get(f"/alert/{alert['id']}")
    assert response.status == 200
    assert await response.json() == alert
    response = await client.get("/alert/987654")
    assert response.status == 404
    assert (await response.json())["error"] == "not_found"


async def test_alert_ids_increase(client: Client) -> None:
    a = await create_object(client)
    first = await create_alert(client, object_ids=[a["id"]])
    second = await create_alert(client, object_ids=[a["id"]])
    assert second["id"] > first["id"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"object_ids": [1]}, "text"),
        ({"text": "", "object_ids": [1]}, "text"),
        ({"text": 5, "object_ids": [1]}, "text"),
        ({"text": "x" * 4001, "object_ids": [1]}, "text"),
        ({"text": "a\u0000b", "object_ids": [1]}, "text"),
        ({"text": "hi"}, "object_ids"),
        ({"text": "hi", "object_ids": None}, "object_ids"),
        ({"text": "hi", "object_ids": "1,2"}, "object_ids"),
        ({"text": "hi", "object_ids": [1.5]}, "object_ids"),
        ({"text": "hi", "object_ids": ["1"]}, "object_ids"),
        ({"text": "hi", "object_ids": [True]}, "object_ids"),
        ({"text": "hi", "object_ids": [-1]}, "object_ids"),
        ({"text": "hi", "object_ids": [0]}, "object_ids"),
        ({"text": "hi", "object_ids": [2**63]}, "object_ids"),
        ({"text": "hi", "object_ids": [2**70]}, "object_ids"),
        ({"text": "hi", "object_ids": [[1]]}, "object_ids"),
        ({"text": "hi", "object_ids": list(range(1, 10002))}, "object_ids"),
        ({"text": "hi", "object_ids": [1], "alert_all": True}, "object_ids"),
        ({"text": "hi", "alert_all": "yes"}, "alert_all"),
        ({"text": "hi", "alert_all": 1}, "alert_all"),
        ({"text": "hi", "object_ids": [1], "extra": 1}, "extra"),
    ],
)
async def test_invalid_alert_is_422_and_not_stored(
    client: Client, db: asyncpg.Connection, body: dict[str, Any], field: str
) -> None:
    await create_object(client)
    response = await client.post("/alert", json=body)
    assert response.status == 422, await response.text()
    error = await response.json()
    assert error["error"] == "validation_failed"
    assert field in error["fields"], error
    assert await db.fetchval("SELECT count(*) FROM alerts") == 0


async def test_text_limit_is_a_setting(make_client: Any) -> None:
    client = await make_client(ALERT_TEXT_MAX_LENGTH="10")
    response = await client.post("/alert", json={"text": "x" * 11, "object_ids": []})
    assert response.status == 422
    response = await client.post("/alert", json={"text": "x" * 10, "object_ids": []})
    assert response.status == 200


async def test_object_ids_limit_is_a_setting(make_client: Any) -> None:
    client = await make_client(ALERT_MAX_OBJECT_IDS="3")
    response = await client.post("/alert", json={"text": "x", "object_ids": [1, 2, 3, 4]})
    assert response.status == 422
    response = await client.post("/alert", json={"text": "x", "object_ids": [1, 2, 3]})
    assert response.status == 200


async def test_failure_part_way_leaves_nothing(client: Client, db: asyncpg.Connection) -> None:
    """An object_alerts row that cannot be written aborts the whole alert: no alert, no rows."""
    a = await create_object(client)
    async with failing_inserts(db, "object_alerts"):
        response = await client.post("/alert", json={"text": "x", "object_ids": [a["id"]]})
        assert response.status == 500
        assert (await response.json())["error"] == "internal_error"
    assert await db.fetchval("SELECT count(*) FROM alerts") == 0
    assert await db.fetchval("SELECT count(*) FROM object_alerts") == 0


async def test_unknown_route_and_method_are_json(client: Client) -> None:
    response = await client.get("/nowhere")
    assert response.status == 404
    assert (await response.json())["error"] == "not_found"
    response = await client.delete("/alert")
    assert response.status == 405
    assert (await response.json())["error"] == "method_not_allowed"
    assert "POST" in response.headers["Allow"]


async def test_body_over_the_limit_is_413(make_client: Any, db: asyncpg.Connection) -> None:
    client = await make_client(MAX_BODY_BYTES="1000")
    response = await client.post("/alert", json={"text": "x" * 2000, "object_ids": []})
    assert response.status == 413
    assert (await response.json())["error"] == "payload_too_large"
    assert await db.fetchval("SELECT count(*) FROM alerts") == 0
