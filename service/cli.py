"""The command line: `inbox serve`, `inbox migrate`, `inbox tail` (also `python -m service`).

Start-up problems (a malformed setting, an unreachable server, a wrong password) end the
command with one line naming the setting to fix and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import multiprocessing
import os
import signal
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from types import FrameType

import psycopg

from . import __version__, embedded, logs, migrate
from .config import Config, ConfigError

log = logging.getLogger("inbox")


class StartupError(Exception):
    """The service cannot start; the message says what to fix."""


def _exit_on_sigterm() -> None:
    # SIGTERM becomes a normal exit so that `finally` blocks run (the embedded server stops).
    def handler(signum: int, _frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


def check_database(url: str, setting: str, timeout: float) -> None:
    """Connect once, so that a wrong URL fails here with a clear line, not deep in a stack."""
    try:
        with psycopg.connect(url, connect_timeout=max(1, int(timeout))) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        reason = " ".join(str(exc).split())
        raise StartupError(f"{setting}: cannot connect to the database: {reason}") from None


@contextlib.contextmanager
def database(config: Config) -> Iterator[str]:
    """The URL to use: the configured server, or the embedded one (started here, stopped after)."""
    if config.database_url is not None:
        check_database(config.database_url, config.database_url_setting, config.db_timeout)
        yield config.database_url
        return
    try:
        server = embedded.start(config.embedded_data_dir)
    except Exception as exc:
        raise StartupError(
            f"EMBEDDED_DATA_DIR={config.embedded_data_dir}: the embedded PostgreSQL did not start: "
            f"{exc} (see {config.embedded_data_dir}/log)"
        ) from None
    log.info("embedded PostgreSQL running in %s", server.data_dir)
    log.info("inspect it with: %s", server.psql_command())
    try:
        yield server.url
    finally:
        server.stop()
        log.info("embedded PostgreSQL stopped")


def direct_url(config: Config, url: str) -> str:
    """Where migrations run: LISTEN_DATABASE_URL when set (PostgreSQL itself, as LISTEN needs),
    not a transaction pooler in front of it."""
    return config.listen_database_url or url


# -- commands -------------------------------------------------------------------------------


def cmd_migrate(config: Config, args: argparse.Namespace) -> int:
    with database(config) as url:
        url = direct_url(config, url)
        if args.rollback:
            done = migrate.rollback(url, args.rollback)
            print(f"rolled back: {', '.join(done) or 'nothing'}")
        else:
            done = migrate.apply(url)
            print(f"applied: {', '.join(done)}" if done else "database is up to date")
    return 0


def _serve_one(config: Config, database_url: str, reuse_port: bool) -> None:
    from . import server
    from .app import create_app

    server.serve(create_app(config, database_url), config, reuse_port=reuse_port)


def _worker(config: Config, database_url: str) -> None:
    setup_logging(config)
    _serve_one(config, database_url, reuse_port=True)


def cmd_serve(config: Config, args: argparse.Namespace) -> int:
    workers = args.workers or config.workers
    # Each process is told how many share the host (WRITES_IN_FLIGHT=auto divides by it).
    config = replace(
        config,
        workers=workers,
        port=config.port if args.port is None else args.port,
        host=config.host if args.host is None else args.host,
    )
    with database(config) as url:
        if args.migrate or config.embedded:
            migrate.apply(direct_url(config, url))  # logs each migration it applies
        if workers == 1:
            _serve_one(config, url, reuse_port=False)
            return 0
        with shared_metrics_dir():
            _serve_workers(config, url, workers)
    return 0


def _serve_workers(config: Config, url: str, workers: int) -> None:
    context = multiprocessing.get_context("spawn")
    processes = [
        context.Process(target=_worker, args=(config, url), name=f"inbox-worker-{i}")
        for i in range(workers)
    ]
    for process in processes:
        process.start()
    log.info("serving with %d worker processes on http://%s:%d", workers, config.host, config.port)
    try:
        for process in processes:
            process.join()
    finally:
        for process in processes:
            if process.is_alive():
                process.terminate()
        for process in processes:
            process.join(timeout=10)


@contextlib.contextmanager
def shared_metrics_dir() -> Iterator[None]:
    """PROMETHEUS_MULTIPROC_DIR for the workers, so that one scrape reports them all (see
    metrics.py): the operator's own, emptied of an earlier run's files, or a temporary one.
    Set before the workers start: prometheus_client reads it when a worker first imports it."""
    from .metrics import MULTIPROC_DIR_ENV

    configured = os.environ.get(MULTIPROC_DIR_ENV)
    if configured:
        path = Path(configured)
        path.mkdir(parents=True, exist_ok=True)
        for stale in path.glob("*.db"):
            stale.unlink()
        yield
        return
    with tempfile.TemporaryDirectory(prefix="inbox-metrics-") as directory:
        os.environ[MULTIPROC_DIR_ENV] = directory
        try:
            yield
        finally:
            del os.environ[MULTIPROC_DIR_ENV]


def cmd_tail(config: Config, args: argparse.Namespace) -> int:
    from .tail import tail

    url = args.url or f"http://{config.host}:{config.port}"
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(
            tail(
                url,
                args.object_id,
                after=args.after,
                ack=args.ack,
                token=args.token or os.environ.get("INBOX_TOKEN") or None,
                api_key=os.environ.get("INBOX_API_KEY") or None,
            )
        )
    return 0


# -- entry point ----------------------------------------------------------------------------


def setup_logging(config: Config | None = None) -> None:
    """LOG_FORMAT and LOG_LEVEL (text at info level until the settings are read)."""
    if config is None:
        logs.setup()
    else:
        logs.setup(config.log_format, config.log_level)


def _at_least_one(raw: str) -> int:
    value = int(raw)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _after(raw: str) -> int | str:
    if raw == "acked":
        return raw
    if not raw.isdigit():
        raise argparse.ArgumentTypeError("must be an alert id (an integer >= 0) or 'acked'")
    return int(raw)


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="inbox",
        description="Real-time alert inbox on PostgreSQL. Settings come from the environment "
        "and .env (see .env.example).",
    )
    top.add_argument("--version", action="version", version=f"inbox {__version__}")
    sub = top.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the HTTP + WebSocket service")
    serve.add_argument("--host", help="address to bind (default: HOST or 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to bind (default: PORT or 8000)")
    serve.add_argument(
        "--workers",
        type=_at_least_one,
        help="processes sharing the port, each with its own pool and LISTEN connection "
        "(default: WORKERS or 1)",
    )
    serve.add_argument(
        "--migrate",
        action="store_true",
        help="apply pending migrations first (always done for the embedded database)",
    )
    serve.set_defaults(run=cmd_serve)

    mig = sub.add_parser("migrate", help="apply pending migrations (harmless when up to date)")
    mig.add_argument(
        "--rollback", type=int, metavar="N", help="roll back the newest N migrations instead"
    )
    mig.set_defaults(run=cmd_migrate)

    tail = sub.add_parser("tail", help="print an inbox's alerts as they arrive")
    tail.add_argument("object_id", type=int, help="id of the object whose inbox to follow")
    tail.add_argument(
        "--after",
        type=_after,
        default=0,
        help="start after this alert id, or 'acked': after the object's read cursor",
    )
    tail.add_argument(
        "--ack", action="store_true", help="mark each alert printed as read (POST .../ack)"
    )
    tail.add_argument(
        "--token",
        help="the object's inbox_token, needed with INBOX_SECRET (default: $INBOX_TOKEN; an API "
        "key is read from $INBOX_API_KEY)",
    )
    tail.add_argument("--url", help="service URL (default: http://HOST:PORT)")
    tail.set_defaults(run=cmd_tail)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    setup_logging()
    _exit_on_sigterm()
    try:
        config = Config.from_env()
        setup_logging(config)
        return int(args.run(config, args))
    except (ConfigError, StartupError) as exc:
        print(f"inbox: {exc}", file=sys.stderr)
        return 2
