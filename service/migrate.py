"""Schema migrations: yoyo applies the SQL files in `migrations/` (each with a rollback)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from yoyo import get_backend, read_migrations

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


def yoyo_url(database_url: str) -> str:
    """yoyo speaks psycopg 3 through the `postgresql+psycopg` scheme; the rest is libpq's URL."""
    parts = urlsplit(database_url)
    return urlunsplit(("postgresql+psycopg", *parts[1:]))


@contextmanager
def _backend(database_url: str) -> Iterator[Any]:
    backend = get_backend(yoyo_url(database_url))
    try:
        yield backend
    finally:
        backend.connection.close()


def apply(database_url: str) -> list[str]:
    """Apply every pending migration; returns the ids applied (none when up to date)."""
    migrations = read_migrations(str(MIGRATIONS_DIR))
    with _backend(database_url) as backend, backend.lock():
        pending = backend.to_apply(migrations)
        backend.apply_migrations(pending)
    applied = [m.id for m in pending]
    for migration_id in applied:
        log.info("applied migration %s", migration_id)
    return applied


def rollback(database_url: str, count: int | None = None) -> list[str]:
    """Roll back the newest `count` applied migrations (all when None)."""
    migrations = read_migrations(str(MIGRATIONS_DIR))
    with _backend(database_url) as backend, backend.lock():
        applied = backend.to_rollback(migrations)
        if count is not None:
            applied = applied[:count]
        backend.rollback_migrations(applied)
    return [m.id for m in applied]
