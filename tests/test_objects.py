"""POST /object and GET /object/{id}: validation, normalisation, storage, error shapes."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from .conftest import create_object

Client = TestClient[Any, Any]


async def test_seed_example_is_stored_normalised(client: Client, db: asyncpg.Connection) -> None:
    body = await create_object(client, email="bob@example.com", phone_number="212-555-1234")
    assert body["email"] == "bob@example.com"
    assert body["phone_number"] == "+12125551234"
    assert isinstance(body["id"], int)
    row = await db.fetchrow("SELECT email, phone_number FROM objects WHERE id = $1", body["id"])
    assert dict(row) == {"email": "bob@example.com", "phone_number": "+12125551234"}


async def test_second_seed_number(client: Client) -> None:
    body = await create_object(client, phone_number="718-555-1234")
    assert body["phone_number"] == "+17185551234"


async def test_email_domain_is_normalised(client: Client) -> None:
    body = await create_object(client, email="Bob@EXAMPLE.COM")
    assert body["email"] == "Bob@example.com"


async def test_international_number_keeps_its_country(client: Client) -> None:
    body = await create_object(client, phone_number="+44 20 7946 0958")
    assert body["phone_number"] == "+442079460958"


async def test_get_object_round_trips(client: Client) -> None:
    created = await create_object(client)
    response = await client.get(f"/object/{created['id']}")
    assert response.status == 200
    assert await response.json() == created


@pytest.mark.parametrize(
    "path",
    ["/object/999999", "/object/abc", "/object/-1", "/object/0", "/object/99999999999999999999999"],
)
async def test_get_missing_object_is_404(client: Client, path: str) -> None:
    response = await client.get(path)
    assert response.status == 404
    assert (await response.json())["error"] == "not_found"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"email": "not-an-email", "phone_number": "212-555-1234"}, "email"),
        ({"email": "bob@", "phone_number": "212-555-1234"}, "email"),
        ({"email": "bob@example.com", "phone_number": "12"}, "phone_number"),
        ({"email": "bob@example.com", "phone_number": "555-0000"}, "phone_number"),
        ({"email": "bob@example.com", "phone_number": "not a number"}, "phone_number"),
        ({"email": "bob@example.com", "phone_number": "+1 212 555 123456789"}, "phone_number"),
        ({"phone_number": "212-555-1234"}, "email"),
        ({"email": "bob@example.com"}, "phone_number"),
        ({"email": 5, "phone_number": "212-555-1234"}, "email"),
        ({"email": "bob@example.com", "phone_number": 2125551234}, "phone_number"),
        ({"email": None, "phone_number": "212-555-1234"}, "email"),
        ({"email": "bob@example.com", "phone_number": "212-555-1234", "name": "Bob"}, "name"),
        ({"email": "bob\u0000@example.com", "phone_number": "212-555-1234"}, "email"),
    ],
)
async def test_invalid_object_is_422_and_not_stored(
    client: Client, db: asyncpg.Connection, body: dict[str, Any], field: str
) -> None:
    response = await client.post("/object", json=body)
    assert response.status == 422
    error = await response.json()
    assert error["error"] == "validation_failed"
    assert isinstance(error["message"], str)
    assert field in error["fields"]
    assert all(isinstance(m, str) for m in error["fields"][field])
    assert await db.fetchval("SELECT count(*) FROM objects") == 0


@pytest.mark.parametrize(
    "raw", [b"", b"{", b"not json", b"[1, 2]", b'"text"', b"null", b'{"email": NaN}', b"\xff\xfe"]
)
async def test_malformed_body_is_400(client: Client, raw: bytes) -> None:
    response = await client.post("/object", data=raw, headers={"Content-Type": "application/json"})
    assert response.status == 400
    error = await response.json()
    assert error["error"] == "malformed_request"
    assert isinstance(error["message"], str)


async def test_wrong_content_type_is_415(client: Client) -> None:
    response = await client.post(
        "/object", data=b'{"email": "bob@example.com"}', headers={"Content-Type": "text/plain"}
    )
    assert response.status == 415
    assert (await response.json())["error"] == "unsupported_media_type"
