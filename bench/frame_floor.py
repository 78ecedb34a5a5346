"""A measuring aid, not part of `make bench`: the least one frame written to one socket can cost.

The fan-out scenario's pattern at K=1,000 (50 alerts/s, about 190 recipients each, frames of
the service's size), written with the least Python there is: a plain non-blocking `send()`
per socket, no event loop, no framing, no bookkeeping. A child process (uvloop when installed,
as the load generators) reads every socket. The writer's user and kernel CPU per frame, from
getrusage, less what pacing alone costs (the same sleeps with nothing sent). What the service
and the bare broadcast spend per frame above this is their own (README, Performance: Fan-out).

    .venv/bin/python -m bench.frame_floor [SOCKETS [FRAMES_PER_ALERT]]   # default: 1000 190
"""

from __future__ import annotations

import asyncio
import multiprocessing
import random
import resource
import socket
import sys
import time

from .common import install_uvloop, raise_nofile

RATE, SECONDS = 50, 8.0
FRAME = b"\x81\x7e\x00\xc0" + b"x" * 192  # a 196-byte unmasked text frame, as the service's


def read_all(port: int, sockets: int) -> None:
    """The child: open `sockets` connections and read whatever comes, until terminated."""
    raise_nofile()
    install_uvloop()

    class Sink(asyncio.Protocol):
        def data_received(self, data: bytes) -> None:
            pass

    async def run() -> None:
        loop = asyncio.get_running_loop()
        for _ in range(sockets):
            await loop.create_connection(Sink, "127.0.0.1", port)
        await asyncio.Event().wait()

    asyncio.run(run())


def cpu() -> tuple[float, float]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime


def paced(conns: list[socket.socket], per_alert: int) -> tuple[float, float, int]:
    """RATE alerts a second for SECONDS, each written to `per_alert` random sockets (none when
    `per_alert` is 0): (user, kernel) CPU seconds and the frames sent."""
    before, sent = cpu(), 0
    due = time.monotonic()
    for _ in range(int(RATE * SECONDS)):
        due += 1 / RATE
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        for conn in random.sample(conns, per_alert):
            conn.send(FRAME)  # the buffers never fill: the reader keeps up
            sent += 1
    after = cpu()
    return after[0] - before[0], after[1] - before[1], sent


def main() -> None:
    sockets = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    per_alert = int(sys.argv[2]) if len(sys.argv) > 2 else 190
    raise_nofile()
    listener = socket.create_server(("127.0.0.1", 0), backlog=sockets)
    port = listener.getsockname()[1]
    reader = multiprocessing.get_context("spawn").Process(
        target=read_all, args=(port, sockets), daemon=True
    )
    reader.start()
    conns = []
    for _ in range(sockets):
        conn, _addr = listener.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as asyncio's transports
        conn.setblocking(False)
        conns.append(conn)
    time.sleep(1.0)
    for _ in range(2):
        user, kernel, sent = paced(conns, per_alert)
        idle_user, idle_kernel, _ = paced(conns, 0)
        print(
            f"{sent} frames to {sockets} sockets, {per_alert} an alert at {RATE}/s: "
            f"{(user + kernel - idle_user - idle_kernel) / sent * 1e6:.2f} µs CPU per frame "
            f"(user {(user - idle_user) / sent * 1e6:.2f}, kernel "
            f"{(kernel - idle_kernel) / sent * 1e6:.2f}); pacing alone "
            f"{(idle_user + idle_kernel) / (RATE * SECONDS) * 1e6:.0f} µs per alert"
        )
    for conn in conns:
        conn.close()
    reader.terminate()
    reader.join()


if __name__ == "__main__":
    main()
