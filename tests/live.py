"""A real HTTP server for synchronous tests: the app on a random port, its loop in a thread.

Hypothesis and Schemathesis drive synchronous test functions; they talk to this server over
plain HTTP (requests), exactly as an outside client would.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from aiohttp import web

from service import server
from service.app import create_app
from service.config import Config

T = TypeVar("T")


class LiveServer:
    def __init__(self, config: Config, database_url: str) -> None:
        self.config = config
        self.loop = asyncio.new_event_loop()
        self.app = create_app(config, database_url)
        self.runner = web.AppRunner(self.app, access_log=None, **server.handler_settings(config))
        self.url = ""
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        """Run `coro` on the server's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start(self) -> None:
        self._thread.start()

        async def up() -> str:
            await self.runner.setup()
            site = web.TCPSite(self.runner, "127.0.0.1", 0)
            await site.start()
            server = site._server
            assert server is not None
            port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            return f"http://127.0.0.1:{port}"

        self.url = self.run(up())

    def stop(self) -> None:
        try:
            self.run(self.runner.cleanup())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
            self.loop.close()


@contextmanager
def live_server(config: Config, database_url: str) -> Iterator[LiveServer]:
    server = LiveServer(config, database_url)
    server.start()
    try:
        yield server
    finally:
        server.stop()
