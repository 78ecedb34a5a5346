"""Admission control for writes: each process bounds the POSTs it has in flight.

Past the bound a request is refused at once with 503 `server_busy` and `Retry-After`, before
its body is read: under overload the refused cost almost nothing, and the admitted are served
at the rate the database commits, instead of every request queueing for a pooled connection
until DB_TIMEOUT and failing late. The check and the count happen with no `await` between
them, so a burst cannot overshoot the bound.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from .errors import ServerBusy


class Admission:
    """At most `limit` writes at once in this process (WRITES_IN_FLIGHT)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_flight = 0
        self.refused = 0

    @contextmanager
    def admit(self) -> Iterator[None]:
        if self.in_flight >= self.limit:
            self.refused += 1
            raise ServerBusy(
                f"this server has {self.limit} writes in flight already; retry shortly"
            )
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1
