"""Every route with access control on, walked as a stranger: no credential, a wrong key, a
wrong token, another object's token (in the header and in the query). Nothing returns stored
data it should not, nothing answers 500, nothing is written."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from service.auth import Access, access_of, inbox_token

from .conftest import ClientFactory, app_of

Client = TestClient[Any, Any]
KEY = "walk-key-0123456789abcdef0123456789"
SECRET = "walk-secret-0123456789abcdef0123456789"
UPGRADE = {
    "Upgrade": "websocket",
    "Connection": "Upgrade",
    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
    "Sec-WebSocket-Version": "13",
}
MODES = {
    "keys and secret": {"API_KEYS": KEY, "INBOX_SECRET": SECRET},
    "keys only": {"API_KEYS": KEY},
    "secret only": {"INBOX_SECRET": SECRET},
}
BODIES: dict[str, Any] = {
    "/object": {"email": "mallory@example.com", "phone_number": "212-555-0000"},
    "/alert": {"text": "mallory was here", "alert_all": True},
}


async def stored(db: asyncpg.Connection) -> tuple[int, int, int]:
    row = await db.fetchrow(
        "SELECT (SELECT count(*) FROM objects), (SELECT count(*) FROM alerts),"
        " (SELECT count(*) FROM object_alerts)"
    )
    assert row is not None
    return row[0], row[1], row[2]


async def seed(db: asyncpg.Connection) -> dict[str, Any]:
    """A victim with a private alert, and the attacker's own object (whose token it holds)."""
    victim = await db.fetchval(
        "INSERT INTO objects (email, phone_number) VALUES ('victim@example.com', '+12125559876')"
        " RETURNING id"
    )
    attacker = await db.fetchval(
        "INSERT INTO objects (email, phone_number) VALUES ('a@example.com', '+12125550000')"
        " RETURNING id"
    )
    alert = await db.fetchval(
        "WITH a AS (INSERT INTO alerts (text, number_of_objects_receiving_alert)"
        " VALUES ('the victim''s secret alert', 1) RETURNING id)"
        " INSERT INTO object_alerts (object_id, alert_id) SELECT $1, id FROM a RETURNING alert_id",
        victim,
    )
    return {"victim": victim, "attacker": attacker, "alert": alert}


def concrete(path: str, ids: dict[str, Any]) -> str:
    return (
        path.replace("{object_id}", str(ids["victim"]))
        .replace("{alert_id}", str(ids["alert"]))
        .replace("{filename}", "app.js")
    )


def stranger_credentials(ids: dict[str, Any]) -> dict[str, tuple[dict[str, str], dict[str, str]]]:
    """name -> (headers, query) of each way a stranger may try."""
    theirs = inbox_token(SECRET, ids["attacker"])
    return {
        "none": ({}, {}),
        "wrong key": ({"Authorization": "Bearer not-the-key"}, {}),
        "wrong token": ({}, {"token": "not-a-token"}),
        "other token, header": ({"Authorization": f"Bearer {theirs}"}, {}),
        "other token, query": ({}, {"token": theirs}),
        "other token as recipient": ({}, {"token": theirs, "object_id": str(ids["attacker"])}),
        "victim id, other token": ({}, {"token": theirs, "object_id": str(ids["victim"])}),
        "key in the query": ({}, {"token": KEY}),
    }


@pytest.mark.parametrize("mode", MODES)
async def test_a_stranger_gets_nothing_from_any_route(
    make_client: ClientFactory, db: asyncpg.Connection, mode: str
) -> None:
    client = await make_client(**MODES[mode])
    ids = await seed(db)
    secrets = [
        "victim@example.com",
        "+12125559876",
        "the victim's secret alert",
        inbox_token(SECRET, ids["victim"]),
    ]
    before = await stored(db)
    routes = [r for r in app_of(client).router.routes() if r.method != "HEAD"]
    assert len(routes) >= 10
    walked = set()
    for route in routes:
        assert route.resource is not None
        canonical = route.resource.canonical
        access = access_of(canonical)
        path = concrete(canonical, ids)
        for name, (headers, query) in stranger_credentials(ids).items():
            if canonical.startswith("/inbox/"):
                headers = {**headers, **UPGRADE}
            response = await client.request(
                route.method, path, headers=headers, params=query, json=BODIES.get(canonical)
            )
            body = await response.text()
            what = f"{mode}: {route.method} {path} with {name} -> {response.status} {body[:200]}"
            assert response.status < 500, what
            assert not any(secret in body for secret in secrets), what
            if access is Access.OPEN:
                assert response.status == 200, what
            elif access is Access.API_KEY and "API_KEYS" not in MODES[mode]:
                pass  # writes and /metrics are open in this mode (a WARNING says so)
            elif access is Access.ALERT and "recipient" in name and "INBOX_SECRET" in MODES[mode]:
                # A valid token of a recipient that is not one: exactly like a missing alert.
                assert response.status == 404, what
                assert await response.json() == {
                    "error": "not_found",
                    "message": f"no alert with id {ids['alert']}",
                }
            else:
                assert response.status in (401, 403), what
                assert (await response.json())["error"] in ("unauthorized", "forbidden"), what
                if name == "none":
                    assert response.status == 401, what
                    assert response.headers["WWW-Authenticate"].startswith("Bearer"), what
            walked.add(canonical)
    assert {"/object/{object_id}", "/alert/{alert_id}", "/inbox/{object_id}"} <= walked
    if "API_KEYS" in MODES[mode]:
        assert await stored(db) == before


async def test_an_unknown_id_answers_like_one_the_caller_may_not_see(
    make_client: ClientFactory, db: asyncpg.Connection
) -> None:
    client = await make_client(API_KEYS=KEY, INBOX_SECRET=SECRET)
    ids = await seed(db)
    theirs = inbox_token(SECRET, ids["attacker"])
    missing = ids["alert"] + 1000
    # A token of the wrong object: decided before anything is looked up.
    for object_id in (ids["victim"], 999_999, "abc", "0" + str(ids["victim"])):
        response = await client.get(f"/object/{object_id}", params={"token": theirs})
        assert response.status == 403
        assert (await response.json())["message"] == "the credential does not open this object"
        response = await client.get(f"/object/{object_id}")
        assert response.status == 401
    # A recipient's token: an alert not addressed to it is exactly a missing one.
    answers = []
    for alert_id in (ids["alert"], missing):
        response = await client.get(
            f"/alert/{alert_id}", params={"token": theirs, "object_id": str(ids["attacker"])}
        )
        answers.append((response.status, (await response.json())["error"]))
    assert answers == [(404, "not_found"), (404, "not_found")]


async def test_unknown_paths_and_methods_answer_before_credentials(
    make_client: ClientFactory,
) -> None:
    client = await make_client(API_KEYS=KEY, INBOX_SECRET=SECRET)
    for method, path, status in (
        ("POST", "/nope", 404),
        ("GET", "/nope", 404),
        ("POST", "/object/1/nope", 404),
        ("DELETE", "/object", 405),
        ("PUT", "/alert/1", 405),
        ("POST", "/healthz", 405),
    ):
        response = await client.request(method, path, data=b"{")
        assert response.status == status, (method, path, await response.text())
        assert "WWW-Authenticate" not in response.headers
