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
