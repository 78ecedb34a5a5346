"""Input that once cost too much or was quietly changed: a flood of unknown fields, phone
numbers with an extension."""

from __future__ import annotations

import io
from typing import Any

import asyncpg
import orjson
import pytest
from aiohttp.test_utils import TestClient

from service.schemas import MAX_ITEM_ERRORS

Client = TestClient[Any, Any]
OBJECT = {"email": "bob@example.com", "phone_number": "212-555-1234"}


@pytest.mark.parametrize("path", ["/object", "/alert"])
async def test_unknown_field_errors_are_capped(client: Client, path: str) -> None:
    body = {**OBJECT} if path == "/object" else {"text": "x", "alert_all": True}
    body.update({f"f{i}": 0 for i in range(75_000)})
    raw = orjson.dumps(body)
    assert len(raw) < 1 << 20  # under MAX_BODY_BYTES: it is read, then refused
    response = await client.post(
        path, data=io.BytesIO(raw), headers={"Content-Type": "application/json"}
    )
    assert response.status == 422
    answer = await response.read()
    assert len(answer) < 2000, len(answer)
    fields = orjson.loads(answer)["fields"]
    unknown = [name for name in fields if name != "_schema"]
    assert unknown == [f"f{i}" for i in range(MAX_ITEM_ERRORS)]
    assert fields["_schema"] == ["75000 unknown fields; the first 20 are listed."]


async def test_long_unknown_field_names_are_cut_in_the_answer(client: Client) -> None:
    body = {**OBJECT, **{f"{i}" + "n" * 10_000: 1 for i in range(30)}}
    raw = io.BytesIO(orjson.dumps(body))
    response = await client.post("/object", data=raw, headers={"Content-Type": "application/json"})
    assert response.status == 422
    assert len(await response.read()) < 4000


async def test_a_few_unknown_fields_are_each_named(client: Client) -> None:
    response = await client.post("/object", json={**OBJECT, "nickname": "b", "age": 3})
    assert response.status == 422
    assert (await response.json())["fields"] == {
        "nickname": ["Unknown field."],
        "age": ["Unknown field."],
    }


@pytest.mark.parametrize(
    "phone",
    ["212-555-1234 ext. 999", "212-555-1234 x999", "+1 212 555 1234;ext=5", "212-555-1234#9"],
)
async def test_a_phone_extension_is_refused_not_dropped(
    client: Client, db: asyncpg.Connection, phone: str
) -> None:
    response = await client.post("/object", json={**OBJECT, "phone_number": phone})
    assert response.status == 422
    assert (await response.json())["fields"] == {
        "phone_number": ["Extensions are not supported: send the number without one."]
    }
    assert await db.fetchval("SELECT count(*) FROM objects") == 0


async def test_numbers_too_long_for_int_are_not_a_500(client: Client) -> None:
    """int() refuses strings of more than 4300 digits with ValueError: once a 500."""
    digits = "9" * 5000
    response = await client.post("/object", json=OBJECT)
    object_id = (await response.json())["id"]
    response = await client.get(f"/inbox/{object_id}", params={"after": digits})
    assert response.status == 400
    for path in (f"/object/{digits}", f"/alert/{digits}"):
        response = await client.get(path)
        assert response.status == 404
        assert len(await response.read()) < 200
