"""Request ids (X-Request-Id), the access log line, and the text / JSON line formats."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import logging
import os
import secrets
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import WSServerHandshakeError
from aiohttp.test_utils import TestClient

import testbed
from service import logs
from service.config import Config, ConfigError

from .conftest import create_object

Client = TestClient[Any, Any]


async def test_a_sane_request_id_is_echoed(client: Client) -> None:
    response = await client.get("/healthz", headers={"X-Request-Id": "trace-42.a:b/c+d=e"})
    assert response.headers["X-Request-Id"] == "trace-42.a:b/c+d=e"
    assert response.headers["X-Inbox-Worker"] == str(os.getpid())


@pytest.mark.parametrize("sent", [None, "", "has spaces", "x" * 129, "-leading-dash", "ünï"])
async def test_otherwise_one_is_generated(client: Client, sent: str | None) -> None:
    headers = {} if sent is None else {"X-Request-Id": sent}
    first = await client.get("/healthz", headers=headers)
    second = await client.get("/healthz", headers=headers)
    generated = first.headers["X-Request-Id"]
    assert generated != sent
    assert len(generated) == 32
    assert generated != second.headers["X-Request-Id"]


async def test_errors_and_unknown_routes_carry_the_id(client: Client) -> None:
    for method, path in (("GET", "/object/999"), ("GET", "/nope"), ("DELETE", "/object")):
        response = await client.request(method, path, headers={"X-Request-Id": "err-1"})
        assert response.status >= 400
        assert response.headers["X-Request-Id"] == "err-1"
        assert (await response.json())["error"]


async def test_the_websocket_handshake_carries_the_id(client: Client) -> None:
    obj = await create_object(client)
    response = await client.get(
        f"/inbox/{obj['id']}",
        headers={
            "Connection": "Upgrade",
            "Upgrade": "websocket",
            "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": base64.b64encode(secrets.token_bytes(16)).decode(),
            "X-Request-Id": "ws-1",
        },
    )
    assert response.status == 101
    assert response.headers["X-Request-Id"] == "ws-1"
    response.close()


async def test_one_access_log_line_per_request(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="inbox.access"):
        await client.get("/object/999?x=1", headers={"X-Request-Id": "acc-1"})
    lines = [r for r in caplog.records if r.name == "inbox.access"]
    assert len(lines) == 1
    record = lines[0]
    assert record.request_id == "acc-1"  # type: ignore[attr-defined]
    assert record.status == 404  # type: ignore[attr-defined]
    assert '"GET /object/999?x=1 HTTP/1.1" 404' in record.getMessage()
    text = logs.TextFormatter().format(record)
    assert "\n" not in text
    assert text.endswith("request_id=acc-1")


def record(message: str, **extra: Any) -> logging.LogRecord:
    rec = logging.makeLogRecord({"name": "inbox.test", "levelname": "INFO", "msg": message})
    for key, value in extra.items():
        setattr(rec, key, value)
    logs.RequestIdFilter().filter(rec)
    return rec


def test_json_lines() -> None:
    token = logs.request_id_var.set("json-1")
    try:
        rec = record('said "hi"\nthen left', status=200)
    finally:
        logs.request_id_var.reset(token)
    line = logs.JsonFormatter().format(rec)
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["message"] == 'said "hi"\nthen left'
    assert entry["level"] == "INFO"
    assert entry["logger"] == "inbox.test"
    assert entry["request_id"] == "json-1"
    assert entry["status"] == 200
    assert entry["ts"].endswith("+00:00")


def test_json_lines_carry_exceptions_on_one_line() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        rec = logging.makeLogRecord({"msg": "failed", "exc_info": sys.exc_info()})
    entry = json.loads(logs.JsonFormatter().format(rec))
    assert "ValueError: boom" in entry["exception"]
    assert "request_id" not in entry


def test_text_lines_outside_requests_have_no_id() -> None:
    assert "request_id" not in logs.TextFormatter().format(record("plain"))


def test_log_settings() -> None:
    config = Config.from_env(environ={"LOG_FORMAT": "JSON", "LOG_LEVEL": "Warning"}, env_file=None)
    assert (config.log_format, config.log_level) == ("json", "warning")
    default = Config.from_env(environ={}, env_file=None)
    assert (default.log_format, default.log_level) == ("text", "info")
    with pytest.raises(ConfigError, match="LOG_FORMAT"):
        Config.from_env(environ={"LOG_FORMAT": "xml"}, env_file=None)
    with pytest.raises(ConfigError, match="LOG_LEVEL"):
        Config.from_env(environ={"LOG_LEVEL": "loud"}, env_file=None)


# -- no credential in any line ---------------------------------------------------------------

KEY = "log-key-0123456789abcdef0123456789abcdef"
SECRET = "log-secret-0123456789abcdef0123456789abcdef"


@contextlib.contextmanager
def every_log_line(log_format: str) -> Iterator[io.StringIO]:
    """Every record of every logger, DEBUG and up, through the service's own formatter."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter() if log_format == "json" else logs.TextFormatter())
    handler.addFilter(logs.RequestIdFilter())
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


