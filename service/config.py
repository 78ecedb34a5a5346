"""Settings: one frozen dataclass built from the environment and an optional `.env` file.

Every setting is declared once in `SETTINGS`; `.env.example` and the README's table are
checked against that list by the tests, so the documentation cannot drift from the code.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from dotenv import dotenv_values


class ConfigError(Exception):
    """A setting is missing or malformed; the message names the setting."""


def _bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError("expected true or false")


def _positive_int(raw: str) -> int:
    value = int(raw)
    if value < 1:
        raise ValueError("must be at least 1")
    return value


def _positive_float(raw: str) -> float:
    value = float(raw)
    if not value > 0:
        raise ValueError("must be greater than 0")
    return value


def _port(raw: str) -> int:
    value = int(raw)
    if not 0 <= value <= 65535:
        raise ValueError("must be between 0 and 65535")
    return value


def _csv(raw: str) -> frozenset[str]:
    return frozenset(item.strip() for item in raw.split(",") if item.strip())


def _choice(*choices: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip().lower()
        if value not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}")
        return value

    return parse


def _postgres_url(raw: str) -> str:
    parts = urlsplit(raw)
    if parts.scheme not in {"postgres", "postgresql"}:
        raise ValueError("expected a libpq URL such as postgresql://user:password@host:5432/dbname")
    try:
        parts.port  # noqa: B018 - urlsplit only checks the port when it is read
    except ValueError as exc:
        raise ValueError(f"bad port ({exc})") from None
    return raw


@dataclass(frozen=True, slots=True)
class Setting:
    """One environment variable: its default, how to parse it, and what it means."""

    env: str
    default: str
    parse: Callable[[str], Any]
    help: str


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "DATABASE_URL",
        "",
        _postgres_url,
        "libpq URL of the database; wins over the DB_* settings. Empty with no DB_* set: "
        "the service runs its own embedded PostgreSQL.",
    ),
    Setting("DB_USERNAME", "", str, "database user, used when DATABASE_URL is empty"),
    Setting("DB_PASSWORD", "", str, "database password, used when DATABASE_URL is empty"),
    Setting(
        "DB_SERVER",
        "",
        str,
        "database host name or address (or a Unix socket directory), used when DATABASE_URL "
        "is empty",
    ),
    Setting("DB_PORT", "5432", _port, "database port, used with DB_SERVER"),
    Setting("DB_NAME", "", str, "database name, used when DATABASE_URL is empty"),
    Setting(
        "LISTEN_DATABASE_URL",
        "",
        _postgres_url,
        "URL for the one LISTEN connection per process; defaults to the main database URL. "
        "Point it at the primary directly when the main URL goes through a transaction-pooling "
        "PgBouncer.",
    ),
    Setting(
        "EMBEDDED_DATA_DIR",
        ".pgdata",
        str,
        "data folder of the embedded PostgreSQL (relative to the working directory)",
    ),
    Setting("HOST", "127.0.0.1", str, "address the HTTP server binds"),
    Setting("PORT", "8000", _port, "port the HTTP server binds"),
    Setting(
        "WORKERS",
        "1",
        _positive_int,
        "serving processes sharing the port (SO_REUSEPORT), each with its own pool and LISTEN",
    ),
    Setting(
        "PHONE_DEFAULT_REGION",
        "US",
        str,
        "region assumed for phone numbers written without a +country code",
    ),
    Setting(
        "EMAIL_CHECK_DELIVERABILITY",
        "false",
        _bool,
        "also check that the email's domain accepts mail (DNS lookups)",
    ),
    Setting("ALERT_TEXT_MAX_LENGTH", "4000", _positive_int, "longest alert text, in characters"),
    Setting(
        "ALERT_MAX_OBJECT_IDS", "10000", _positive_int, "longest object_ids list in one POST /alert"
    ),
    Setting(
        "MAX_BODY_BYTES", "1048576", _positive_int, "largest request body; larger ones get 413"
    ),
    Setting("DB_POOL_MIN_SIZE", "2", _positive_int, "connections the pool keeps open"),
    Setting("DB_POOL_MAX_SIZE", "10", _positive_int, "most connections the pool opens"),
    Setting(
        "DB_TIMEOUT",
        "5",
        _positive_float,
        "seconds to connect, to wait for a pooled connection, or for one statement; past it "
        "a request gets 503",
    ),
    Setting(
        "WS_QUEUE_SIZE",
        "1024",
        _positive_int,
        "frames queued for one socket before it is closed as too slow (close code 4008)",
    ),
    Setting(
        "WS_HEARTBEAT",
        "30",
        _positive_float,
        "seconds between WebSocket pings; a peer that misses a pong is closed",
    ),
    Setting(
        "LISTEN_PROBE_INTERVAL",
        "10",
        _positive_float,
        "seconds of silence after which the LISTEN connection is probed (SELECT 1); a probe that "
        "fails or takes longer than DB_TIMEOUT counts as a lost connection",
    ),
    Setting(
        "LISTEN_RECONNECT_MAX",
        "5",
        _positive_float,
        "longest wait, in seconds, between attempts to re-open the LISTEN connection",
    ),
    Setting(
        "LOG_FORMAT",
        "text",
        _choice("text", "json"),
        "log line format: text (one readable line per event) or json (one JSON object per line)",
    ),
    Setting(
        "LOG_LEVEL",
        "info",
        _choice("debug", "info", "warning", "error"),
        "lowest level logged: debug, info, warning or error",
    ),
    # -- hardening: access control, safe retries, socket limits (docs/hardening.md) --------
    Setting(
        "API_KEYS",
        "",
        _csv,
        "comma-separated keys; when set, writes, /metrics and every read need a credential "
        "(`Authorization: Bearer <key>`, or for one object's data its inbox token): none is "
        "401, a wrong one 403. Empty: writes are open (a WARNING is logged at start-up)",
    ),
    Setting(
        "INBOX_SECRET",
        "",
        str,
        "secret for inbox tokens (HMAC-SHA256 of the object id); when set, an object, its inbox "
        "and the alerts addressed to it need its token or an API key (missing: 401, wrong: "
        "403). Empty: no tokens; reads are open unless API_KEYS is set (WARNING at start-up)",
    ),
    Setting(
        "INBOX_SECRET_PREVIOUS",
        "",
        str,
        "the secret before the last rotation: its tokens are still accepted, new tokens use "
        "INBOX_SECRET",
    ),
    Setting(
        "ALLOWED_ORIGINS",
        "",
        _csv,
        "comma-separated origins (https://app.example.com) allowed to open inbox sockets from "
        "a browser; a request with another Origin gets 403. Empty: any origin",
    ),
    Setting(
        "IDEMPOTENCY_TTL",
        "86400",
        _positive_int,
        "seconds an Idempotency-Key is remembered; a retry after that is a new request",
    ),
    Setting(
        "WS_MAX_PER_PROCESS",
        "10000",
        _positive_int,
        "open inbox sockets per process; one more is refused before the upgrade with 503",
    ),
    Setting(
        "WS_MAX_PER_OBJECT",
        "32",
        _positive_int,
        "open inbox sockets per object; one more is refused before the upgrade with 429",
    ),
)


def _load_env_file(path: Path) -> dict[str, str]:
    if not path.is_file():
        return {}
    return {key: value or "" for key, value in dotenv_values(path).items()}


@dataclass(frozen=True, slots=True)
class Config:
    """The service's settings, read once at start-up and passed down explicitly."""

    database_url: str | None
    listen_database_url: str | None
    embedded_data_dir: Path
    host: str
    port: int
    workers: int
    phone_default_region: str
    email_check_deliverability: bool
    alert_text_max_length: int
    alert_max_object_ids: int
    max_body_bytes: int
    db_pool_min_size: int
    db_pool_max_size: int
    db_timeout: float
    ws_queue_size: int
    ws_heartbeat: float
    listen_probe_interval: float
    listen_reconnect_max: float
    log_format: str = "text"
    log_level: str = "info"
    api_keys: frozenset[str] = field(default=frozenset(), repr=False)
    inbox_secret: str = field(default="", repr=False)
    inbox_secret_previous: str = field(default="", repr=False)
    allowed_origins: frozenset[str] = frozenset()
    idempotency_ttl: int = 86400
    ws_max_per_process: int = 10000
    ws_max_per_object: int = 32
    source: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)

    @property
    def embedded(self) -> bool:
        """No database configured: the service brings its own."""
        return self.database_url is None

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, env_file: Path | None = Path(".env")
    ) -> Config:
        """Read every setting; the process environment wins over the `.env` file."""
        merged: dict[str, str] = _load_env_file(env_file) if env_file else {}
        merged.update(os.environ if environ is None else environ)
        values: dict[str, Any] = {}
        for setting in SETTINGS:
            raw = merged.get(setting.env, "")
            if raw == "":
                raw = setting.default
            try:
                values[setting.env] = setting.parse(raw) if raw != "" else ""
            except ValueError as exc:
                raise ConfigError(f"{setting.env}={raw!r} is not valid: {exc}") from None
        return cls(
            database_url=_database_url(values),
            listen_database_url=values["LISTEN_DATABASE_URL"] or None,
            embedded_data_dir=Path(values["EMBEDDED_DATA_DIR"]),
            host=values["HOST"],
            port=values["PORT"],
            workers=values["WORKERS"],
            phone_default_region=values["PHONE_DEFAULT_REGION"].upper(),
            email_check_deliverability=values["EMAIL_CHECK_DELIVERABILITY"],
            alert_text_max_length=values["ALERT_TEXT_MAX_LENGTH"],
            alert_max_object_ids=values["ALERT_MAX_OBJECT_IDS"],
            max_body_bytes=values["MAX_BODY_BYTES"],
            db_pool_min_size=values["DB_POOL_MIN_SIZE"],
            db_pool_max_size=max(values["DB_POOL_MAX_SIZE"], values["DB_POOL_MIN_SIZE"]),
            db_timeout=values["DB_TIMEOUT"],
            ws_queue_size=values["WS_QUEUE_SIZE"],
            ws_heartbeat=values["WS_HEARTBEAT"],
            listen_probe_interval=values["LISTEN_PROBE_INTERVAL"],
            listen_reconnect_max=values["LISTEN_RECONNECT_MAX"],
            log_format=values["LOG_FORMAT"],
            log_level=values["LOG_LEVEL"],
            api_keys=values["API_KEYS"] or frozenset(),
            inbox_secret=values["INBOX_SECRET"],
            inbox_secret_previous=values["INBOX_SECRET_PREVIOUS"],
            allowed_origins=values["ALLOWED_ORIGINS"] or frozenset(),
            idempotency_ttl=values["IDEMPOTENCY_TTL"],
            ws_max_per_process=values["WS_MAX_PER_PROCESS"],
            ws_max_per_object=values["WS_MAX_PER_OBJECT"],
            source=merged,
        )

    def with_database(self, url: str) -> Config:
        """The same settings pointed at `url` (used once the embedded server is up)."""
        return replace(self, database_url=url)


