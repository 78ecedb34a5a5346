"""One harness for the tests, the scripts and the bench: a PostgreSQL server (the configured one
or a private embedded one), throwaway databases on it, and the service (or any server) as a
subprocess on a free port.

It needs only the service's own dependencies, so tests/ and scripts/ can use it without the
bench extra. It is not part of the installed service: tests/, scripts/ and bench/ import it
from the repository root.
"""

from __future__ import annotations

from .postgres import (
    PgServer,
    create_database,
    database_name,
    drop_database,
    pg_server,
    throwaway_database,
    with_database,
)
from .process import (
    ROOT,
    ServerProcess,
    child_env,
    free_port,
    server_process,
    service,
    service_argv,
    wait_ready,
)

__all__ = [
    "ROOT",
    "PgServer",
    "ServerProcess",
    "child_env",
    "create_database",
    "database_name",
    "drop_database",
    "free_port",
    "pg_server",
    "server_process",
    "service",
    "service_argv",
    "throwaway_database",
    "wait_ready",
    "with_database",
]
