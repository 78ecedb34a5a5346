"""Access control: which credential each route needs, API keys, inbox tokens, browser Origins.

All of it is off until configured, which suits the embedded database on a laptop; start-up
then says so with a WARNING (`warn_if_open`). Two settings switch it on, each on its own or
together:

- API_KEYS: the operator's credential, sent as `Authorization: Bearer <key>` (never in a URL)
  and compared in constant time against every configured key. A key opens every route.
- INBOX_SECRET: an object's inbox token is HMAC-SHA256(secret, object id), url-safe base64.
  A token opens what belongs to that one object: its routes (`/object/{object_id}`,
  `/inbox/{object_id}` and any other route with `{object_id}` in its path) and the alerts
  addressed to it (`GET /alert/{id}?object_id=N`, shown without the other recipients). It
  travels as `Authorization: Bearer <token>` or, where a client cannot set headers (WebSocket,
  EventSource), as `?token=`. Tokens of INBOX_SECRET_PREVIOUS still count, so the secret can
  be rotated.

Which routes need what (`access_control`, decided after routing and before the handler, so an
unknown path is 404 and a body is never read for a caller who will be refused):

- `OPEN`: liveness, readiness, the OpenAPI document and the console page.
- `API_KEY` (the default): writes, /metrics; needs a key when API_KEYS is set.
- `OBJECT` (every route with `{object_id}` in its path unless declared otherwise): a key or
  that object's token, once either setting is set.
- `ALERT`: a key, or the token of a recipient named with `?object_id=`; the handler reads the
  scope with `alert_scope`.

No credential is 401 (with `WWW-Authenticate`); one that does not open the route (a wrong
key, a wrong token, another object's token) is 403. Both are decided from the credential alone,
before anything is looked up, so an id that does not exist answers exactly like one the caller
may not see.

ALLOWED_ORIGINS: a WebSocket request whose Origin header is not listed gets 403.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from .config import Config
from .errors import Forbidden, Unauthorized
from .keys import config_key
from .schemas import parse_id

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Access(enum.Enum):
    """What a route needs (see the module docstring)."""

    OPEN = "open"
    API_KEY = "api_key"
    OBJECT = "object"
    ALERT = "alert"


def _bytes(text: str) -> bytes:
    # Header values may carry undecodable bytes as surrogate escapes; they must not raise.
    return text.encode("utf-8", "surrogateescape")


def _same(presented: str, expected: str) -> bool:
    """Constant-time equality that does not leak the expected length either (both sides are
    hashed to 32 bytes first)."""
    return hmac.compare_digest(
        hashlib.sha256(_bytes(presented)).digest(), hashlib.sha256(_bytes(expected)).digest()
    )


def access_is_on(config: Config) -> bool:
    return bool(config.api_keys or config.inbox_secret)


# -- API keys ---------------------------------------------------------------------------------


def bearer_token(request: web.Request) -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def query_token(request: web.Request) -> str | None:
    return request.query.get("token") or None


def _is_api_key(config: Config, presented: str | None) -> bool:
    if presented is None or not config.api_keys:
        return False
    # Every key is compared, so the time taken does not tell which one came close.
    matches = [_same(presented, key) for key in sorted(config.api_keys)]
    return any(matches)


def require_api_key(request: web.Request) -> None:
    """401 without a key, 403 with a wrong one (when API_KEYS is set)."""
    config = request.app[config_key]
    if not config.api_keys:
        return
    presented = bearer_token(request)
    if presented is None:
        if query_token(request) is not None:
            raise Forbidden("this route needs an API key; an inbox token does not open it")
        raise Unauthorized("send a valid API key as 'Authorization: Bearer <key>'")
    if not _is_api_key(config, presented):
        raise Forbidden("the API key is not valid")


# -- inbox tokens -----------------------------------------------------------------------------


def inbox_token(secret: str, object_id: int) -> str:
    digest = hmac.new(_bytes(secret), str(object_id).encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def token_for(config: Config, object_id: int) -> str | None:
    """The token that opens this object's routes, or None when there are no tokens."""
    return inbox_token(config.inbox_secret, object_id) if config.inbox_secret else None


