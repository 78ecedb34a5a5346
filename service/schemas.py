"""Request validation and normalisation at the edge (marshmallow), and response shapes.

Loading a body either returns plain, normalised values for the db layer or raises
`ValidationFailed` with one message list per field. Unknown fields are refused.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

import phonenumbers
from email_validator import EmailNotValidError, validate_email
from marshmallow import (
    RAISE,
    Schema,
    ValidationError,
    fields,
    post_load,
    pre_load,
    validate,
    validates_schema,
)

from .config import Config
from .errors import ValidationFailed

MAX_ID = 2**63 - 1  # ids are PostgreSQL bigint
SchemaT = TypeVar("SchemaT", bound=Schema)


def parse_id(raw: str) -> int | None:
    """An id written in a path or query (ASCII digits, 1 to MAX_ID), or None."""
    # The length check first: int() refuses strings of more than 4300 digits with ValueError.
    if not raw.isascii() or not raw.isdigit() or len(raw) > 19 or not 1 <= int(raw) <= MAX_ID:
        return None
    return int(raw)


class StrictBoolean(fields.Boolean):
    """Only JSON true/false: "yes", 1 and friends are type errors, not booleans."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> bool:
        if not isinstance(value, bool):
            raise self.make_error("invalid")
        return value


class Text(fields.String):
    """A string PostgreSQL can store: NUL is the one character `text` refuses."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        result: str = super()._deserialize(value, attr, data, **kwargs)
        if "\x00" in result:
            raise ValidationError("Must not contain NUL characters.")
        return result


class IdList(fields.List[int]):
    """A list of object ids. A list of plain ints in range, the usual body, is taken as it is;
    anything else goes through marshmallow item by item, for its very errors."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(object_id_field(), **kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> list[Any]:
        # `type(i) is int` leaves bools (and int subclasses) to marshmallow, which refuses them.
        if type(value) is list and all(type(i) is int and 1 <= i <= MAX_ID for i in value):
            return list(value)
        result: list[Any] = super()._deserialize(value, attr, data, **kwargs)
        return result


def object_id_field(**kwargs: Any) -> fields.Integer:
    return fields.Integer(
        strict=True,
        validate=validate.Range(min=1, max=MAX_ID, error="Must be an id between 1 and 2^63-1."),
        **kwargs,
    )


