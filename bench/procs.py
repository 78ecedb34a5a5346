"""Child processes of a run: load generators speaking the line protocol of common.py
(`Worker`), and the service or the bare broadcast server on a free port (`serve`)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from .common import Tree
from .plan import RESULTS, ROOT


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DB_", "DATABASE_URL"))}
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra)
    return env


class Worker:
    """A load-generator (or listener fleet) process speaking the line protocol of common.py."""

    def __init__(self, proc: asyncio.subprocess.Process, mode: str) -> None:
        self.proc = proc
        self.mode = mode
        self.tree = Tree(proc.pid)

    @classmethod
    async def start(cls, which: str, log: Any, timeout: float = 120, **cfg: Any) -> Worker:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.loadgen",
            which,
            orjson.dumps(cfg).decode(),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=log,
            env=child_env(),
            cwd=ROOT,
            limit=1 << 28,
        )
        worker = cls(proc, which)
        worker.ready = await worker.event("ready", timeout)
        return worker

    async def event(self, name: str, timeout: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        while True:
            line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
            if not line:
                raise RuntimeError(f"load generator {self.mode} exited (see workers.log)")
            data: dict[str, Any] = orjson.loads(line)
            if data["event"] == name:
                return data

    async def send(self, command: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command.encode() + b"\n")
        await self.proc.stdin.drain()

    async def finish(self, timeout: float = 120) -> dict[str, Any]:
        """The results; the process stays until `close()` so that its CPU can still be read."""
        try:
            return await self.event("done", timeout)
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ConnectionError):
                await self.send("exit")
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
        await self.proc.wait()


@dataclass
class Server:
    """The service (or the bare broadcast server) running as a subprocess on a free port."""

    proc: asyncio.subprocess.Process
    url: str
    name: str

    @property
    def tree(self) -> Tree:
        return Tree(self.proc.pid)


@contextlib.asynccontextmanager
async def serve(
    argv: list[str], env: dict[str, str], log: Any, port: int, name: str, ready_path: str
) -> AsyncIterator[Server]:
    proc = await asyncio.create_subprocess_exec(
        *argv, env=env, cwd=ROOT, stdout=log, stderr=log, start_new_session=True
    )
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(600):
                if proc.returncode is not None:
                    raise RuntimeError(f"{name} exited with {proc.returncode} (see service.log)")
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(url + ready_path) as resp:
                        if resp.status in (200, 404, 405):
                            break
                await asyncio.sleep(0.1)
            else:
                raise RuntimeError(f"{name} did not become ready")
        yield Server(proc, url, name)
    finally:
        if proc.returncode is None:
            # py-spy writes its profile on SIGINT; the service treats it like SIGTERM.
            os.killpg(proc.pid, signal.SIGINT if "py-spy" in argv[0] else signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), 15)
        # Whatever is left of its process group (a worker, py-spy's child) goes too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()


def service_argv(workers: int, port: int, profile: bool = False) -> list[str]:
    """`inbox serve`; with `profile`, under py-spy (collapsed stacks in bench/results/)."""
    spy = [
        str(Path(sys.executable).parent / "py-spy"),
        "record",
        "--subprocesses",
        "--format",
        "raw",
        "--rate",
        "250",
        "-o",
        str(RESULTS / f"profile-workers{workers}.txt"),
        "--",
    ]
    return [
        *(spy if profile else []),
        sys.executable,
        "-m",
        "service",
        "serve",
        "--workers",
        str(workers),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
