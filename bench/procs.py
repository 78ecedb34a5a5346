"""Child processes of a run: load generators speaking the line protocol of common.py
(`Worker`), and the service or the bare broadcast server on a free port (`serve`, on
testbed.server_process)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

import testbed
from testbed import child_env, free_port

from .common import Tree
from .plan import RESULTS, ROOT

__all__ = ["Server", "Worker", "child_env", "free_port", "serve", "service_argv"]


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

    process: testbed.ServerProcess
    name: str

    @property
    def url(self) -> str:
        return self.process.url

    @property
    def tree(self) -> Tree:
        return Tree(self.process.pid)


@contextlib.contextmanager
def serve(
    argv: list[str], log: Any, port: int, name: str, ready_path: str, **env: str
) -> Iterator[Server]:
    """`argv` listening on `port` (testbed.server_process), with `env` added to the
    environment. py-spy writes its profile on SIGINT; the service treats it like SIGTERM."""
    with testbed.server_process(
        argv,
        port,
        env=child_env(**env),
        log=log,
        ready_path=ready_path,
        ready_statuses=(200, 404, 405),
        stop_signal=signal.SIGINT if "py-spy" in argv[0] else signal.SIGTERM,
        stop_timeout=15,
    ) as process:
        yield Server(process, name)


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
    return [*(spy if profile else []), *testbed.service_argv(port, workers)]