def _database_url(values: Mapping[str, Any]) -> str | None:
    if values["DATABASE_URL"]:
        return str(values["DATABASE_URL"])
    if not (values["DB_SERVER"] or values["DB_NAME"] or values["DB_USERNAME"]):
        return None
    if not values["DB_NAME"]:
        raise ConfigError("DB_NAME is not set (needed with DB_SERVER/DB_USERNAME)")
    user = quote(values["DB_USERNAME"], safe="")
    password = quote(values["DB_PASSWORD"], safe="")
    credentials = f"{user}:{password}@" if password else (f"{user}@" if user else "")
    host = values["DB_SERVER"] or "localhost"
    name = quote(values["DB_NAME"], safe="")
    if host.startswith("/"):  # a Unix socket directory, as libpq allows
        query = f"host={quote(host, safe='/')}&port={values['DB_PORT']}"
        return f"postgresql://{credentials}/{name}?{query}"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"postgresql://{credentials}{host}:{values['DB_PORT']}/{name}"


# -- documentation generated from SETTINGS (`make docs`; the tests check it is current) ------

_EXAMPLES = {
    "DATABASE_URL": "postgresql://postgres@127.0.0.1:5432/inbox",
    "DB_USERNAME": "postgres",
    "DB_PASSWORD": "secret",
    "DB_SERVER": "127.0.0.1",
    "DB_NAME": "inbox",
    "LISTEN_DATABASE_URL": "postgresql://postgres@primary.internal:5432/inbox",
}


