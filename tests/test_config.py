"""Settings: precedence, URL assembly, clear errors, and documentation that lists them all."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

import pytest

from service.config import SETTINGS, Config, ConfigError
from service.docs import env_example, settings_table

ROOT = Path(__file__).resolve().parent.parent


def test_nothing_configured_means_embedded() -> None:
    config = Config.from_env(environ={}, env_file=None)
    assert config.embedded
    assert config.database_url is None
    assert config.port == 8000
    assert config.phone_default_region == "US"


def test_database_url_wins_over_db_settings() -> None:
    config = Config.from_env(
        environ={"DATABASE_URL": "postgresql://a@h/db", "DB_SERVER": "other", "DB_NAME": "x"},
        env_file=None,
    )
    assert config.database_url == "postgresql://a@h/db"


def test_db_settings_build_a_quoted_url() -> None:
    config = Config.from_env(
        environ={
            "DB_USERNAME": "app user",
            "DB_PASSWORD": "p@ss/word",
            "DB_SERVER": "db.internal",
            "DB_PORT": "6543",
            "DB_NAME": "inbox",
        },
        env_file=None,
    )
    assert config.database_url == "postgresql://app%20user:p%40ss%2Fword@db.internal:6543/inbox"


def test_db_server_may_be_a_socket_directory() -> None:
    config = Config.from_env(
        environ={"DB_SERVER": "/var/run/postgresql", "DB_NAME": "inbox", "DB_USERNAME": "me"},
        env_file=None,
    )
    assert config.database_url == "postgresql://me@/inbox?host=/var/run/postgresql&port=5432"


def test_db_settings_need_a_name() -> None:
    with pytest.raises(ConfigError, match="DB_NAME"):
        Config.from_env(environ={"DB_SERVER": "db.internal"}, env_file=None)


def test_env_file_is_read_and_the_environment_wins(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("PORT=9001\nPHONE_DEFAULT_REGION=gb\nDB_NAME=fromfile\nDB_SERVER=h\n")
    config = Config.from_env(environ={"PORT": "9002"}, env_file=env_file)
    assert config.port == 9002
    assert config.phone_default_region == "GB"
    assert config.database_url == "postgresql://h:5432/fromfile"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PORT", "eighty"),
        ("PORT", "70000"),
        ("DATABASE_URL", "mysql://root@localhost/db"),
        ("DATABASE_URL", "postgresql://host:port/db"),
        ("WS_QUEUE_SIZE", "0"),
        ("EMAIL_CHECK_DELIVERABILITY", "maybe"),
        ("DB_TIMEOUT", "-1"),
        ("WRITES_IN_FLIGHT", "0"),
        ("WRITES_IN_FLIGHT", "automatic"),
    ],
)
def test_bad_values_name_the_setting(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        Config.from_env(environ={name: value}, env_file=None)


def test_env_example_documents_every_setting() -> None:
    text = (ROOT / ".env.example").read_text()
    assert text == env_example(), "run `make docs`"
    documented = set(re.findall(r"^#? ?([A-Z][A-Z0-9_]+)=", text, flags=re.MULTILINE))
    assert documented == {s.env for s in SETTINGS}


def test_readme_table_lists_every_setting_with_its_default() -> None:
    text = (ROOT / "README.md").read_text()
    table = text.split("<!-- settings-table:start -->\n")[1].split("<!-- settings-table:end -->")[0]
    assert table == settings_table(), "run `make docs`"
    rows = dict(re.findall(r"^\| `([A-Z0-9_]+)` \| `?([^`|]*)`? \|", table, flags=re.MULTILINE))
    assert rows == {s.env: s.default for s in SETTINGS}


def test_the_setting_that_supplied_the_url_is_recorded() -> None:
    """Start-up errors name it; nothing re-reads the environment later to find out."""
    by_url = Config.from_env(environ={"DATABASE_URL": "postgresql://a@h/db"}, env_file=None)
    by_parts = Config.from_env(environ={"DB_SERVER": "h", "DB_NAME": "db"}, env_file=None)
    embedded = Config.from_env(environ={}, env_file=None)
    assert by_url.database_url_setting == "DATABASE_URL"
    assert by_parts.database_url_setting == "DB_SERVER/DB_PORT/DB_NAME/DB_USERNAME/DB_PASSWORD"
    assert embedded.database_url_setting == ""


def test_every_setting_is_a_config_field_named_like_it() -> None:
    names = {f.name for f in fields(Config)}
    for s in SETTINGS:
        assert s.name in names
        assert s.env == s.name.upper()
    assert len(SETTINGS) == len(fields(Config)) - 1  # all but database_url_setting


@pytest.mark.parametrize(("workers", "each"), [("1", 256), ("2", 128), ("4", 64), ("300", 1)])
def test_auto_writes_in_flight_is_shared_by_the_workers(workers: str, each: int) -> None:
    config = Config.from_env(environ={"WORKERS": workers}, env_file=None)
    assert config.writes_in_flight == 0  # auto, the default
    assert config.writes_bound() == each
    explicit = Config.from_env(
        environ={"WORKERS": workers, "WRITES_IN_FLIGHT": "100"}, env_file=None
    )
    assert explicit.writes_bound() == 100  # a number is per process, whatever the workers


@pytest.mark.parametrize("value", ["auto", "AUTO", " Auto "])
def test_writes_in_flight_auto_is_spelled_freely(value: str) -> None:
    config = Config.from_env(environ={"WRITES_IN_FLIGHT": value}, env_file=None)
    assert config.writes_in_flight == 0
