"""Settings: one frozen dataclass built from the environment and an optional `.env` file.

Each setting is declared once, as a field of `Config` made with `setting()`: its environment
variable is the field's name in capitals, and its default, parser and meaning sit beside it.
`SETTINGS` lists them for the documentation (`service/docs.py`, `make docs`), which the tests
check against `.env.example` and the README's table.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from dotenv import dotenv_values

# The settings that build the URL when DATABASE_URL is empty, as start-up errors name them.
DB_SETTINGS = "DB_SERVER/DB_PORT/DB_NAME/DB_USERNAME/DB_PASSWORD"


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


def _count_or_auto(raw: str) -> int:
    """A count of at least 1, or 0 for `auto` (the caller decides what auto means)."""
    if raw.strip().lower() == "auto":
        return 0
    return _positive_int(raw)


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


def _upper(raw: str) -> str:
    return raw.upper()


def _choice(*choices: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip().lower()
        if value not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}")
        return value

    return parse


MIN_SECRET_BYTES = 32
# WRITES_IN_FLIGHT=auto: the writes one `inbox serve` takes at once, shared by its workers.
# The commits they wait for are the database's, whatever the number of processes (README,
# Overload: 256 per host measured best with 1 worker and with 2).
HOST_WRITES_IN_FLIGHT = 256


def _secret(raw: str) -> str:
    """Empty (no secret), or at least MIN_SECRET_BYTES bytes: a short one is guessable."""
    size = len(raw.encode("utf-8", "surrogateescape"))
    if 0 < size < MIN_SECRET_BYTES:
        raise ValueError(
            f"must be at least {MIN_SECRET_BYTES} bytes (it has {size}); make one with "
            "python -c 'import secrets; print(secrets.token_urlsafe(32))'"
        )
    return raw


def _postgres_url(raw: str) -> str | None:
    if not raw:
        return None
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

    name: str  # the Config field
    env: str
    default: str
    parse: Callable[[str], Any]
    help: str
    secret: bool = False  # never shown: not in the repr, not in a start-up error


def setting(default: str, parse: Callable[[str], Any], help: str, *, secret: bool = False) -> Any:
    """A Config field read from the environment variable named like the field, in capitals.

    `default` is the raw text used when the variable is unset or empty; `secret` keeps the value
    out of the config's repr (and so out of logs)."""
    return field(
        default=parse(default),
        repr=not secret,
        metadata={"setting": (default, parse, help, secret)},
    )