class ObjectCreate(Schema):
    class Meta:
        unknown = RAISE

    email = Text(required=True, validate=validate.Length(max=320))
    phone_number = Text(required=True, validate=validate.Length(max=64))

    @post_load
    def normalise(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        config: Config = self.context_config
        errors: dict[str, list[str]] = {}
        try:
            email = validate_email(
                data["email"], check_deliverability=config.email_check_deliverability
            ).normalized
        except EmailNotValidError as exc:
            errors["email"] = [str(exc)]
        try:
            number = phonenumbers.parse(data["phone_number"], config.phone_default_region)
            if not phonenumbers.is_valid_number(number):
                raise ValueError("Not a valid phone number.")
            if number.extension:
                # E.164, the stored form, has no extension; dropping it would store another
                # number than the one given.
                raise ValueError("Extensions are not supported: send the number without one.")
            phone = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
        except (phonenumbers.NumberParseException, ValueError) as exc:
            errors["phone_number"] = [
                str(exc) if isinstance(exc, ValueError) else f"Not a phone number: {exc}."
            ]
        if errors:
            raise ValidationError(errors)
        return {"email": email, "phone_number": phone}

    def __init__(self, config: Config) -> None:
        super().__init__()
        self.context_config = config


PLAIN_ALERT_FIELDS = frozenset({"text", "object_ids", "alert_all"})


class AlertCreate(Schema):
    class Meta:
        unknown = RAISE

    text = Text(required=True)
    object_ids = IdList(load_default=None, allow_none=True)
    alert_all = StrictBoolean(load_default=False)

    def __init__(self, config: Config) -> None:
        super().__init__()
        # A new list: the field is a shallow copy whose `validators` list is shared by every
        # instance, so appending would pile up one more validator per request, process-wide.
        text = self.fields["text"]
        text.validators = [
            *text.validators,
            validate.Length(min=1, max=config.alert_text_max_length),
        ]
        self.max_ids = config.alert_max_object_ids
        self.max_text_length = config.alert_text_max_length
        # The fast path below is exactly these fields with these checks; a field or validator
        # added here leaves it (see load_plain).
        self._plain = len(text.validators) == 1 and set(self.fields) == PLAIN_ALERT_FIELDS

    def load_plain(self, body: Mapping[str, Any]) -> dict[str, Any] | None:
        """What `load` returns for the usual body (text, a list of ids in range, alert_all
        absent or false), checked without marshmallow's machinery; None for any other body,
        which then takes the full path with its errors. tests/test_schema_instances.py checks
        that both agree."""
        if not self._plain or type(body) is not dict or not body.keys() <= PLAIN_ALERT_FIELDS:
            return None
        text, ids = body.get("text"), body.get("object_ids")
        if (
            type(text) is not str
            or not 1 <= len(text) <= self.max_text_length
            or "\x00" in text
            or body.get("alert_all", False) is not False
            or type(ids) is not list
            or len(ids) > self.max_ids
            or not all(type(i) is int and 1 <= i <= MAX_ID for i in ids)
        ):
            return None
        return {"text": text, "object_ids": sorted(set(ids)), "alert_all": False}

    @pre_load
    def bound_the_list(self, data: Any, **_: Any) -> Any:
        # Before each item is validated: a body full of bad items would otherwise cost a second
        # of CPU and answer with an error list eight times the size of the request.
        ids = data.get("object_ids") if isinstance(data, dict) else None
        if isinstance(ids, list) and len(ids) > self.max_ids:
            raise ValidationError(f"At most {self.max_ids} ids.", "object_ids")
        return data

    @validates_schema
    def recipients(self, data: dict[str, Any], **_: Any) -> None:
        ids = data.get("object_ids")
        if ids is not None and len(ids) > self.max_ids:
            raise ValidationError(f"At most {self.max_ids} ids.", "object_ids")
        if not data.get("alert_all") and ids is None:
            raise ValidationError("Required unless alert_all is true.", "object_ids")
        if data.get("alert_all") and ids:
            raise ValidationError("Must be empty or absent when alert_all is true.", "object_ids")

    @post_load
    def dedupe(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        if data["alert_all"]:
            data["object_ids"] = None
        else:
            data["object_ids"] = sorted(set(data["object_ids"]))
        return data


class AckCreate(Schema):
    """POST /object/{id}/ack: the id of the newest alert read."""

    class Meta:
        unknown = RAISE

    alert_id = fields.Integer(
        strict=True,
        required=True,
        validate=validate.Range(min=1, max=MAX_ID, error="Must be an id between 1 and 2^63-1."),
        metadata={"description": "an alert of this object; every alert up to it is read"},
    )


ACK_SCHEMA = AckCreate()


class ClientAck(Schema):
    """`{"ack": N}`, sent by a client on its inbox WebSocket: the same as POST .../ack."""

    class Meta:
        unknown = RAISE

    ack = fields.Integer(
        strict=True,
        required=True,
        validate=validate.Range(min=1, max=MAX_ID, error="Must be an id between 1 and 2^63-1."),
    )


CLIENT_ACK_SCHEMA = ClientAck()


class PerConfig(Generic[SchemaT]):
    """One schema instance per configuration: building one per request is wasted work. The
    configuration last asked for is checked by identity first, since hashing a Config (all
    its fields) on every request costs more than the lookup it serves."""

    def __init__(self, build: Callable[[Config], SchemaT]) -> None:
        self._build = functools.cache(build)
        self._last: tuple[Config, SchemaT] | None = None

    def __call__(self, config: Config) -> SchemaT:
        last = self._last
        if last is not None and last[0] is config:
            return last[1]
        schema = self._build(config)
        self._last = (config, schema)
        return schema


object_schema = PerConfig(ObjectCreate)
alert_schema = PerConfig(AlertCreate)


def load(schema: Schema, body: Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(schema, AlertCreate):
        plain = schema.load_plain(body)
        if plain is not None:
            return plain
    _refuse_many_unknown_fields(schema, body)
    try:
        result: dict[str, Any] = schema.load(body)
    except ValidationError as exc:
        messages = exc.messages if isinstance(exc.messages, dict) else {"_schema": exc.messages}
        messages = {name: _first_items(errors) for name, errors in messages.items()}
        raise ValidationFailed(messages) from None
    return result


MAX_ITEM_ERRORS = 20


MAX_FIELD_NAME_SHOWN = 64


def _refuse_many_unknown_fields(schema: Schema, body: Mapping[str, Any]) -> None:
    """More unknown fields than MAX_ITEM_ERRORS: refused before marshmallow reads them, with
    the first few named (each name cut short), as list-item errors are. 75,000 unknown fields
    once made a 2 MB error body."""
    unknown = [name for name in body if name not in schema.fields]
    if len(unknown) <= MAX_ITEM_ERRORS:
        return
    fields: dict[str, list[str]] = {
        _shown(name): ["Unknown field."] for name in unknown[:MAX_ITEM_ERRORS]
    }
    fields["_schema"] = [f"{len(unknown)} unknown fields; the first {MAX_ITEM_ERRORS} are listed."]
    raise ValidationFailed(fields)


def _shown(name: str) -> str:
    return name if len(name) <= MAX_FIELD_NAME_SHOWN else name[:MAX_FIELD_NAME_SHOWN] + "..."


def _first_items(errors: Any) -> Any:
    """Errors of list items ({index: messages}) are cut to the first few: enough to act on."""
    if isinstance(errors, dict) and len(errors) > MAX_ITEM_ERRORS:
        return dict(list(errors.items())[:MAX_ITEM_ERRORS])
    return errors


# -- responses ------------------------------------------------------------------------------


def timestamp(value: datetime) -> str:
    """UTC with six fractional digits, the same text alert_frame() builds in PostgreSQL."""
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def dump_object(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "email": row["email"],
        "phone_number": row["phone_number"],
        "created_at": timestamp(row["created_at"]),
        # Absent from a row just inserted: a new object has read nothing and has nothing to read.
        "acked_alert_id": row.get("acked_alert_id", 0),
        "unread": row.get("unread", 0),
    }


def dump_alert(row: Mapping[str, Any]) -> dict[str, Any]:
    body = {
        "id": row["id"],
        "text": row["text"],
        "alert_all": row["alert_all"],
        "number_of_objects_receiving_alert": row["number_of_objects_receiving_alert"],
        "created_at": timestamp(row["created_at"]),
    }
    if not row["alert_all"]:
        body["object_ids"] = list(row["object_ids"])
    return body


# -- response shapes, for the OpenAPI document (the dump_* functions above build the bodies) --


class ObjectOut(Schema):
    id = fields.Integer(required=True)
    email = fields.String(required=True, metadata={"description": "normalised by email-validator"})
    phone_number = fields.String(required=True, metadata={"description": "E.164"})
    created_at = fields.DateTime(required=True)
    acked_alert_id = fields.Integer(
        required=True,
        metadata={"description": "the read cursor: every alert up to this id is read (0: none)"},
    )
    unread = fields.Integer(
        required=True, metadata={"description": "alerts of the object after the read cursor"}
    )
    inbox_token = fields.String(
        metadata={
            "description": "opens /inbox/{id}?token=; present when INBOX_SECRET is set (and, "
            "with API_KEYS, only for a caller with a valid key)"
        }
    )


class AlertFrame(Schema):
    """One alert as an inbox WebSocket sends it: one JSON text frame per alert."""

    id = fields.Integer(required=True, metadata={"description": "grows in commit order"})
    text = fields.String(required=True)
    alert_all = fields.Boolean(required=True)
    number_of_objects_receiving_alert = fields.Integer(required=True)
    created_at = fields.DateTime(required=True)


class AlertOut(AlertFrame):
    object_ids = fields.List(
        fields.Integer(),
        metadata={"description": "the existing recipients, ascending; absent when alert_all"},
    )


class Error(Schema):
    """The one shape of every error answer."""

    error = fields.String(required=True, metadata={"description": "stable machine-readable code"})
    message = fields.String(required=True, metadata={"description": "for humans"})
    fields_ = fields.Dict(
        data_key="fields",
        keys=fields.String(),
        metadata={"description": "validation_failed only: the messages of each failing field"},
    )


class Health(Schema):
    status = fields.String(required=True, metadata={"example": "ok"})
    tasks = fields.Integer(required=True, metadata={"description": "asyncio tasks in the process"})
    sockets = fields.Integer(required=True, metadata={"description": "open inbox sockets"})


class Ready(Schema):
    status = fields.String(required=True, metadata={"description": "ready or unavailable"})
    reasons = fields.List(fields.String(), metadata={"description": "why it is not ready"})


class HistoryPage(Schema):
    """GET /object/{id}/alerts: one page of an object's alerts, oldest first."""

    alerts = fields.List(
        fields.Nested(AlertFrame),
        required=True,
        metadata={"description": "the same frames, byte for byte, as the inbox socket sends"},
    )
    next_after = fields.Integer(
        required=True,
        metadata={
            "description": "the `after` of the next page: the last id on this one (or this "
            "page's `after` when it is empty); poll with it later for what is new"
        },
    )
    has_more = fields.Boolean(
        required=True,
        metadata={"description": "true when a next page exists now (then `Link: rel=next`)"},
    )


class AckOut(Schema):
    """The read cursor after an ack; also what open inboxes are told (without object_id)."""

    object_id = fields.Integer(required=True)
    acked_alert_id = fields.Integer(
        required=True, metadata={"description": "the cursor as it stands (never lower than before)"}
    )
    unread = fields.Integer(required=True, metadata={"description": "alerts after the cursor"})


class AckFrame(Schema):
    """Sent to every open inbox of an object when its read cursor moves (SSE: `event: ack`)."""

    acked_alert_id = fields.Integer(required=True)
    unread = fields.Integer(required=True)
