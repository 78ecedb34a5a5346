"""A PostgreSQL server to run against, and throwaway databases on it.

The server is DATABASE_URL's (never started or stopped here) or a private embedded one in a data
folder of its own, stopped when the block ends. Each user makes its own database
(`<prefix>_<pid>_<random>`), migrated or empty, and drops it at the end, so concurrent runs
on one server never see each other's rows.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

from service import embedded, migrate


def with_database(url: str, name: str) -> str:
    """`url` pointed at database `name` on the same server."""
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


def database_name(url: str) -> str:
    return urlsplit(url).path.lstrip("/")


@dataclass
class PgServer:
    """A running server: a URL to run CREATE/DROP DATABASE from, and what it is."""

    admin_url: str
    description: str
    embedded: embedded.EmbeddedPostgres | None = None  # its handle, when it is ours


@contextlib.contextmanager
def pg_server(
    database_url: str | None, data_dir: Path, *, max_connections: int = 0
) -> Iterator[PgServer]:
    """`database_url`'s server, or the embedded one in `data_dir` (stopped after), with
    `max_connections` at least that (the embedded one is reconfigured and restarted)."""
    if database_url:
        yield PgServer(database_url, "DATABASE_URL server")
        return
    server = embedded.start(data_dir, database="postgres")
    if max_connections:
        with psycopg.connect(server.url, autocommit=True) as conn:
            current = conn.execute("SHOW max_connections").fetchone()
            low = current is not None and int(current[0]) < max_connections
            if low:
                conn.execute(f"ALTER SYSTEM SET max_connections = {int(max_connections)}")
        if low:
            server.stop()
            server = embedded.start(data_dir, database="postgres")
    try:
        yield PgServer(server.url, f"embedded PostgreSQL in {data_dir.name}/", server)
    finally:
        server.stop()


def create_database(admin_url: str, prefix: str) -> str:
    """A new empty database on `admin_url`'s server; returns its URL."""
    name = f"{prefix}_{os.getpid()}_{secrets.token_hex(4)}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return with_database(admin_url, name)


def drop_database(admin_url: str, url: str, *, patience: float = 0) -> None:
    """Drop `url`'s database, its sessions too; retry for `patience` seconds while the server
    cannot be reached (it may still be coming back from a restart)."""
    deadline = time.monotonic() + patience
    drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
        sql.Identifier(database_name(url))
    )
    while True:
        try:
            with psycopg.connect(admin_url, autocommit=True) as conn:
                conn.execute(drop)
            return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


@contextlib.contextmanager
def throwaway_database(
    admin_url: str, prefix: str, *, migrated: bool = True, patience: float = 0
) -> Iterator[str]:
    """A database of its own for the block (migrated to the newest schema unless told not),
    dropped at the end."""
    url = create_database(admin_url, prefix)
    try:
        if migrated:
            migrate.apply(url)
        yield url
    finally:
        drop_database(admin_url, url, patience=patience)
