"""Schemas built per request with the app's settings do not leak into one another."""

from __future__ import annotations

import pytest

from service import schemas
from service.config import Config
from service.errors import ValidationFailed


def config(**environ: str) -> Config:
    return Config.from_env(environ=environ, env_file=None)


def test_each_config_keeps_its_own_text_limit() -> None:
    short, long = config(ALERT_TEXT_MAX_LENGTH="5"), config(ALERT_TEXT_MAX_LENGTH="50")
    schemas.AlertCreate(short)
    body = {"text": "longer than five", "alert_all": True}
    assert schemas.load(schemas.AlertCreate(long), body)["text"] == body["text"]
    with pytest.raises(ValidationFailed):
        schemas.load(schemas.AlertCreate(short), body)


def test_validators_do_not_pile_up_per_request() -> None:
    settings = config()
    counts = {len(schemas.AlertCreate(settings).fields["text"].validators) for _ in range(5)}
    assert len(counts) == 1


def test_each_config_gets_its_own_cached_schema() -> None:
    # The identity check in front of the cache must not hand one config's schema to another.
    short, long = config(ALERT_TEXT_MAX_LENGTH="5"), config(ALERT_TEXT_MAX_LENGTH="50")
    body = {"text": "longer than five", "alert_all": True}
    for _ in range(2):
        with pytest.raises(ValidationFailed):
            schemas.load(schemas.alert_schema(short), body)
        assert schemas.load(schemas.alert_schema(long), body)["text"] == body["text"]
    assert schemas.alert_schema(short) is schemas.alert_schema(config(ALERT_TEXT_MAX_LENGTH="5"))


@pytest.mark.parametrize(
    "ids",
    [
        [True, 2],
        [1, None],
        [0, 1],
        [1, 2**63],
        [-5],
        [1.0],
        ["1"],
        [[1]],
        [1, 2, False, 3.5, "x", 2**64],
    ],
)
def test_id_lists_off_the_fast_path_keep_marshmallows_errors(ids: list[object]) -> None:
    # What the plain fields.List(Integer) this field replaces says, item by item.
    class Plain(schemas.Schema):
        object_ids = schemas.fields.List(schemas.object_id_field())

    class Fast(schemas.Schema):
        object_ids = schemas.IdList()

    with pytest.raises(schemas.ValidationError) as plain:
        Plain().load({"object_ids": ids})
    with pytest.raises(schemas.ValidationError) as fast:
        Fast().load({"object_ids": ids})
    assert fast.value.messages == plain.value.messages


def test_a_list_of_ids_in_range_loads_as_given() -> None:
    ids = [3, 1, 2**63 - 1, 3]
    loaded = schemas.load(schemas.alert_schema(config()), {"text": "t", "object_ids": ids})
    assert loaded["object_ids"] == [1, 3, 2**63 - 1]


PLAIN_BODIES: list[object] = [
    {"text": "t", "object_ids": [3, 1, 3]},
    {"text": "t", "object_ids": [], "alert_all": False},
    {"object_ids": [1, 2], "text": "x" * 5},
    {"text": "x" * 6, "object_ids": [1]},
    {"text": "", "object_ids": [1]},
    {"text": "a\x00b", "object_ids": [1]},
    {"text": 5, "object_ids": [1]},
    {"text": None, "object_ids": [1]},
    {"object_ids": [1]},
    {"text": "t"},
    {"text": "t", "object_ids": None},
    {"text": "t", "object_ids": None, "alert_all": True},
    {"text": "t", "alert_all": True},
    {"text": "t", "object_ids": [1], "alert_all": True},
    {"text": "t", "object_ids": [], "alert_all": True},
    {"text": "t", "object_ids": [1], "alert_all": None},
    {"text": "t", "object_ids": [1], "alert_all": 0},
    {"text": "t", "object_ids": [1, True]},
    {"text": "t", "object_ids": [0]},
    {"text": "t", "object_ids": [2**63]},
    {"text": "t", "object_ids": [2**63 - 1]},
    {"text": "t", "object_ids": [1.0]},
    {"text": "t", "object_ids": [1, 2, 3, 4]},
    {"text": "t", "object_ids": "1"},
    {"text": "t", "object_ids": {"a": 1}},
    {"text": "t", "object_ids": [1], "extra": 1},
    [1, 2],
]


@pytest.mark.parametrize("body", PLAIN_BODIES)
def test_the_plain_alert_path_answers_as_marshmallow_or_not_at_all(body: object) -> None:
    # Limits small enough that the bodies above cross them: 5 characters, 3 ids.
    schema = schemas.AlertCreate(config(ALERT_TEXT_MAX_LENGTH="5", ALERT_MAX_OBJECT_IDS="3"))
    try:
        full: object = list(schema.load(body).items())  # type: ignore[arg-type]
    except schemas.ValidationError as exc:
        full = exc.messages
    plain = schema.load_plain(body)  # type: ignore[arg-type]
    if plain is not None:
        assert list(plain.items()) == full
    taken = {"text", "object_ids"} <= set(body) if isinstance(body, dict) else False
    assert (plain is not None) == (taken and isinstance(full, list) and body not in NOT_PLAIN)


# Valid, but left to marshmallow: alert_all true (no list of ids to take).
NOT_PLAIN: list[object] = [
    {"text": "t", "object_ids": None},
    {"text": "t", "object_ids": [], "alert_all": True},
    {"text": "t", "object_ids": None, "alert_all": True},
]


def test_a_schema_with_another_field_leaves_the_plain_path() -> None:
    class Wider(schemas.AlertCreate):
        urgent = schemas.fields.Boolean()

    assert Wider(config()).load_plain({"text": "t", "object_ids": [1]}) is None