def settings_table() -> str:
    rows = ["| setting | default | meaning |", "| --- | --- | --- |"]
    for s in SETTINGS:
        default = f"`{s.default}`" if s.default else ""
        rows.append(f"| `{s.env}` | {default} | {s.help} |")
    return "\n".join(rows) + "\n"


def env_example() -> str:
    import textwrap

    lines = [
        "# Settings of the inbox service. Copy to .env (or export them); the environment wins.",
        "# With no DATABASE_URL and no DB_* set, the service runs its own embedded PostgreSQL.",
        "# Generated from service/config.py by `make docs`.",
        "",
    ]
    for s in SETTINGS:
        lines += [f"# {line}" for line in textwrap.wrap(s.help, 94)]
        example = _EXAMPLES.get(s.env)
        lines.append(f"# {s.env}={example}" if example else f"{s.env}={s.default}")
        lines.append("")
    return "\n".join(lines)


def write_docs(root: Path) -> None:
    """Rewrite .env.example and the README's settings table from SETTINGS."""
    (root / ".env.example").write_text(env_example())
    readme = root / "README.md"
    start, end = "<!-- settings-table:start -->\n", "<!-- settings-table:end -->"
    text = readme.read_text()
    head, rest = text.split(start)
    _, tail = rest.split(end)
    readme.write_text(head + start + settings_table() + end + tail)


if __name__ == "__main__":
    write_docs(Path.cwd())
