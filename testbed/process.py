"""A server as a subprocess on a free port: started in its own process group, awaited until it
answers, stopped with a signal and then, whatever is left of its group, with SIGKILL."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def child_env(**extra: str) -> dict[str, str]:
    """This process's environment without its database settings (the child gets only what it
    is given), with the repository importable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DB_", "DATABASE_URL"))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


def service_argv(port: int, workers: int = 1) -> list[str]:
    """`inbox serve` on 127.0.0.1:`port`."""
    return [
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


def wait_ready(
    url: str,
    alive: Callable[[], bool],
    *,
    statuses: Sequence[int] = (200,),
    timeout: float = 60,
) -> None:
    """Poll `url` until it answers with one of `statuses`; AssertionError when the process
    exits first or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while True:
        assert alive(), f"the server exited before {url} answered"
        with contextlib.suppress(OSError):
            try:
                with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310
                    status = response.status
            except urllib.error.HTTPError as exc:
                status = exc.code
            if status in statuses:
                return
        assert time.monotonic() < deadline, f"{url} did not answer in {timeout:.0f} s"
        time.sleep(0.05)


@dataclass
class ServerProcess:
    process: subprocess.Popen[bytes]
    url: str
    port: int

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
def server_process(
    argv: Sequence[str],
    port: int,
    *,
    env: Mapping[str, str],
    log: IO[bytes] | int,
    cwd: Path = ROOT,
    ready_path: str = "/readyz",
    ready_statuses: Sequence[int] = (200,),
    start_timeout: float = 60,
    stop_signal: int = signal.SIGTERM,
    stop_timeout: float = 20,
) -> Iterator[ServerProcess]:
    """`argv`, a server that listens on 127.0.0.1:`port`, until `ready_path` answers.

    At the end: `stop_signal` to the process, `stop_timeout` seconds to exit, then SIGKILL to
    what is left of its process group (a worker, py-spy's child). The exit status stays in
    `.process.returncode` (negative: killed)."""
    process = subprocess.Popen(
        list(argv), cwd=cwd, env=dict(env), stdout=log, stderr=log, start_new_session=True
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(
            url + ready_path,
            lambda: process.poll() is None,
            statuses=ready_statuses,
            timeout=start_timeout,
        )
        yield ServerProcess(process, url, port)
    finally:
        if process.poll() is None:
            process.send_signal(stop_signal)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(stop_timeout)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@contextlib.contextmanager
def service(
    database_url: str | None,
    log: IO[bytes] | int,
    *,
    workers: int = 1,
    settings: Mapping[str, str] | None = None,
    wrapper: Sequence[str] = (),
    cwd: Path = ROOT,
    stop_signal: int = signal.SIGTERM,
) -> Iterator[ServerProcess]:
    """`inbox serve` on a free port against `database_url` (None: its own embedded server),
    with `settings` as environment variables, optionally run under `wrapper` (py-spy)."""
    port = free_port()
    env = child_env(**(settings or {}))
    if database_url is not None:
        env["DATABASE_URL"] = database_url
    argv = [*wrapper, *service_argv(port, workers)]
    with server_process(argv, port, env=env, log=log, cwd=cwd, stop_signal=stop_signal) as server:
        yield server