@dataclass(frozen=True, slots=True)
class Config:
    """The service's settings, read once at start-up and passed down explicitly."""

    # DATABASE_URL, or the URL built from the DB_* settings; None: the embedded server.
    database_url: str | None = setting(
        "",
        _postgres_url,
        "libpq URL of the database; wins over the DB_* settings. Empty with no DB_* set: "
        "the service runs its own embedded PostgreSQL.",
    )
    db_username: str = setting("", str, "database user, used when DATABASE_URL is empty")
    db_password: str = setting(
        "", str, "database password, used when DATABASE_URL is empty", secret=True
    )
    db_server: str = setting(
        "",
        str,
        "database host name or address (or a Unix socket directory), used when DATABASE_URL "
        "is empty",
    )
    db_port: int = setting("5432", _port, "database port, used with DB_SERVER")
    db_name: str = setting("", str, "database name, used when DATABASE_URL is empty")
    listen_database_url: str | None = setting(
        "",
        _postgres_url,
        "URL for the one LISTEN connection per process, and for migrations; defaults to the "
        "main database URL. Point it at the primary directly when the main URL goes through a "
        "transaction-pooling PgBouncer.",
    )
    db_transaction_pooling: bool = setting(
        "false",
        _bool,
        "true when DATABASE_URL goes through a transaction-pooling PgBouncer (or another pooler "
        "that lends a server connection per transaction): no prepared statement outlives its "
        "transaction, and each query runs in an explicit one. Needs LISTEN_DATABASE_URL",
    )
    embedded_data_dir: Path = setting(
        ".pgdata",
        Path,
        "data folder of the embedded PostgreSQL (relative to the working directory)",
    )
    host: str = setting("127.0.0.1", str, "address the HTTP server binds")
    port: int = setting("8000", _port, "port the HTTP server binds")
    workers: int = setting(
        "1",
        _positive_int,
        "serving processes sharing the port (SO_REUSEPORT), each with its own pool and LISTEN",
    )
    phone_default_region: str = setting(
        "US", _upper, "region assumed for phone numbers written without a +country code"
    )
    email_check_deliverability: bool = setting(
        "false", _bool, "also check that the email's domain accepts mail (DNS lookups)"
    )
    alert_text_max_length: int = setting("4000", _positive_int, "longest alert text, in characters")
    alert_max_object_ids: int = setting(
        "10000", _positive_int, "longest object_ids list in one POST /alert"
    )
    max_body_bytes: int = setting(
        "1048576", _positive_int, "largest request body; larger ones get 413"
    )
    db_pool_min_size: int = setting("2", _positive_int, "connections the pool keeps open")
    # Never below DB_POOL_MIN_SIZE (raised to it while parsing).
    db_pool_max_size: int = setting("10", _positive_int, "most connections the pool opens")
    # 0: auto (see writes_bound).
    writes_in_flight: int = setting(
        "auto",
        _count_or_auto,
        "POST /object and POST /alert requests one process handles at once; one more is "
        f"refused at once with 503 server_busy and Retry-After. auto: {HOST_WRITES_IN_FLIGHT} "
        f"shared by the WORKERS of one `inbox serve` ({HOST_WRITES_IN_FLIGHT} / WORKERS each)",
    )
    writes_max_wait: float = setting(
        "0.25",
        _positive_float,
        "seconds the oldest POST queued for a group commit may have waited; past it new ones "
        "are refused at once with 503 server_busy and Retry-After",
    )
    db_timeout: float = setting(
        "5",
        _positive_float,
        "seconds to connect, to wait for a pooled connection, or for one statement; past it "
        "a request gets 503",
    )
    ws_queue_size: int = setting(
        "1024",
        _positive_int,
        "frames queued for one socket before it is closed as too slow (close code 4008)",
    )
    ws_heartbeat: float = setting(
        "30",
        _positive_float,
        "seconds between WebSocket pings; a peer that sends nothing, not even a pong, between "
        "two pings is dropped",
    )
    listen_probe_interval: float = setting(
        "10",
        _positive_float,
        "seconds of silence after which the LISTEN connection is probed (SELECT 1); a probe that "
        "fails or takes longer than DB_TIMEOUT counts as a lost connection",
    )
    listen_reconnect_max: float = setting(
        "5",
        _positive_float,
        "longest wait, in seconds, between attempts to re-open the LISTEN connection",
    )
    log_format: str = setting(
        "text",
        _choice("text", "json"),
        "log line format: text (one readable line per event) or json (one JSON object per line)",
    )
    log_level: str = setting(
        "info",
        _choice("debug", "info", "warning", "error"),
        "lowest level logged: debug, info, warning or error",
    )
    # -- access control, safe retries, socket limits ---------------------------------------
    api_keys: frozenset[str] = setting(
        "",
        _csv,
        "comma-separated keys; when set, writes, /metrics and every read need a credential "
        "(`Authorization: Bearer <key>`, or for one object's data its inbox token): none is "
        "401, a wrong one 403. Empty: writes are open (a WARNING is logged at start-up)",
        secret=True,
    )
    inbox_secret: str = setting(
        "",
        _secret,
        "secret for inbox tokens (HMAC-SHA256 of the object id), at least 32 bytes; when set, "
        "an object, its inbox and the alerts addressed to it need its token or an API key "
        "(missing: 401, wrong: 403). Empty: no tokens; reads are open unless API_KEYS is set "
        "(WARNING at start-up)",
        secret=True,
    )
    inbox_secret_previous: str = setting(
        "",
        _secret,
        "the secret before the last rotation (at least 32 bytes): its tokens are still "
        "accepted, new tokens use INBOX_SECRET",
        secret=True,
    )
    allowed_origins: frozenset[str] = setting(
        "",
        _csv,
        "comma-separated origins (https://app.example.com) allowed to open inbox sockets from "
        "a browser; a request with another Origin gets 403. Empty: any origin",
    )
    idempotency_ttl: int = setting(
        "86400",
        _positive_int,
        "seconds an Idempotency-Key is remembered; a retry after that is a new request",
    )
    ws_max_per_process: int = setting(
        "10000",
        _positive_int,
        "open inbox sockets per process; one more is refused before the upgrade with 503",
    )
    ws_max_per_object: int = setting(
        "32",
        _positive_int,
        "open inbox sockets per object; one more is refused before the upgrade with 429",
    )
    # -- connections (service/server.py) ---------------------------------------------------
    http_header_timeout: float = setting(
        "10",
        _positive_float,
        "seconds a connection may take to send a complete request head, counted from when it "
        "opens and from the end of its previous response (so also the keep-alive idle time); "
        "then it is closed",
    )
    http_body_timeout: float = setting(
        "10",
        _positive_float,
        "seconds to receive a whole request body once its route starts reading it; a slower "
        "(trickling) body gets 408 and the connection is closed",
    )
    max_connections: int = setting(
        "11000",
        _positive_int,
        "open TCP connections per process, in every state (inbox sockets included); one more "
        "is answered 503 and closed at once. The open-files limit is raised to fit at start-up, "
        "or this is lowered to fit it (WARNING)",
    )
    # -- recorded while parsing, not settings ----------------------------------------------
    # Which setting(s) supplied database_url, for the one-line start-up errors.
    database_url_setting: str = ""

    def writes_bound(self) -> int:
        """The writes one process takes at once: WRITES_IN_FLIGHT, or with `auto` its share of
        HOST_WRITES_IN_FLIGHT among the WORKERS."""
        return self.writes_in_flight or max(1, HOST_WRITES_IN_FLIGHT // self.workers)

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
        for s in SETTINGS:
            raw = merged.get(s.env, "") or s.default
            try:
                values[s.name] = s.parse(raw)
            except ValueError as exc:
                shown = s.env if s.secret else f"{s.env}={_hide_password(raw)!r}"
                raise ConfigError(f"{shown} is not valid: {exc}") from None
        values["database_url"], values["database_url_setting"] = _database_url(values)
        values["db_pool_max_size"] = max(values["db_pool_max_size"], values["db_pool_min_size"])
        if values["db_transaction_pooling"] and not values["listen_database_url"]:
            raise ConfigError(
                "DB_TRANSACTION_POOLING=true needs LISTEN_DATABASE_URL pointing at PostgreSQL "
                "itself: a transaction pooler cannot hold a LISTEN"
            )
        return cls(**values)


SETTINGS: tuple[Setting, ...] = tuple(
    Setting(f.name, f.name.upper(), *f.metadata["setting"])
    for f in fields(Config)
    if "setting" in f.metadata
)


def _load_env_file(path: Path) -> dict[str, str]:
    if not path.is_file():
        return {}
    return {key: value or "" for key, value in dotenv_values(path).items()}


def _hide_password(raw: str) -> str:
    """A URL as it may be shown: without its password (`postgresql://u:***@h/db`)."""
    try:
        password = urlsplit(raw).password
    except ValueError:  # not a URL urlsplit can take apart (an unclosed "[", say)
        return raw if "@" not in raw else "***"
    if password is None:
        return raw
    return raw.replace(f":{password}@", ":***@", 1)


def _database_url(values: Mapping[str, Any]) -> tuple[str | None, str]:
    """The configured database URL (None: embedded) and the setting(s) that supplied it."""
    if values["database_url"]:
        return str(values["database_url"]), "DATABASE_URL"
    if not (values["db_server"] or values["db_name"] or values["db_username"]):
        return None, ""
    if not values["db_name"]:
        raise ConfigError("DB_NAME is not set (needed with DB_SERVER/DB_USERNAME)")
    user = quote(values["db_username"], safe="")
    password = quote(values["db_password"], safe="")
    credentials = f"{user}:{password}@" if password else (f"{user}@" if user else "")
    host = values["db_server"] or "localhost"
    name = quote(values["db_name"], safe="")
    if host.startswith("/"):  # a Unix socket directory, as libpq allows
        query = f"host={quote(host, safe='/')}&port={values['db_port']}"
        return f"postgresql://{credentials}/{name}?{query}", DB_SETTINGS
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"postgresql://{credentials}{host}:{values['db_port']}/{name}", DB_SETTINGS
