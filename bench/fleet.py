"""The `listeners` mode of loadgen.py: N forked processes, each with its own plain asyncpg LISTEN
connection, counting the notifications of alerts above a floor (stand-ins for N hosts of the
service), behind the line protocol of common.py."""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from typing import Any

import asyncpg
import orjson

from service.db import SERVER_SETTINGS

from .common import emit, stdin_lines


def _listener_process(dsn: str, channel: str, slot: int, shared: Any) -> None:
    """One stand-in host: its own LISTEN connection, counting alert ids above the floor."""
    ready, floor, stop, counts = shared

    async def run() -> None:
        conn = await asyncpg.connect(dsn, server_settings=SERVER_SETTINGS)

        def on_note(_c: object, _pid: int, _ch: str, payload: object) -> None:
            # The floor is set before the producer starts: nothing it commits can be missed.
            if orjson.loads(str(payload))["alert_id"] > floor.value:
                counts[slot] += 1

        await conn.add_listener(channel, on_note)
        ready.release()
        await asyncio.get_running_loop().run_in_executor(None, stop.wait)
        await conn.close()

    asyncio.run(run())


def listeners_main(cfg: dict[str, Any]) -> None:
    """Fork the fleet first (cheap, asyncpg already imported), then speak the line protocol.

    `progress` answers the per-listener counts so far; `stop` ends the fleet.
    """
    ctx = multiprocessing.get_context("fork")
    n = cfg["n"]
    floor = ctx.Value("q", 2**62, lock=False)
    shared = (ctx.Semaphore(0), floor, ctx.Event(), ctx.Array("q", n, lock=False))
    ready, _floor, stop, counts = shared
    procs = [
        ctx.Process(target=_listener_process, args=(cfg["dsn"], cfg["channel"], i, shared))
        for i in range(n)
    ]
    for proc in procs:
        proc.start()

    async def protocol() -> dict[str, Any]:
        commands = await stdin_lines()
        loop = asyncio.get_running_loop()
        for _ in procs:
            await loop.run_in_executor(None, ready.acquire)
        emit("ready", pids=[p.pid for p in procs])
        go = (await commands.readline()).split()  # "go <alert id floor>"
        floor.value = int(go[1])
        start = time.monotonic()
        while (await commands.readline()).strip() == b"progress":
            emit("progress", counts=list(counts))
        elapsed = time.monotonic() - start
        return {"counts": list(counts), "elapsed": elapsed}

    try:
        emit("done", **asyncio.run(protocol()))
    finally:
        stop.set()
        for proc in procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.kill()
