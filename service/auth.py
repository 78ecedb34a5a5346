"""Access control: API keys for writes, inbox tokens for sockets, the Origin of browser sockets.

All of it is off until configured, which suits the embedded database on a laptop; start-up
then says so with a WARNING (`warn_if_open`).
- API_KEYS: every POST carries `Authorization: Bearer <key>`, compared in constant time
  against each configured key; otherwise 401 with `WWW-Authenticate`.
- INBOX_SECRET: an object's inbox token is HMAC-SHA256(secret, object id), url-safe base64.
  `/inbox/{id}?token=...` is refused before the upgrade when it is missing (401) or wrong (403).
  Tokens of INBOX_SECRET_PREVIOUS are still accepted, so the secret can be rotated.
- ALLOWED_ORIGINS: a WebSocket request whose Origin header is not listed gets 403.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from .config import Config
from .errors import Forbidden, Unauthorized
from .keys import config_key

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _bytes(text: str) -> bytes:
    # Header values may carry undecodable bytes as surrogate escapes; they must not raise.
    return text.encode("utf-8", "surrogateescape")


def _same(presented: str, expected: str) -> bool:
    """Constant-time equality that does not leak the expected length either (both sides are
    hashed to 32 bytes first)."""
    return hmac.compare_digest(
        hashlib.sha256(_bytes(presented)).digest(), hashlib.sha256(_bytes(expected)).digest()
    )


# -- API keys ---------------------------------------------------------------------------------


def bearer_token(request: web.Request) -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def has_valid_api_key(request: web.Request) -> bool:
    """True when the request carries one of API_KEYS, or when none are configured."""
    keys = request.app[config_key].api_keys
    if not keys:
        return True
    token = bearer_token(request)
    if token is None:
        return False
    # Every key is compared, so the time taken does not tell which one came close.
    matches = [_same(token, key) for key in sorted(keys)]
    return any(matches)


@web.middleware
async def require_api_key(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Writes need a key (when API_KEYS is set); reads and inboxes have their own rules."""
    if request.method == "POST" and not has_valid_api_key(request):
        raise Unauthorized("send a valid API key as 'Authorization: Bearer <key>'")
    return await handler(request)


# -- inbox tokens -----------------------------------------------------------------------------


def inbox_token(secret: str, object_id: int) -> str:
    digest = hmac.new(_bytes(secret), str(object_id).encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def token_for(config: Config, object_id: int) -> str | None:
    """The token a client needs for this object's inbox, or None when inboxes are open."""
    return inbox_token(config.inbox_secret, object_id) if config.inbox_secret else None


def check_inbox_token(request: web.Request, object_id: int) -> None:
    config = request.app[config_key]
    if not config.inbox_secret:
        return
    token = request.query.get("token")
    if not token:
        raise Unauthorized("this inbox needs ?token=<inbox_token of the object>")
    secrets = [s for s in (config.inbox_secret, config.inbox_secret_previous) if s]
    matches = [_same(token, inbox_token(s, object_id)) for s in secrets]
    if not any(matches):
        raise Forbidden("the token does not open this inbox")


# -- origins ----------------------------------------------------------------------------------


def _origin(value: str) -> str:
    return value.strip().rstrip("/").lower()


def check_origin(request: web.Request) -> None:
    """Browsers always send Origin on a WebSocket request; other clients usually do not."""
    allowed = request.app[config_key].allowed_origins
    origin = request.headers.get("Origin")
    if not allowed or origin is None:
        return
    if _origin(origin) not in {_origin(o) for o in allowed}:
        raise Forbidden(f"origin {origin!r} may not open inbox sockets")


# -- start-up ---------------------------------------------------------------------------------


def warn_if_open(config: Config) -> None:
    if not config.api_keys:
        log.warning(
            "API_KEYS is not set: anyone who can reach this server can POST objects and alerts"
        )
    if not config.inbox_secret:
        log.warning(
            "INBOX_SECRET is not set: anyone who can reach this server can read every inbox"
        )
