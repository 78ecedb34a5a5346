"""A measuring aid, not part of `make bench`: what one wake-up of an idle event loop costs.

A child process echoes one byte at a time through asyncio on a socket pair; the parent sends
a byte, reads the echo, then sleeps GAP seconds before the next. The child's user and kernel
CPU per echo, from getrusage: back to back (GAP 0) the loop stays warm; at the fan-out
scenario's 20 ms between alerts it goes idle between messages, and the same few lines of
Python cost several times more (caches, and on a virtual machine the idle core's wake-up).
Each alert wakes the service's loop from idle twice (the POST, its commit's answer) and the
bare broadcast's once, which is most of what an alert costs at 50 alerts/s (README,
Performance: Fan-out).

    .venv/bin/python -m bench.cold_wake [GAP_S ...]   # default: 0 0.002 0.02
"""

from __future__ import annotations

import asyncio
import os
import resource
import socket
import sys
import time


def echo(sock: socket.socket, count: int) -> None:
    async def run() -> None:
        reader, writer = await asyncio.open_connection(sock=sock)
        writer.write(await reader.readexactly(1))  # one round first: the loop is set up
        before = resource.getrusage(resource.RUSAGE_SELF)
        for _ in range(count):
            writer.write(await reader.readexactly(1))
        after = resource.getrusage(resource.RUSAGE_SELF)
        user = (after.ru_utime - before.ru_utime) / count * 1e6
        system = (after.ru_stime - before.ru_stime) / count * 1e6
        print(f"  echo: {user:.0f} us user + {system:.0f} us kernel per message", flush=True)
        writer.close()

    asyncio.run(run())


def measure(gap: float) -> None:
    count = 300 if gap >= 0.01 else 3000
    parent, child = socket.socketpair()
    pid = os.fork()
    if pid == 0:
        parent.close()
        echo(child, count)
        os._exit(0)
    child.close()
    print(f"{gap * 1e3:g} ms between messages ({count} messages):", flush=True)
    for _ in range(count + 1):
        parent.send(b"x")
        parent.recv(1)
        if gap:
            time.sleep(gap)
    os.waitpid(pid, 0)
    parent.close()


def main(argv: list[str]) -> None:
    for gap in [float(a) for a in argv] or [0.0, 0.002, 0.02]:
        measure(gap)


if __name__ == "__main__":
    main(sys.argv[1:])
