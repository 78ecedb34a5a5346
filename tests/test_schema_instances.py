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
