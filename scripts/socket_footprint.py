"""What one idle inbox socket holds in the serving process.

    python scripts/socket_footprint.py [N] [--census] [--trace FRAMES] [--heartbeat S]

Runs the application in this process as `inbox serve` does (service.server.start), on a
throwaway database of DATABASE_URL's server (or the embedded one) with N objects, opens N
WebSockets from a child process (the bench's load generators' client, bench.loadgen.LeanInbox:
the same upgrade, `?after=0`, pings answered), waits a second (with --heartbeat S below 30,
WS_HEARTBEAT=S and 2.5 S + 1 seconds, so that every socket has answered pings), and prints per
socket:
the RSS delta, glibc malloc's in-use delta (C allocations: the rest is Python's own arenas),
Python's allocated blocks; with --census the gc-tracked objects by type (sys.getsizeof), with
--trace the tracemalloc delta by line. Before the measurement 200 sockets are opened and
closed, so that first-use costs are not counted.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import ctypes
import gc
import os
import resource
import subprocess
import sys
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def raise_nofile() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def clients(port: int, n: int) -> None:
    """The child: open n inboxes as the bench's load generators do (LeanInbox: the same
    upgrade, pings answered), say `ready n`, hold them until a line on stdin."""
    from bench.loadgen import LeanInbox, Tally

    raise_nofile()
    gate, tally = asyncio.Semaphore(100), Tally()
    held = []

    async def one(object_id: int) -> None:
        async with gate:
            path = f"/inbox/{object_id}?after=0"
            held.append(await LeanInbox.open("127.0.0.1", port, path, object_id, 0, tally))

    await asyncio.gather(*(one(i + 1) for i in range(n)))
    print("ready", len(held), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    print("pongs", sum(inbox.pongs for inbox in held), "closed", tally.state["closed"], flush=True)


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def malloc_in_use() -> int:
    class Mallinfo2(ctypes.Structure):
        _fields_ = [
            (name, ctypes.c_size_t)
            for name in [
                "arena",
                "ordblks",
                "smblks",
                "hblks",
                "hblkhd",
                "usmblks",
                "fsmblks",
                "uordblks",
                "fordblks",
                "keepcost",
            ]
        ]

    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = Mallinfo2
    info = libc.mallinfo2()
    return int(info.uordblks + info.hblkhd)


def census() -> dict[str, list[int]]:
    # The hub freezes what is alive after a wave of connections (gc.freeze), and
    # gc.get_objects() does not list frozen objects: move them back so they are counted.
    gc.unfreeze()
    out: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0])
    for obj in gc.get_objects():
        kind = type(obj)
        name = f"{kind.__module__}.{kind.__qualname__}"
        if kind.__name__ in ("coroutine", "function"):
            code = getattr(obj, "cr_code", None) or getattr(obj, "__code__", None)
            name += f" {getattr(code, 'co_qualname', '?')}"
        entry = out[name]
        entry[0] += 1
        entry[1] += sys.getsizeof(obj)
    return out


def spawn_clients(port: int, n: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, __file__, "--clients", str(port), str(n)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


async def open_sockets(port: int, n: int) -> subprocess.Popen[str]:
    child = spawn_clients(port, n)
    assert child.stdout is not None
    await asyncio.get_running_loop().run_in_executor(None, child.stdout.readline)
    return child


def close_sockets(child: subprocess.Popen[str]) -> str:
    """Let the child close its sockets; what it says of them (pongs sent, closed by the server)."""
    assert child.stdin is not None
    assert child.stdout is not None
    child.stdin.write("\n")
    child.stdin.flush()
    said = child.stdout.read().strip()
    child.wait()
    return said


async def measure(args: argparse.Namespace, url: str) -> None:
    import asyncpg

    from service import server
    from service.app import create_app
    from service.config import Config

    raise_nofile()
    n = args.n
    conn = await asyncpg.connect(url)
    await conn.execute(
        "INSERT INTO objects (email, phone_number) SELECT 'u' || g || '@example.com', "
        "'+12125550100' FROM generate_series(1, $1) g",
        n,
    )
    await conn.close()
    environ = {
        "DATABASE_URL": url,
        "PORT": "0",
        "WS_MAX_PER_PROCESS": str(n + 10),
        "MAX_CONNECTIONS": str(n + 100),
        "LOG_LEVEL": "warning",
        "WS_HEARTBEAT": str(args.heartbeat),
    }
    config = Config.from_env(environ=environ, env_file=None)
    site = await server.start(create_app(config, url), config)
    try:
        close_sockets(await open_sockets(site.port, 200))  # first-use costs
        await asyncio.sleep(1.0)
        if args.trace:
            tracemalloc.start(args.trace)
        gc.collect()
        rss0, malloc0, blocks0 = rss(), malloc_in_use(), sys.getallocatedblocks()
        census0 = census() if args.census else {}
        snap0 = tracemalloc.take_snapshot() if args.trace else None
        child = await open_sockets(site.port, n)
        # With a heartbeat shorter than the default, every socket answers pings before this.
        await asyncio.sleep(1.0 if args.heartbeat >= 30 else 2.5 * args.heartbeat + 1.0)
        gc.collect()
        rss1, malloc1, blocks1 = rss(), malloc_in_use(), sys.getallocatedblocks()
        print(f"{n} idle sockets, per socket:")
        print(f"  RSS delta            {(rss1 - rss0) / n / 1024:6.2f} KiB")
        print(f"  malloc in use delta  {(malloc1 - malloc0) / n / 1024:6.2f} KiB")
        print(f"  Python blocks delta  {(blocks1 - blocks0) / n:6.1f}")
        if args.census:
            rows = []
            for name, (count, size) in census().items():
                count0, size0 = census0.get(name, (0, 0))
                if size > size0:
                    rows.append(((size - size0) / n, (count - count0) / n, name))
            print(
                "  gc-tracked objects by type (sys.getsizeof; strings, bytes, C buffers not shown):"
            )
            for size, count, name in sorted(rows, reverse=True)[:40]:
                print(f"    {size:7.0f} B {count:5.2f}  {name}")
            print(f"    total {sum(r[0] for r in rows):.0f} B")
        if snap0 is not None:
            snap1 = tracemalloc.take_snapshot()
            stats = snap1.compare_to(snap0, "lineno")
            print(f"  tracemalloc: {sum(s.size_diff for s in stats) / n / 1024:.2f} KiB, by line:")
            for stat in stats[:40]:
                frame = stat.traceback[0]
                print(f"    {stat.size_diff / n:7.0f} B  {frame.filename}:{frame.lineno}")
        print(f"  clients: {close_sockets(child)}")
    finally:
        await site.owner.cleanup()


def main() -> None:
    if sys.argv[1:2] == ["--clients"]:
        asyncio.run(clients(int(sys.argv[2]), int(sys.argv[3])))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("n", type=int, nargs="?", default=10_000)
    parser.add_argument("--census", action="store_true")
    parser.add_argument("--trace", type=int, default=0, metavar="FRAMES")
    parser.add_argument(
        "--heartbeat",
        type=float,
        default=30.0,
        metavar="S",
        help="WS_HEARTBEAT; below 30 the measurement waits until each socket answered pings",
    )
    args = parser.parse_args()

    import testbed
    from service.config import Config

    config = Config.from_env()
    with (
        testbed.pg_server(config.database_url, config.embedded_data_dir) as pg,
        testbed.throwaway_database(pg.admin_url, "inbox_footprint") as url,
    ):
        asyncio.run(measure(args, url))


if __name__ == "__main__":
    main()