async def raw_request(client: Client, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection(client.host, client.port)
    try:
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()


@pytest.mark.parametrize("log_format", ["text", "json"])
async def test_no_credential_reaches_the_logs(make_client: Any, log_format: str) -> None:
    """A whole session that uses a key and a token, in the header and the query, over HTTP
    and WebSocket, refused and accepted, and malformed requests aiohttp itself refuses."""
    with every_log_line(log_format) as stream:
        client = await make_client(API_KEYS=KEY, INBOX_SECRET=SECRET, LOG_FORMAT=log_format)
        key = {"Authorization": f"Bearer {KEY}"}
        body = {"email": "bob@example.com", "phone_number": "212-555-1234"}
        created = await (await client.post("/object", json=body, headers=key)).json()
        token = created["inbox_token"]
        oid = created["id"]
        assert (await client.get(f"/object/{oid}", params={"token": token})).status == 200
        response = await client.get(f"/object/{oid}", headers={"Authorization": f"Bearer {token}"})
        assert response.status == 200
        assert (await client.get(f"/object/{oid + 1}", params={"token": token})).status == 403
        assert (await client.get(f"/object/{oid}", params={"TOKEN": token})).status == 401
        assert (await client.get(f"/object/{oid}?%74oken={token}")).status == 200
        async with client.ws_connect(f"/inbox/{oid}", params={"token": token, "after": "0"}) as ws:
            response = await client.post(
                "/alert", json={"text": "hi", "object_ids": [oid]}, headers=key
            )
            alert = await response.json()
            assert (await ws.receive_json(timeout=5))["id"] == alert["id"]
        params = {"token": token, "object_id": str(oid)}
        assert (await client.get(f"/alert/{alert['id']}", params=params)).status == 200
        with pytest.raises(WSServerHandshakeError):
            await client.ws_connect(f"/inbox/{oid + 1}", params={"token": token})
        for raw in (
            f"GET /inbox/{oid}?token={token}\x01 HTTP/1.1\r\nHost: x\r\n\r\n",
            f"GET /object/{oid} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\x01\r\n\r\n",
            f"GET /object/{oid}?after=1&token={token}&x={'A' * 9000} HTTP/1.1\r\n\r\n",
        ):
            assert (await raw_request(client, raw.encode())).startswith(b"HTTP/1.")
        await client.close()
    lines = stream.getvalue()
    assert f"/inbox/{oid}" in lines  # the session was logged, aiohttp's own errors too
    assert "aiohttp.server" in lines
    assert "[redacted]" in lines
    for secret in (token, KEY, token[:16], KEY[:16]):
        assert secret not in lines


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("GET /inbox/1?token=abc&after=2", "GET /inbox/1?token=[redacted]&after=2"),
        ("b'GET /x?Token=abc\\x01 HTTP'", "b'GET /x?Token=[redacted]\\x01 HTTP'"),
        ('"path": "/x?api_key=k1"', '"path": "/x?api_key=[redacted]"'),
        ("Authorization: Bearer abc.def", "Authorization: Bearer [redacted]"),
        ("postgresql://u:pw@h:5432/db", "postgresql://u:[redacted]@h:5432/db"),
        ("postgresql://u@h:5432/db?x=1", "postgresql://u@h:5432/db?x=1"),
        ("Idempotency-Key=abc after=3 monkey=x", "Idempotency-Key=abc after=3 monkey=x"),
    ],
)
def test_redact(line: str, expected: str) -> None:
    assert logs.redact(line) == expected


@pytest.mark.parametrize(
    "line",
    [
        'GET /x?TOKEN=abc HTTP/1.1" 200',
        "GET /x?\u017fecret=abc",  # long s: the regex folds it to "s"
        "GET /x?api_\u212aey=abc",  # Kelvin sign: folded to "k"
        "Authorization: BEARER  abc",
        "x=1 request_id=abc key:value tokens=5 \u00e9",
        "amqp://user:pw@host",
        '127.0.0.1 "POST /alert HTTP/1.1" 200 170B 1.2ms request_id=0123abcd',
    ],
)
def test_redact_skips_the_regex_only_for_lines_it_cannot_match(line: str) -> None:
    assert logs.redact(line) == logs._SECRETS.sub(logs._hide, line)


