"""Access control: API keys on writes, inbox tokens (with rotation), Origin checks, and SQL
injection payloads in every field."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp import WSServerHandshakeError
from aiohttp.test_utils import TestClient

from service.app import create_app
from service.auth import inbox_token
from service.config import Config
from service.keys import hub_key, sockets_key

from .conftest import app_of, create_object, make_config
from .test_cli import assert_one_clear_line, run

Client = TestClient[Any, Any]
SECRET = "inbox-secret-0123456789abcdef0123456789"
OBJECT = {"email": "bob@example.com", "phone_number": "212-555-1234"}
UPGRADE = {
    "Upgrade": "websocket",
    "Connection": "Upgrade",
    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
    "Sec-WebSocket-Version": "13",
}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def counts(db: asyncpg.Connection) -> tuple[int, int]:
    row = await db.fetchrow("SELECT (SELECT count(*) FROM objects), (SELECT count(*) FROM alerts)")
    assert row is not None
    return row[0], row[1]


# -- API keys ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        (bearer("wrong"), 403),
        (bearer("key-one-"), 403),
        (bearer("key-on"), 403),
        ({"Authorization": "key-one"}, 401),
        ({"Authorization": "Basic key-one"}, 401),
        ({"Authorization": "Bearer"}, 401),
        ({"Authorization": "Bearer "}, 401),
    ],
)
async def test_post_without_a_valid_key_is_refused_and_writes_nothing(
    make_client: Any, db: asyncpg.Connection, headers: dict[str, str], status: int
) -> None:
    """No key (or not as a Bearer credential) is 401, a wrong key 403."""
    client = await make_client(API_KEYS="key-one, key-two")
    code = {401: "unauthorized", 403: "forbidden"}[status]
    for path, body in (("/object", OBJECT), ("/alert", {"text": "x", "alert_all": True})):
        response = await client.post(path, json=body, headers=headers)
        assert response.status == status, await response.text()
        assert (await response.json())["error"] == code
        if status == 401:
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
    # Refused before the body is read: even an invalid body gets 401/403, not 422.
    response = await client.post("/alert", data=b"{", headers=headers)
    assert response.status == status
    assert await counts(db) == (0, 0)


async def test_post_with_any_configured_key_is_accepted(make_client: Any) -> None:
    client = await make_client(API_KEYS="key-one,key-two")
    for key in ("key-one", "key-two"):
        response = await client.post("/object", json=OBJECT, headers=bearer(key))
        assert response.status == 200
        response = await client.post(
            "/alert",
            json={"text": "x", "alert_all": True},
            headers={"Authorization": f"bearer {key}"},
        )
        assert response.status == 200


async def test_reads_need_a_key_or_the_objects_token(make_client: Any) -> None:
    client = await make_client(API_KEYS="key-one", INBOX_SECRET=SECRET)
    response = await client.post("/object", json=OBJECT, headers=bearer("key-one"))
    created = await response.json()
    path = f"/object/{created['id']}"
    assert (await client.get(path)).status == 401
    for headers, params in (
        (bearer("key-one"), {}),
        (bearer(created["inbox_token"]), {}),
        ({}, {"token": created["inbox_token"]}),
        (bearer("wrong"), {"token": created["inbox_token"]}),  # one valid credential suffices
    ):
        response = await client.get(path, headers=headers, params=params)
        assert response.status == 200, await response.text()
        assert await response.json() == created
    # Health, readiness and the documents stay open.
    for open_path in ("/healthz", "/readyz", "/openapi.json", "/"):
        assert (await client.get(open_path)).status == 200


async def test_metrics_need_a_key_when_keys_are_set(make_client: Any) -> None:
    client = await make_client(API_KEYS="key-one")
    assert (await client.get("/metrics")).status == 401
    assert (await client.get("/metrics", headers=bearer("nope"))).status == 403
    assert (await client.get("/metrics", headers=bearer("key-one"))).status == 200
    open_client = await make_client(INBOX_SECRET=SECRET)
    assert (await open_client.get("/metrics")).status == 200


async def test_an_alert_as_a_recipient_sees_it(make_client: Any) -> None:
    client = await make_client(API_KEYS="key-one", INBOX_SECRET=SECRET)
    key = bearer("key-one")
    objects = [await (await client.post("/object", json=OBJECT, headers=key)).json() for _ in "ab"]
    first, second = objects
    response = await client.post(
        "/alert", json={"text": "both", "object_ids": [first["id"], second["id"]]}, headers=key
    )
    alert = await response.json()
    response = await client.post(
        "/alert", json={"text": "everyone", "alert_all": True}, headers=key
    )
    to_all = await response.json()
    full = await (await client.get(f"/alert/{alert['id']}", headers=key)).json()
    assert full["object_ids"] == [first["id"], second["id"]]
    for obj in objects:
        for headers, params in (
            ({}, {"token": obj["inbox_token"], "object_id": str(obj["id"])}),
            (bearer(obj["inbox_token"]), {"object_id": str(obj["id"])}),
        ):
            response = await client.get(f"/alert/{alert['id']}", headers=headers, params=params)
            assert response.status == 200, await response.text()
            assert await response.json() == {**full, "object_ids": [obj["id"]]}
            response = await client.get(f"/alert/{to_all['id']}", headers=headers, params=params)
            assert await response.json() == to_all
    # Without naming the object, a token opens nothing; naming another object neither.
    response = await client.get(f"/alert/{alert['id']}", params={"token": first["inbox_token"]})
    assert response.status == 403
    response = await client.get(
        f"/alert/{alert['id']}",
        params={"token": first["inbox_token"], "object_id": str(second["id"])},
    )
    assert response.status == 403


async def test_keys_only_objects_and_inboxes_need_the_key(make_client: Any) -> None:
    client = await make_client(API_KEYS="key-one")
    created = await (await client.post("/object", json=OBJECT, headers=bearer("key-one"))).json()
    assert "inbox_token" not in created
    path = f"/inbox/{created['id']}"
    assert (await refused(client, path, 401))["error"] == "unauthorized"
    token = inbox_token(SECRET, created["id"])
    assert (await refused(client, f"{path}?token={token}", 403))["error"] == "forbidden"
    ws = await client.ws_connect(path, headers=bearer("key-one"))
    await ws.close()


async def test_secret_only_writes_are_open_and_tokens_guard_reads(make_client: Any) -> None:
    client = await make_client(INBOX_SECRET=SECRET)
    created = await create_object(client)
    assert created["inbox_token"] == inbox_token(SECRET, created["id"])
    assert (await client.get(f"/object/{created['id']}")).status == 401
    response = await client.get(
        f"/object/{created['id']}", params={"token": created["inbox_token"]}
    )
    assert response.status == 200
    response = await client.post("/alert", json={"text": "x", "object_ids": [created["id"]]})
    alert = await response.json()
    assert (await client.get(f"/alert/{alert['id']}")).status == 401
    response = await client.get(
        f"/alert/{alert['id']}",
        params={"token": created["inbox_token"], "object_id": str(created["id"])},
    )
    assert response.status == 200


async def test_open_configuration_warns_at_start_up(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="service.auth"):
        create_app(make_config(database_url), database_url)
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("API_KEYS is not set" in m for m in messages)
    assert any("INBOX_SECRET is not set" in m for m in messages)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="service.auth"):
        create_app(make_config(database_url, API_KEYS="k", INBOX_SECRET=SECRET), database_url)
    assert not caplog.records


def test_secrets_stay_out_of_the_config_repr(database_url: str) -> None:
    config = make_config(database_url, API_KEYS="hunter2", INBOX_SECRET="s3cr3t-value" * 3)
    assert "hunter2" not in repr(config)
    assert "s3cr3t-value" not in repr(config)


@pytest.mark.parametrize("setting", ["INBOX_SECRET", "INBOX_SECRET_PREVIOUS"])
def test_a_short_secret_stops_start_up(tmp_path: Path, setting: str) -> None:
    """One line naming the setting, exit status 2, and the secret itself never shown."""
    for short in ("topsecret", "x" * 31, "é" * 15):  # 30 bytes in UTF-8
        result = run(["serve"], tmp_path, **{setting: short})
        assert_one_clear_line(result, setting)
        assert "32 bytes" in result.stderr
        assert short not in result.stderr + result.stdout
    config = Config.from_env(environ={setting: "é" * 16}, env_file=None)  # 32 bytes: enough
    assert "é" * 16 in (config.inbox_secret, config.inbox_secret_previous)


def test_a_bad_database_url_is_shown_without_its_password(tmp_path: Path) -> None:
    result = run(["migrate"], tmp_path, DATABASE_URL="postgresql://u:hunter2@h:port/db")
    assert_one_clear_line(result, "DATABASE_URL")
    assert "hunter2" not in result.stderr


# -- inbox tokens -----------------------------------------------------------------------------


async def test_inbox_token_is_returned_with_the_object(make_client: Any) -> None:
    client = await make_client(INBOX_SECRET=SECRET)
    created = await create_object(client)
    assert created["inbox_token"] == inbox_token(SECRET, created["id"])
    token = {"token": created["inbox_token"]}
    response = await client.get(f"/object/{created['id']}", params=token)
    assert (await response.json())["inbox_token"] == created["inbox_token"]
    # Without INBOX_SECRET there is no token to give.
    open_client = await make_client()
    assert "inbox_token" not in await create_object(open_client)


async def test_inbox_token_only_for_callers_with_a_key_or_the_token(make_client: Any) -> None:
    client = await make_client(INBOX_SECRET=SECRET, API_KEYS="k")
    response = await client.post("/object", json=OBJECT, headers=bearer("k"))
    created = await response.json()
    assert created["inbox_token"] == inbox_token(SECRET, created["id"])
    for headers in ({}, bearer("wrong")):
        response = await client.get(f"/object/{created['id']}", headers=headers)
        assert response.status in (401, 403)
        assert "inbox_token" not in await response.text()
    response = await client.get(f"/object/{created['id']}", headers=bearer("k"))
    assert (await response.json())["inbox_token"] == created["inbox_token"]


async def refused(client: Client, path: str, status: int, **headers: str) -> dict[str, Any]:
    """A WebSocket request refused before the upgrade: a plain JSON answer, no socket."""
    response = await client.get(path, headers={**UPGRADE, **headers})
    assert response.status == status, await response.text()
    assert "Upgrade" not in response.headers
    body: dict[str, Any] = await response.json()
    with pytest.raises(WSServerHandshakeError) as caught:
        await client.ws_connect(path, headers=headers)
    assert caught.value.status == status
    app = app_of(client)
    assert len(app[hub_key]) == 0
    assert not app[sockets_key]
    return body


async def test_inbox_needs_the_token(make_client: Any) -> None:
    client = await make_client(INBOX_SECRET=SECRET)
    obj = await create_object(client)
    other = await create_object(client)
    body = await refused(client, f"/inbox/{obj['id']}", 401)
    assert body["error"] == "unauthorized"
    assert (await refused(client, f"/inbox/{obj['id']}?token=", 401))["error"] == "unauthorized"
    for token in ("nope", other["inbox_token"], inbox_token(SECRET + "2", obj["id"])):
        body = await refused(client, f"/inbox/{obj['id']}?token={token}", 403)
        assert body["error"] == "forbidden"
    # Refused before the object is looked up: a missing object does not answer 404 to strangers.
    assert (await refused(client, "/inbox/999999?token=x", 403))["error"] == "forbidden"
    ws = await client.ws_connect(f"/inbox/{obj['id']}", params={"token": obj["inbox_token"]})
    await ws.close()


async def test_previous_secret_still_opens_inboxes(make_client: Any) -> None:
    old_secret, new_secret = "old-" + SECRET, "new-" + SECRET
    old = await make_client(INBOX_SECRET=old_secret)
    obj = await create_object(old)
    old_token = obj["inbox_token"]
    rotated = await make_client(INBOX_SECRET=new_secret, INBOX_SECRET_PREVIOUS=old_secret)
    # A client holding the old token fetches its new one.
    response = await rotated.get(f"/object/{obj['id']}", params={"token": old_token})
    fresh = await response.json()
    assert fresh["inbox_token"] == inbox_token(new_secret, obj["id"]) != old_token
    for token in (old_token, fresh["inbox_token"]):
        ws = await rotated.ws_connect(f"/inbox/{obj['id']}", params={"token": token})
        await ws.close()
    older = inbox_token("older-" + SECRET, obj["id"])
    await refused(rotated, f"/inbox/{obj['id']}?token={older}", 403)
    # Once the previous secret is dropped, its tokens stop working.
    done = await make_client(INBOX_SECRET=new_secret)
    await refused(done, f"/inbox/{obj['id']}?token={old_token}", 403)


# -- origins ----------------------------------------------------------------------------------


async def test_origin_must_be_allowed(make_client: Any) -> None:
    client = await make_client(ALLOWED_ORIGINS="https://app.example.com, http://localhost:3000")
    obj = await create_object(client)
    path = f"/inbox/{obj['id']}"
    for origin in ("https://evil.example.com", "null", "https://app.example.com.evil.net"):
        assert (await refused(client, path, 403, Origin=origin))["error"] == "forbidden"
    for headers in ({"Origin": "https://APP.example.com"}, {"Origin": "http://localhost:3000"}, {}):
        ws = await client.ws_connect(path, headers=headers)
        await ws.close()


async def test_any_origin_when_none_configured(client: Client) -> None:
    obj = await create_object(client)
    ws = await client.ws_connect(f"/inbox/{obj['id']}", headers={"Origin": "https://x.example"})
    await ws.close()


# -- SQL injection ----------------------------------------------------------------------------

INJECTIONS = [
    "'; DROP TABLE alerts; --",
    "Robert'); DROP TABLE objects;--",
    "' OR '1'='1",
    "1; DELETE FROM object_alerts",
    "$1",
    "\\'; TRUNCATE objects; --",
    "') UNION SELECT id, email, phone_number, created_at FROM objects --",
]


async def tables_intact(db: asyncpg.Connection) -> None:
    for table in ("objects", "alerts", "object_alerts", "idempotency_keys"):
        assert await db.fetchval("SELECT to_regclass($1)", table) is not None


async def test_injection_payloads_are_stored_verbatim_or_refused(
    client: Client, db: asyncpg.Connection
) -> None:
    keeper = await create_object(client)
    for payload in INJECTIONS:
        alert = await (
            await client.post("/alert", json={"text": payload, "object_ids": [keeper["id"]]})
        ).json()
        assert alert["text"] == payload
        assert await db.fetchval("SELECT text FROM alerts WHERE id = $1", alert["id"]) == payload
        # Strings where ids belong are type errors, in the body, the path and the query.
        response = await client.post("/alert", json={"text": "x", "object_ids": [payload]})
        assert response.status == 422
        response = await client.post("/alert", json={"text": "x", "object_ids": payload})
        assert response.status == 422
        assert (await client.get("/object/1 OR 1=1")).status == 404
        assert (await client.get("/alert/1;DROP TABLE alerts")).status == 404
        response = await client.get(f"/inbox/{keeper['id']}", params={"after": payload})
        assert response.status == 400
        response = await client.post(
            "/object", json={"email": "bob@example.com", "phone_number": payload}
        )
        assert response.status == 422
        response = await client.post(
            "/object", json={"email": payload, "phone_number": "212-555-1234"}
        )
        assert response.status == 422
    for local in ("o'reilly", "x'or'1'='1", "admin'--", "a'+'b"):
        created = await create_object(client, email=f"{local}@example.com")
        stored = await db.fetchval("SELECT email FROM objects WHERE id = $1", created["id"])
        assert stored == f"{local}@example.com" == created["email"]
    await tables_intact(db)
    assert await db.fetchval("SELECT count(*) FROM objects") == 5
    assert await db.fetchval("SELECT count(*) FROM alerts") == len(INJECTIONS)
    assert await db.fetchval("SELECT count(*) FROM object_alerts") == len(INJECTIONS)
