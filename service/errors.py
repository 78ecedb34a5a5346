"""Domain errors, raised below the handlers and turned into JSON error bodies by one middleware.

Every error body has one shape: {"error": <code>, "message": <text>} plus "fields" for
validation failures. `code` is stable and documented; `message` is for humans.

This is the one home of the error codes: each class declares its status, its code and what it
means to a client once; the JSON-error middleware, aiohttp's own HTTP errors (`for_status`) and
the OpenAPI document (`documented`) read them from here.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence


class ServiceError(Exception):
    """An error with an HTTP status and a stable machine-readable code."""

    status = 500
    code = "internal_error"
    meaning = "an unexpected error; the service logged it"
    headers: Mapping[str, str] = {}  # e.g. WWW-Authenticate on 401

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def body(self) -> dict[str, object]:
        return {"error": self.code, "message": self.message}


class MalformedRequest(ServiceError):
    status = 400
    code = "malformed_request"
    meaning = (
        "the body is not JSON or not a JSON object, or not valid for its Content-Encoding; or "
        "the request could not be read as HTTP at all (the connection is closed)"
    )


class UnsupportedMediaType(ServiceError):
    status = 415
    code = "unsupported_media_type"
    meaning = (
        "the body is not application/json, or its Content-Encoding is not gzip, deflate or identity"
    )

    def __init__(self, message: str, *, accept_encoding: str | None = None) -> None:
        super().__init__(message)
        if accept_encoding is not None:  # RFC 7694: say which content codings would do
            self.headers = {"Accept-Encoding": accept_encoding}


class RequestTimeout(ServiceError):
    """The body did not arrive in time (a client trickling it); the connection is closed."""

    status = 408
    code = "request_timeout"
    meaning = "the body did not arrive within HTTP_BODY_TIMEOUT; the connection is closed"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.headers = {"Connection": "close"}


class ValidationFailed(ServiceError):
    status = 422
    code = "validation_failed"
    meaning = "see `fields` for each failing field's messages"

    def __init__(self, fields: Mapping[str, Sequence[str] | Mapping[str, object]]) -> None:
        super().__init__("the request body did not pass validation")
        self.fields = fields

    def body(self) -> dict[str, object]:
        return {**super().body(), "fields": self.fields}


class NotAnAlertOfObject(ValidationFailed):
    """An ack names an alert that the object never received (or that does not exist)."""

    meaning = "an ack's `alert_id` is not an alert of that object (`fields.alert_id`)"

    def __init__(self, alert_id: int, object_id: int) -> None:
        super().__init__({"alert_id": [f"Alert {alert_id} is not an alert of object {object_id}."]})


class MethodNotAllowed(ServiceError):
    """Raised by aiohttp's router; declared here for its code and meaning."""

    status = 405
    code = "method_not_allowed"
    meaning = "the route exists, the method does not"


class PayloadTooLarge(ServiceError):
    """Raised by body.py, or by aiohttp when a body is over `client_max_size`."""

    status = 413
    code = "payload_too_large"
    meaning = "the body, as sent or as it inflates, is over MAX_BODY_BYTES"


class NotFound(ServiceError):
    status = 404
    code = "not_found"
    meaning = "no such object, alert or route"


class DatabaseUnavailable(ServiceError):
    """The database cannot be reached (or did not answer in time): not this process's load."""

    status = 503
    code = "database_unavailable"
    meaning = "the database cannot be reached (or did not answer within DB_TIMEOUT); retry"


class ServerBusy(ServiceError):
    """This process refuses more work now (admission control, a full pool); retry shortly."""

    status = 503
    code = "server_busy"
    meaning = (
        "the process has WRITES_IN_FLIGHT writes in flight, or no pooled connection came free "
        "within DB_TIMEOUT while the database answers; retry after Retry-After seconds"
    )
    RETRY_AFTER = 1  # seconds: long enough for the writes in flight to drain

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.headers = {"Retry-After": str(self.RETRY_AFTER)}


class Unauthorized(ServiceError):
    status = 401
    code = "unauthorized"
    meaning = "no credential was sent (see the route's security)"

    def __init__(self, message: str, *, realm: str = "inbox") -> None:
        super().__init__(message)
        self.headers = {"WWW-Authenticate": f'Bearer realm="{realm}"'}


class Forbidden(ServiceError):
    status = 403
    code = "forbidden"
    meaning = (
        "the credential does not open this route (a wrong key, a wrong token, another "
        "object's token)"
    )


class IdempotencyKeyReused(ServiceError):
    status = 422
    code = "idempotency_key_reused"
    meaning = "this Idempotency-Key was used with another body"


class TooManySocketsForObject(ServiceError):
    """The client's own doing (too many tabs or a reconnect loop): it may retry later."""

    status = 429
    code = "too_many_sockets"
    meaning = "the object has WS_MAX_PER_OBJECT sockets"


class TooManySockets(ServiceError):
    """This process is full: another process (or a later retry) can take the socket."""

    status = 503
    code = "server_busy"
    meaning = "the process has WS_MAX_PER_PROCESS sockets"


def documented() -> Iterator[type[ServiceError]]:
    """Every error class a client can receive (the 500 of the base class aside), for the
    OpenAPI document."""
    pending = list(ServiceError.__subclasses__())
    while pending:
        cls = pending.pop(0)
        pending.extend(cls.__subclasses__())
        yield cls


# aiohttp raises its own HTTP errors (bad request line, no route, wrong method, body too big):
# the middleware answers them with these codes.
_AIOHTTP_ERRORS = (MalformedRequest, NotFound, MethodNotAllowed, PayloadTooLarge)
BY_AIOHTTP_STATUS: Mapping[int, type[ServiceError]] = {cls.status: cls for cls in _AIOHTTP_ERRORS}
