"""GET /healthz (the process answers) and GET /readyz (database and LISTEN; 503 with reasons)."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from service.keys import db_key, listener_key

from .conftest import app_of

Client = TestClient[Any, Any]


async def test_healthz_answers_without_the_database(client: Client) -> None:
    app_of(client)[db_key].pool.terminate()
    response = await client.get("/healthz")
    assert response.status == 200
    assert await response.json() == {"status": "ok"}


async def test_readyz_when_ready(client: Client) -> None:
    response = await client.get("/readyz")
    assert response.status == 200
    assert await response.json() == {"status": "ready"}


async def test_readyz_503_when_the_listener_is_down(client: Client) -> None:
    await app_of(client)[listener_key].stop()
    response = await client.get("/readyz")
    assert response.status == 503
    body = await response.json()
    assert body["status"] == "unavailable"
    assert [r for r in body["reasons"] if r.startswith("listener:")]
    assert not [r for r in body["reasons"] if r.startswith("database:")]


async def test_readyz_503_when_the_database_is_unreachable(client: Client) -> None:
    app_of(client)[db_key].pool.terminate()
    response = await client.get("/readyz")
    assert response.status == 503
    body = await response.json()
    assert body["status"] == "unavailable"
    assert [r for r in body["reasons"] if r.startswith("database:")]
