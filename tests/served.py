"""The service as `inbox serve` runs it (service/server.py), on a free port of this test's loop."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from service import server
from service.app import create_app

from .conftest import make_config

Serve = Callable[..., Awaitable[server.Site]]


@pytest.fixture
async def serve(database_url: str) -> AsyncIterator[Serve]:
    """`await serve(SETTING="value", ...)` starts one; its site has `.port` and `.owner.gate`."""
    sites: list[server.Site] = []

    async def start(**overrides: str) -> server.Site:
        config = make_config(database_url, HOST="127.0.0.1", PORT="0", **overrides)
        site = await server.start(create_app(config, database_url), config)
        sites.append(site)
        return site

    yield start
    for site in sites:
        await site.owner.cleanup()
