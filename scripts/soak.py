#!/usr/bin/env python3
"""Soak: N minutes of mixed load, sampling the service's RSS, open fds and asyncio tasks.

The service runs as its own process against a throwaway database (DATABASE_URL's server, or a
private embedded PostgreSQL in .pgdata-soak). Load: alerts posted at a steady rate (some to
everyone), objects created now and then, reads, and a pool of inbox sockets that connect, stay
a random while and leave (some politely, some by dropping the connection), while a few
long-lived sockets check that every alert for them arrives exactly once, in order.
RSS and fds are read from /proc/<pid>; tasks and sockets from GET /healthz.

    .venv/bin/python scripts/soak.py --minutes 30

Not part of `make test`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import sys
import time
from collections import Counter
from pathlib import Path

import aiohttp
from harness import (
    ROOT,
    Recipient,
    ServerProcess,
    expected_deliveries,
    service,
    target,
    wait_until,
)


async def churn_socket(
    http: aiohttp.ClientSession,
    base_url: str,
    objects: list[int],
    rng: random.Random,
    stats: Counter[str],
) -> None:
    """One short-lived inbox client: connect, read for a while, leave."""
    oid = rng.choice(objects)
    try:
        ws = await http.ws_connect(f"{base_url}/inbox/{oid}?after={rng.choice([0, 10**6])}")
    except aiohttp.WSServerHandshakeError as exc:
        stats[f"ws refused {exc.status}"] += 1
        return
    except (aiohttp.ClientError, OSError):
        stats["ws connect error"] += 1
        return
    stats["ws opened"] += 1
    with contextlib.suppress(asyncio.TimeoutError, aiohttp.ClientError):
        async with asyncio.timeout(rng.uniform(0.5, 8)):
            async for _ in ws:
                stats["frames to churners"] += 1
    if rng.random() < 0.3:
        transport = ws._response.connection.transport if ws._response.connection else None
        if transport is not None:
            transport.abort()  # leave without a close frame
    await ws.close()


async def run(args: argparse.Namespace, svc: ServerProcess, db_url: str) -> int:
    rng = random.Random(args.seed)
    stats: Counter[str] = Counter()
    timeout = aiohttp.ClientTimeout(total=30)
    samples: list[tuple[float, int, int, int, int, int]] = []
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as http:
        base = svc.url

        async def new_object(i: int) -> int:
            async with http.post(
                f"{base}/object",
                json={"email": f"soak{i}@example.com", "phone_number": "212-555-1234"},
            ) as response:
                stats[f"POST /object {response.status}"] += 1
                return int((await response.json())["id"])

        objects = [await new_object(i) for i in range(args.objects)]
        watched = objects[:3]
        watchers = [Recipient(http, base, oid).start() for oid in watched]

        async def sample(elapsed: float) -> None:
            async with http.get(f"{base}/healthz") as response:
                health = await response.json()
            row = (
                elapsed,
                svc.rss_kib(),
                svc.open_fds(),
                health["tasks"],
                health["sockets"],
                sum(stats[k] for k in stats if k.startswith("POST /alert")),
            )
            samples.append(row)
            print(
                f"{row[0] / 60:6.1f} min  rss {row[1] / 1024:7.1f} MiB  fds {row[2]:5d}  "
                f"tasks {row[3]:5d}  sockets {row[4]:4d}  alerts {row[5]:7d}",
                flush=True,
            )

        loop = asyncio.get_running_loop()
        start = loop.time()
        end = start + args.minutes * 60
        background: set[asyncio.Task[None]] = set()

        async def post_alert(n: int) -> None:
            body = (
                {"text": f"soak {n}", "alert_all": True}
                if rng.random() < 0.02
                else {
                    "text": f"soak {n} " + "x" * rng.randint(0, 400),
                    "object_ids": rng.sample(objects, rng.randint(1, 5)),
                }
            )
            try:
                async with http.post(f"{base}/alert", json=body) as response:
                    stats[f"POST /alert {response.status}"] += 1
                    await response.read()
            except (TimeoutError, aiohttp.ClientError) as exc:
                stats[f"POST /alert {type(exc).__name__}"] += 1

        async def read_some() -> None:
            path = rng.choice(
                [f"/object/{rng.choice(objects)}", "/alert/1", "/readyz", "/object/0"]
            )
            with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
                async with http.get(base + path) as response:
                    stats[f"GET {response.status}"] += 1
                    await response.read()

        def spawn(coro: object) -> None:
            task = asyncio.ensure_future(coro)  # type: ignore[arg-type]
            background.add(task)
            task.add_done_callback(background.discard)

        await sample(0)
        next_sample = start + args.sample
        n = 0
        churners = 0
        while loop.time() < end:
            n += 1
            spawn(post_alert(n))
            if n % 5 == 0:
                spawn(read_some())
            if n % 200 == 0:
                objects.append(await new_object(len(objects)))
            churners = sum(1 for t in background if getattr(t, "churn", False))
            if churners < args.sockets:
                task = asyncio.ensure_future(churn_socket(http, base, objects, rng, stats))
                task.churn = True  # type: ignore[attr-defined]
                background.add(task)
                task.add_done_callback(background.discard)
            if loop.time() >= next_sample:
                await sample(loop.time() - start)
                next_sample += args.sample
            await asyncio.sleep(1 / args.rate)
        await asyncio.gather(*background, return_exceptions=True)
        # Settle: the service should fall back to its idle figures.
        await asyncio.sleep(3)
        await sample(loop.time() - start)

        expected = await expected_deliveries(db_url, watched)
        await wait_until(
            lambda: all(len(w.ids) >= len(expected[w.object_id]) for w in watchers), 30
        )
        for w in watchers:
            await w.stop()

    print()
    print(" minutes |  RSS MiB | open fds | tasks | sockets | alerts posted")
    print("---------+----------+----------+-------+---------+--------------")
    for elapsed, rss, fds, tasks, sockets, alerts in samples:
        print(
            f" {elapsed / 60:7.1f} | {rss / 1024:8.1f} | {fds:8d} | {tasks:5d} | {sockets:7d} |"
            f" {alerts:12d}"
        )
    print()
    for key in sorted(stats):
        print(f"{key:28s} {stats[key]}")
    bad = 0
    for w in watchers:
        want = expected[w.object_id]
        ok = w.ids == want
        bad += not ok
        print(
            f"watcher on object {w.object_id}: {len(w.ids)} received / {len(want)} expected, "
            f"exactly once in order: {ok}"
        )
    # Warm-up (pools, caches, allocator high-water marks) ends well before half-way; a leak
    # keeps growing through the second half.
    middle, last = samples[len(samples) // 2], samples[-1]
    print(
        f"second half ({middle[0] / 60:.1f} -> {last[0] / 60:.1f} min): RSS "
        f"{(last[1] - middle[1]) / 1024:+.1f} MiB, fds {middle[2]} -> {last[2]}, "
        f"tasks {middle[3]} -> {last[3]} (the last sample is idle: load stopped)"
    )
    return 1 if bad else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--rate", type=float, default=50, help="alerts per second")
    parser.add_argument("--sockets", type=int, default=100, help="short-lived sockets kept open")
    parser.add_argument("--objects", type=int, default=50)
    parser.add_argument("--sample", type=float, default=30, help="seconds between samples")
    parser.add_argument("--data-dir", type=Path, default=ROOT / ".pgdata-soak")
    parser.add_argument("--seed", type=int, default=2)
    args = parser.parse_args()
    database_url = os.environ.get("DATABASE_URL") or None
    log_path = ROOT / "soak.log"
    started = time.monotonic()
    with target(database_url, args.data_dir, None) as pg:
        print(f"server: {pg.description}", flush=True)
        with service(pg.url, log_path) as svc:
            print(f"service pid {svc.pid} at {svc.url}; log in {log_path}", flush=True)
            code = asyncio.run(run(args, svc, pg.url))
    print(f"done in {(time.monotonic() - started) / 60:.1f} min")
    return code


if __name__ == "__main__":
    sys.exit(main())
