"""Safe retries: `Idempotency-Key` on POST /object and POST /alert.

A request with a key is hashed (canonical JSON of the validated, normalised request, so a retry
that spells a default out, or writes the same email differently, is the same request) and
claimed in `idempotency_keys` inside the transaction that writes the object or alert; the
response is stored in the same transaction. So a retry, or a request racing the first with the
same key, gets the first response byte for byte and creates nothing; a crash before COMMIT
leaves no claim and no row.
The same key with a different body is refused (422 `idempotency_key_reused`).
Keys belong to the route and to the credential that sent them: with API_KEYS set, the claim's
`route` column also carries the SHA-256 of the caller's API key (never the key), so two API
keys never see each other's responses. Keys expire
after IDEMPOTENCY_TTL seconds; expired ones are re-claimed, and purged now and then.

The price of a key: its alert holds the id lock (migration 0002) for two more round trips
(storing the response, COMMIT) than an alert without one, which is a single statement.
"""

from __future__ import annotations

import hashlib
import logging
import random
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import orjson
from aiohttp import web

from . import auth
from .db import (
    Connection,
    Database,
    claim_idempotency_key,
    get_idempotency_key,
    store_idempotent_response,
)
from .errors import IdempotencyKeyReused, MalformedRequest
from .keys import config_key

log = logging.getLogger(__name__)

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
MAX_KEY_LENGTH = 255
PURGE_PROBABILITY = 0.01  # of a keyed request also deleting expired keys, after its commit

Write = Callable[[Connection], Awaitable[Mapping[str, Any]]]


def request_key(request: web.Request) -> str | None:
    """The header's value, or None; a key that cannot be one is a malformed request."""
    key = request.headers.get(HEADER)
    if key is None:
        return None
    if not 1 <= len(key) <= MAX_KEY_LENGTH or not key.isascii() or not key.isprintable():
        raise MalformedRequest(f"{HEADER} must be 1 to {MAX_KEY_LENGTH} printable ASCII characters")
    return key


def request_hash(data: Mapping[str, Any]) -> bytes:
    """Equal for the same validated request, whatever its key order, spacing or spelling."""
    return hashlib.sha256(orjson.dumps(data, option=orjson.OPT_SORT_KEYS)).digest()


def scope(request: web.Request) -> str:
    """Where the key lives: the route, and the caller's API key (hashed) when keys are on."""
    route = f"{request.method} {request.path}"
    if not request.app[config_key].api_keys:
        return route
    # The middleware has checked the key; its digest, not the key, is stored.
    token = auth.bearer_token(request) or ""
    credential = hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()
    return f"{route} key:{credential}"


def _response(body: bytes | str, status: int = 200) -> web.Response:
    return web.Response(body=body, status=status, content_type="application/json")


async def respond_once(
    request: web.Request,
    db: Database,
    ttl: int,
    data: Mapping[str, Any],
    write: Write,
) -> web.Response:
    """Run `write` in a transaction, once per idempotency key, and answer with its JSON.

    `data` is the request as validated and normalised (what `write` will store).
    """
    key = request_key(request)
    if key is None:
        # One statement, its own transaction: the alert id lock is never held across a round
        # trip (see Database.connection).
        async with db.connection() as conn:
            result = await write(conn)
        return _response(orjson.dumps(result))
    route = scope(request)
    digest = request_hash(data)
    async with db.transaction() as conn:
        # Waits here while another transaction holds a claim on the same key.
        if not await claim_idempotency_key(conn, key, route, digest, ttl):
            stored = await get_idempotency_key(conn, key, route)
            # The claim is live and committed (a rolled-back claim would have been taken over).
            assert stored is not None
            assert stored.status is not None
            assert stored.response is not None
            if stored.request_hash != digest:
                raise IdempotencyKeyReused(
                    f"{HEADER} {key!r} was used for a different request body; use a new key"
                )
            response = _response(stored.response, stored.status)
            response.headers[REPLAYED_HEADER] = "true"
            return response
        payload = orjson.dumps(await write(conn))
        await store_idempotent_response(conn, key, route, 200, payload.decode())
    if random.random() < PURGE_PROBABILITY:
        await purge(db, ttl)
    return _response(payload)


async def purge(db: Database, ttl: int) -> None:
    """Delete expired keys; best effort, the request it rides on has already succeeded."""
    try:
        await db.purge_idempotency_keys(ttl)
    except Exception as exc:  # never fail a committed request over housekeeping
        log.warning("purging idempotency keys failed: %s: %s", type(exc).__name__, exc)
