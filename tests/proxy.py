"""A TCP proxy in front of PostgreSQL that a test can cut and restore, to play a network fault
or a server that went away, without touching the real server other tests share."""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import parse_qsl, urlsplit, urlunsplit


class FaultyProxy:
    def __init__(self, upstream_url: str) -> None:
        parts = urlsplit(upstream_url)
        query = dict(parse_qsl(parts.query))
        self._unix_path: str | None = None
        if parts.hostname:
            self._upstream = (parts.hostname, parts.port or 5432)
        else:  # a Unix socket directory (the embedded server)
            self._unix_path = f"{query['host']}/.s.PGSQL.{query.get('port', '5432')}"
        self._parts = parts
        self._query = {k: v for k, v in query.items() if k not in ("host", "port")}
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.up = True
        self.port = 0
        self._flowing = asyncio.Event()
        self._flowing.set()

    @property
    def url(self) -> str:
        """The upstream URL, pointed at this proxy."""
        netloc = self._parts.netloc.rsplit("@", 1)
        credentials = netloc[0] + "@" if len(netloc) == 2 else ""
        query = "&".join(f"{k}={v}" for k, v in self._query.items())
        return urlunsplit(
            (self._parts.scheme, f"{credentials}127.0.0.1:{self.port}", self._parts.path, query, "")
        )

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def cut(self) -> None:
        """Drop every connection and refuse new ones, as a dead server or network would."""
        self.up = False
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    def restore(self) -> None:
        self.up = True
        self._flowing.set()

    def freeze(self) -> None:
        """Stop forwarding without closing anything: a network path that silently died."""
        self._flowing.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.up:
            writer.transport.abort()
            return
        try:
            if self._unix_path:
                up_reader, up_writer = await asyncio.open_unix_connection(self._unix_path)
            else:
                up_reader, up_writer = await asyncio.open_connection(*self._upstream)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(source, sink))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while data := await source.read(65536):
                await self._flowing.wait()
                sink.write(data)
                await sink.drain()
        sink.transport.abort()
        self._writers.discard(sink)
