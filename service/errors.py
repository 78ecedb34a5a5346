"""Domain errors, raised below the handlers and turned into JSON error bodies by one middleware.

Every error body has one shape: {"error": <code>, "message": <text>} plus "fields" for
validation failures. `code` is stable and documented; `message` is for humans.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence


class ServiceError(Exception):
    """An error with an HTTP status and a stable machine-readable code."""

    status = 500
    code = "internal_error"
    headers: Mapping[str, str] = {}  # e.g. WWW-Authenticate on 401

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def body(self) -> dict[str, object]:
        return {"error": self.code, "message": self.message}


class MalformedRequest(ServiceError):
    status = 400
    code = "malformed_request"


class UnsupportedMediaType(ServiceError):
    status = 415
    code = "unsupported_media_type"


class ValidationFailed(ServiceError):
    status = 422
    code = "validation_failed"

    def __init__(self, fields: Mapping[str, Sequence[str] | Mapping[str, object]]) -> None:
        super().__init__("the request body did not pass validation")
        self.fields = fields

    def body(self) -> dict[str, object]:
        return {**super().body(), "fields": self.fields}


class NotAnAlertOfObject(ValidationFailed):
    """An ack names an alert that the object never received (or that does not exist)."""

    def __init__(self, alert_id: int, object_id: int) -> None:
        super().__init__({"alert_id": [f"Alert {alert_id} is not an alert of object {object_id}."]})


class NotFound(ServiceError):
    status = 404
    code = "not_found"


class DatabaseUnavailable(ServiceError):
    status = 503
    code = "database_unavailable"


class Unauthorized(ServiceError):
    status = 401
    code = "unauthorized"

    def __init__(self, message: str, *, realm: str = "inbox") -> None:
        super().__init__(message)
        self.headers = {"WWW-Authenticate": f'Bearer realm="{realm}"'}


class Forbidden(ServiceError):
    status = 403
    code = "forbidden"


class IdempotencyKeyReused(ServiceError):
    status = 422
    code = "idempotency_key_reused"


class TooManySocketsForObject(ServiceError):
    """The client's own doing (too many tabs or a reconnect loop): it may retry later."""

    status = 429
    code = "too_many_sockets"


class TooManySockets(ServiceError):
    """This process is full: another process (or a later retry) can take the socket."""

    status = 503
    code = "server_busy"