def _is_token_of(config: Config, presented: str, object_id: int | None) -> bool:
    if object_id is None or not config.inbox_secret:
        return False
    secrets = [s for s in (config.inbox_secret, config.inbox_secret_previous) if s]
    matches = [_same(presented, inbox_token(s, object_id)) for s in secrets]
    return any(matches)


def _presented(request: web.Request) -> list[str]:
    return [t for t in (bearer_token(request), query_token(request)) if t is not None]


def _key_or_token_of(request: web.Request, object_id: int | None) -> bool:
    """True when the request carries an API key or `object_id`'s token; 401 when it carries
    no credential at all."""
    config = request.app[config_key]
    presented = _presented(request)
    if not presented:
        what = "an API key" if config.api_keys else "the object's inbox token"
        if config.api_keys and config.inbox_secret:
            what = "an API key or the object's inbox token"
        raise Unauthorized(f"send {what} as 'Authorization: Bearer <credential>'")
    if _is_api_key(config, bearer_token(request)):
        return True
    matches = [_is_token_of(config, value, object_id) for value in presented]
    return any(matches)


def check_object_access(request: web.Request, object_id: int | str) -> None:
    """Pass when the request may see what belongs to `object_id`: it carries an API key or
    that object's inbox token (or access control is off). Else 401 (no credential) or 403.

    `object_id` may be the raw path segment: one that is not a valid id matches no token.
    """
    config = request.app[config_key]
    if not access_is_on(config):
        return
    wanted = object_id if isinstance(object_id, int) else parse_id(object_id)
    if not _key_or_token_of(request, wanted):
        raise Forbidden("the credential does not open this object")


def check_inbox_token(request: web.Request, object_id: int) -> None:
    """The inbox handler's check (kept for it; the middleware has already made the same)."""
    check_object_access(request, object_id)


def alert_scope(request: web.Request) -> int | None:
    """Whose view of an alert the caller gets: None for all of it (an API key, or access
    control off), else the id of the recipient whose token it presented with `?object_id=`.
    """
    config = request.app[config_key]
    if not access_is_on(config):
        return None
    scope = parse_id(request.query.get("object_id", ""))
    if not _key_or_token_of(request, scope):
        raise Forbidden(
            "send an API key, or a recipient's inbox token with ?object_id=<that recipient>"
        )
    if _is_api_key(config, bearer_token(request)):
        return None
    return scope


# -- which route needs what -------------------------------------------------------------------


# Routes that do not need a key, by resource (HEAD shares GET's). Every other route needs an
# API key, except those with `{object_id}` in their path, which an object's token also opens.
ROUTE_ACCESS: dict[str, Access] = {
    "/healthz": Access.OPEN,
    "/readyz": Access.OPEN,
    "/openapi.json": Access.OPEN,
    "/": Access.OPEN,
    "/static/{filename}": Access.OPEN,
    "/alert/{alert_id}": Access.ALERT,
}


def access_of(path: str) -> Access:
    """What the route registered as `path` (its canonical form) needs."""
    declared = ROUTE_ACCESS.get(path)
    if declared is not None:
        return declared
    return Access.OBJECT if "{object_id}" in path else Access.API_KEY


@web.middleware
def access_control(request: web.Request, handler: Handler) -> Awaitable[web.StreamResponse]:
    """Refuse a caller without the credential its route needs, before the handler runs (and so
    before any body byte is read). An unknown path or method is answered 404/405 first.

    A plain function that hands back the handler's awaitable: it has nothing to do after the
    handler, so no coroutine of its own stays suspended for the life of a long request (an
    inbox socket)."""
    if request.match_info.http_exception is None:
        resource = request.match_info.route.resource
        access = access_of(resource.canonical) if resource is not None else Access.API_KEY
        if access is Access.API_KEY:
            require_api_key(request)
        elif access is Access.OBJECT:
            check_object_access(request, request.match_info.get("object_id", ""))
        elif access is Access.ALERT:
            alert_scope(request)
    return handler(request)


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
    if not access_is_on(config):
        log.warning(
            "INBOX_SECRET is not set: anyone who can reach this server can read every inbox"
        )
    elif not config.inbox_secret:
        log.warning(
            "INBOX_SECRET is not set: objects, inboxes and alerts need an API key (there are "
            "no inbox tokens, and a browser cannot send a key on a WebSocket)"
        )
