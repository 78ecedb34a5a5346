"""The command line: start-up mistakes end with one clear line, and --help documents it all."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from service import cli
from service.config import Config
from testbed import child_env, free_port


def run(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service", *args],
        cwd=cwd,
        env=child_env(**env),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def assert_one_clear_line(result: subprocess.CompletedProcess[str], setting: str) -> None:
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("inbox: ")]
    assert len(errors) == 1, result.stderr
    assert setting in errors[0]


@pytest.mark.parametrize("command", ["serve", "migrate"])
def test_malformed_url(tmp_path: Path, command: str) -> None:
    result = run([command], tmp_path, DATABASE_URL="mysql://root@localhost/inbox")
    assert_one_clear_line(result, "DATABASE_URL")


@pytest.mark.parametrize("command", ["serve", "migrate"])
def test_unreachable_server(tmp_path: Path, command: str) -> None:
    port = free_port()  # nothing listens there
    result = run([command], tmp_path, DATABASE_URL=f"postgresql://postgres@127.0.0.1:{port}/x")
    assert_one_clear_line(result, "DATABASE_URL")
    assert "cannot connect" in result.stderr


def test_missing_database_names_the_db_settings(tmp_path: Path, server_url: str) -> None:
    """The machines here use trust auth, so a wrong password cannot be shown failing; a
    database that does not exist fails through the same path."""
    from urllib.parse import parse_qsl, urlsplit

    parts = urlsplit(server_url)
    host = parts.hostname or dict(parse_qsl(parts.query))["host"]  # embedded: a socket directory
    env = {
        "DB_NAME": "no_such_database_here",
        "DB_USERNAME": parts.username or "postgres",
        "DB_SERVER": host,
        "DB_PORT": str(parts.port or 5432),
    }
    result = run(["serve"], tmp_path, **env)
    assert_one_clear_line(result, "DB_SERVER")
    assert "no_such_database_here" in result.stderr


def test_bad_setting_value(tmp_path: Path) -> None:
    assert_one_clear_line(run(["serve"], tmp_path, PORT="eighty"), "PORT")


def test_help_lists_every_command_and_option(tmp_path: Path) -> None:
    top = run(["--help"], tmp_path)
    assert top.returncode == 0
    for command in ("serve", "migrate", "tail"):
        assert command in top.stdout
    serve = run(["serve", "--help"], tmp_path)
    for option in ("--host", "--port", "--workers", "--migrate"):
        assert option in serve.stdout
    assert "--rollback" in run(["migrate", "--help"], tmp_path).stdout
    assert "--after" in run(["tail", "--help"], tmp_path).stdout


@pytest.mark.parametrize(("argv", "workers"), [([], 1), (["--workers", "2"], 2)])
def test_serve_tells_each_worker_how_many_share_the_host(
    monkeypatch: pytest.MonkeyPatch, argv: list[str], workers: int
) -> None:
    """`--workers` from the command line reaches each worker's settings, so that
    WRITES_IN_FLIGHT=auto divides the host's writes among the workers actually started."""
    served: list[tuple[Config, int]] = []

    @contextlib.contextmanager
    def no_database(config: Config) -> Iterator[str]:
        yield "postgresql://unused@127.0.0.1/unused"

    monkeypatch.setattr(cli, "database", no_database)
    monkeypatch.setattr(
        cli, "_serve_one", lambda config, url, reuse_port: served.append((config, 1))
    )
    monkeypatch.setattr(cli, "_serve_workers", lambda config, url, n: served.append((config, n)))
    config = Config.from_env(environ={"DATABASE_URL": "postgresql://u@h/db"}, env_file=None)
    assert cli.cmd_serve(config, cli.parser().parse_args(["serve", *argv])) == 0
    [(given, started)] = served
    assert started == workers
    assert given.workers == workers
    assert given.writes_bound() == 256 // workers
