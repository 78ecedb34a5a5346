"""Request bodies: Content-Encoding accepted or refused, inflation bounded by MAX_BODY_BYTES and
done only for a route that reads a body, after access control; `Expect: 100-continue` answered
only then. The server is the one `inbox serve` runs (service/server.py), on a real socket."""

from __future__ import annotations

import asyncio
import gzip
import time
import zlib
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import asyncpg
import orjson
import pytest

from .served import Serve, serve

__all__ = ["serve"]  # the fixture

KEY = "bodies-key-0123456789abcdef0123456789"
OBJECT = orjson.dumps({"email": "bob@example.com", "phone_number": "212-555-1234"})
JSON = {"Content-Type": "application/json", "Authorization": f"Bearer {KEY}"}
Start = Callable[..., Awaitable[str]]


@pytest.fixture
async def start_url(serve: Serve) -> Start:
    """Start the service as `inbox serve` would; its base URL."""

    async def start(**overrides: str) -> str:
        return f"http://127.0.0.1:{(await serve(**overrides)).port}"

    return start


@pytest.fixture(scope="module")
def bomb() -> bytes:
    """128 MiB of zeros, gzipped to about 128 KiB (under MAX_BODY_BYTES as sent)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zeros = bytes(1 << 20)
    return b"".join([*(packer.compress(zeros) for _ in range(128)), packer.flush()])


async def objects(db: asyncpg.Connection) -> int:
    return int(await db.fetchval("SELECT count(*) FROM objects"))


async def post(url: str, body: bytes, **headers: str) -> tuple[int, dict[str, Any], Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=body, headers={**JSON, **headers}) as response,
    ):
        return response.status, dict(response.headers), await response.json()


async def test_gzip_and_deflate_bodies_are_read(start_url: Start, db: asyncpg.Connection) -> None:
    base = await start_url(API_KEYS=KEY)
    for coding, packed in (
        ("gzip", gzip.compress(OBJECT)),
        ("x-gzip", gzip.compress(OBJECT)),
        ("deflate", zlib.compress(OBJECT)),
        ("identity", OBJECT),
        ("GZIP", gzip.compress(OBJECT)),
    ):
        status, _, body = await post(f"{base}/object", packed, **{"Content-Encoding": coding})
        assert status == 200, (coding, body)
        assert body["phone_number"] == "+12125551234"
    assert await objects(db) == 5


@pytest.mark.parametrize("coding", ["zstd", "br", "compress", "gzip, gzip", "gzip;q=1", "*"])
async def test_other_encodings_are_415(
    start_url: Start, db: asyncpg.Connection, coding: str
) -> None:
    base = await start_url(API_KEYS=KEY)
    status, headers, body = await post(f"{base}/object", OBJECT, **{"Content-Encoding": coding})
    assert status == 415
    assert body["error"] == "unsupported_media_type"
    assert headers["Accept-Encoding"] == "gzip, deflate"
    assert await objects(db) == 0


@pytest.mark.parametrize(
    ("coding", "packed"),
    [
        ("gzip", b"this is not gzip at all"),
        ("gzip", gzip.compress(OBJECT)[:-9]),  # cut short
        ("gzip", gzip.compress(OBJECT) + b"trailing"),
        ("deflate", gzip.compress(OBJECT)),  # gzip framing sent as deflate
        ("deflate", zlib.compress(OBJECT)[:5]),
        ("gzip", b""),
    ],
)
async def test_a_malformed_compressed_body_is_400(
    start_url: Start, db: asyncpg.Connection, coding: str, packed: bytes
) -> None:
    base = await start_url(API_KEYS=KEY)
    status, _, body = await post(f"{base}/alert", packed, **{"Content-Encoding": coding})
    assert status == 400, body
    assert body["error"] == "malformed_request"
    assert set(body) == {"error", "message"}
    assert await objects(db) == 0


async def test_a_body_that_inflates_past_the_limit_is_413(start_url: Start) -> None:
    base = await start_url(API_KEYS=KEY, MAX_BODY_BYTES="1000")
    padded = orjson.dumps({"email": "bob@example.com", "phone_number": "212-555-1234" + " " * 990})
    status, _, body = await post(
        f"{base}/object", gzip.compress(padded), **{"Content-Encoding": "gzip"}
    )
    assert status == 413
    assert body["error"] == "payload_too_large"
    status, _, body = await post(
        f"{base}/object", gzip.compress(OBJECT), **{"Content-Encoding": "gzip"}
    )
    assert status == 200


async def cpu_of(work: Awaitable[Any]) -> tuple[float, Any]:
    started = time.process_time()
    result = await work
    return time.process_time() - started, result


async def test_a_gzip_bomb_costs_little_and_is_refused(start_url: Start, bomb: bytes) -> None:
    """The bomb is sent five times: to a route that reads bodies (with a key, without, with a
    wrong one), to an unknown route and to one that reads no body. All five together cost this
    process (client and server) less than half of what inflating the bomb once costs; aiohttp
    inflating each as it arrived cost five times that."""
    inflate_cost, size = await cpu_of(asyncio.to_thread(lambda: len(gzip.decompress(bomb))))
    assert size == 128 << 20
    base = await start_url(API_KEYS=KEY)
    gz = {"Content-Encoding": "gzip"}
    spent = 0.0
    for url, headers, status in (
        (f"{base}/object", {}, 413),  # read: inflated up to MAX_BODY_BYTES only
        (f"{base}/object", {"Authorization": "Bearer wrong"}, 403),  # refused before reading
        (f"{base}/alert", {"Authorization": ""}, 401),
        (f"{base}/nope", {}, 404),
    ):
        cost, answer = await cpu_of(post(url, bomb, **gz, **headers))
        assert answer[0] == status, (url, answer)
        assert answer[2]["error"]
        spent += cost
    async with aiohttp.ClientSession() as session:
        cost, _ = await cpu_of(session.get(f"{base}/healthz", data=bomb, headers=gz))
        spent += cost
    assert spent < inflate_cost / 2, (spent, inflate_cost)


async def exchange(base: str, head: bytes, body: bytes | None = None) -> tuple[bytes, bytes]:
    """Send a request head; what arrives before the body is sent; then all after it."""
    host, port = base.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(head)
        await writer.drain()
        try:
            first = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 1)
        except TimeoutError:
            first = b""
        rest = b""
        if body is not None:
            writer.write(body)
            await writer.drain()
            rest = await asyncio.wait_for(reader.read(65536), 5)
        return first, rest
    finally:
        writer.close()


def head(method: str, path: str, length: int, *extra: str) -> bytes:
    lines = [
        f"{method} {path} HTTP/1.1",
        "Host: x",
        "Content-Type: application/json",
        f"Content-Length: {length}",
        "Expect: 100-continue",
        *extra,
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def test_100_continue_only_once_the_route_accepts_the_caller(start_url: Start) -> None:
    base = await start_url(API_KEYS=KEY, MAX_BODY_BYTES="1000")
    key = f"Authorization: Bearer {KEY}"
    for request, status in (
        (head("POST", "/nope", len(OBJECT), key), b"404"),
        (head("DELETE", "/object", len(OBJECT), key), b"405"),
        (head("POST", "/object", len(OBJECT)), b"401"),
        (head("POST", "/object", len(OBJECT), "Authorization: Bearer wrong"), b"403"),
        (head("POST", "/object", 5000, key), b"413"),
        (head("POST", "/object", len(OBJECT), key, "Content-Encoding: zstd"), b"415"),
    ):
        first, _ = await exchange(base, request)
        assert first.startswith(b"HTTP/1.1 " + status), (request, first)
        assert b"100 Continue" not in first
    first, rest = await exchange(base, head("POST", "/object", len(OBJECT), key), OBJECT)
    assert first == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert rest.startswith(b"HTTP/1.1 200")
    # An expectation other than 100-continue is ignored (RFC 9110 allows it), not a plain 417.
    request = head("POST", "/object", len(OBJECT), key).replace(b"100-continue", b"wonders")
    first, rest = await exchange(base, request, OBJECT)
    assert (first + rest).startswith(b"HTTP/1.1 200")