def test_json_lines_redact_nested_fields() -> None:
    rec = record("sent", request={"url": "/inbox/1?token=abc&after=2", "auth": ["Bearer k1"]})
    entry = json.loads(logs.JsonFormatter().format(rec))
    assert entry["request"] == {
        "url": "/inbox/1?token=[redacted]&after=2",
        "auth": ["Bearer [redacted]"],
    }


async def test_a_request_the_parser_refuses_is_one_info_line(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    server_log = logging.getLogger("aiohttp.server")
    server_log.addFilter(logs.CLIENT_MISTAKES)  # as logs.setup() does
    try:
        with caplog.at_level(logging.DEBUG):
            for raw in (
                b"GET /healthz HTTP/1.1\r\nHost: x\r\nX: a\x01b\r\n\r\n",
                b"GET /healthz\x01 HTTP/1.1\r\nHost: x\r\n\r\n",
                b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 TLS to a plain port\r\n\r\n",
            ):
                assert (await raw_request(client, raw)).startswith(b"HTTP/1.")
    finally:
        server_log.removeFilter(logs.CLIENT_MISTAKES)
    lines = [r for r in caplog.records if r.name == "aiohttp.server"]
    assert lines
    assert all(r.levelno <= logging.INFO and not r.exc_info for r in lines), [
        (r.levelname, r.getMessage()) for r in lines
    ]
    assert any("Invalid header value char" in r.getMessage() for r in lines)


@pytest.mark.parametrize("log_format", ["text", "json"])
async def test_inbox_serve_logs_no_credential(
    database_url: str, tmp_path: Path, log_format: str
) -> None:
    """The same session against `inbox serve` itself (its own logging set-up, aiohttp's
    loggers, DEBUG level), its whole log read afterwards."""
    log_path = tmp_path / "serve.log"
    settings = {
        "API_KEYS": KEY,
        "INBOX_SECRET": SECRET,
        "LOG_FORMAT": log_format,
        "LOG_LEVEL": "debug",
    }
    key = {"Authorization": f"Bearer {KEY}"}
    with (
        log_path.open("wb") as log_file,
        testbed.service(database_url, log_file, settings=settings, cwd=tmp_path) as process,
    ):
        async with aiohttp.ClientSession() as session:
            body = {"email": "bob@example.com", "phone_number": "212-555-1234"}
            async with session.post(f"{process.url}/object", json=body, headers=key) as response:
                created = await response.json()
            token, oid = created["inbox_token"], created["id"]
            async with session.ws_connect(
                f"{process.url}/inbox/{oid}", params={"token": token}
            ) as ws:
                async with session.post(
                    f"{process.url}/alert", json={"text": "hi", "object_ids": [oid]}, headers=key
                ) as response:
                    assert response.status == 200
                assert (await ws.receive_json(timeout=5))["text"] == "hi"
            async with session.get(
                f"{process.url}/object/{oid}", headers={"Authorization": f"Bearer {token}"}
            ) as response:
                assert response.status == 200
            async with session.get(
                f"{process.url}/object/{oid + 1}", params={"token": token}
            ) as response:
                assert response.status == 403
        host, port = process.url.removeprefix("http://").split(":")
        for raw in (
            f"GET /inbox/{oid}?token={token}\x01 HTTP/1.1\r\nHost: x\r\n\r\n",
            f"GET /object/{oid} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\x01\r\n\r\n",
        ):
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(raw.encode())
            assert (await asyncio.wait_for(reader.read(), 5)).startswith(b"HTTP/1.0 400")
            writer.close()
    lines = log_path.read_text()
    assert f"/inbox/{oid}?token=[redacted]" in lines  # the session was logged
    assert "Invalid char in url" in lines  # and aiohttp's own line about the bad request
    assert "Traceback" not in lines
    for secret in (token, KEY, token[:16], KEY[:16]):
        assert secret not in lines


def test_text_time_is_loggings_own_across_seconds() -> None:
    # The per-second cache must never show the previous second's text.
    formatter, plain = logs.TextFormatter(), logging.Formatter()
    for created in (1_700_000_000.001, 1_700_000_000.999, 1_700_000_001.0, 1_700_000_000.5):
        rec = record("at a time")
        rec.created, rec.msecs = created, (created - int(created)) * 1000
        assert formatter.formatTime(rec) == plain.formatTime(rec)


def test_new_request_ids_are_uuid4_hex() -> None:
    ids = {logs.new_request_id() for _ in range(200)}
    assert len(ids) == 200
    for request_id in ids:
        parsed = uuid.UUID(hex=request_id)
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122
        assert parsed.hex == request_id
