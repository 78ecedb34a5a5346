#!/usr/bin/env python3
"""Restart PostgreSQL under load and count what the inbox clients lost or got twice.

Runs the service as its own process against a throwaway database, connects inbox sockets,
posts alerts at a steady rate, restarts the server mid-run, then compares, for every socket,
the alerts it received with those its object has in the tables (committed = in the tables,
whatever the POST answered). Exit status 0 when nothing was lost, duplicated or reordered.

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres \
        .venv/bin/python scripts/pg_restart_check.py
        restarts that server with `pg_ctlcluster --skip-systemctl-redirect 15 main restart`
        (or --restart-cmd '...'): every other user of that server sees the restart too.
    .venv/bin/python scripts/pg_restart_check.py
        with no DATABASE_URL: a private embedded PostgreSQL in .pgdata-restart, restarted with
        its own pg_ctl.

Not part of `make test`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import shlex
import sys
import time
from collections import Counter
from pathlib import Path

import aiohttp
import asyncpg
from harness import ROOT, Recipient, expected_deliveries, service, target, wait_until


async def run(args: argparse.Namespace, base_url: str, db_url: str, restart: object) -> int:
    assert callable(restart)
    rng = random.Random(args.seed)
    statuses: Counter[str] = Counter()
    ok_ids: list[int] = []
    latencies: list[float] = []
    timeout = aiohttp.ClientTimeout(total=args.request_timeout)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        objects = []
        for i in range(args.objects):
            async with http.post(
                f"{base_url}/object",
                json={"email": f"user{i}@example.com", "phone_number": "212-555-1234"},
            ) as response:
                objects.append((await response.json())["id"])
        recipients = [
            Recipient(http, base_url, oid).start()
            for oid in objects
            for _ in range(args.sockets_per_object)
        ]
        await asyncio.sleep(1)  # let the sockets connect before the first alert

        async def post(n: int) -> None:
            body = (
                {"text": f"alert {n}", "alert_all": True}
                if rng.random() < 0.1
                else {"text": f"alert {n}", "object_ids": rng.sample(objects, rng.randint(1, 3))}
            )
            started = time.monotonic()
            try:
                async with http.post(f"{base_url}/alert", json=body) as response:
                    payload = await response.json()
                    statuses[str(response.status)] += 1
                    if response.status == 200:
                        ok_ids.append(payload["id"])
            except TimeoutError:
                statuses["timeout"] += 1
            except aiohttp.ClientError as exc:
                statuses[type(exc).__name__] += 1
            latencies.append(time.monotonic() - started)

        loop = asyncio.get_running_loop()
        start = loop.time()
        total = int(args.seconds * args.rate)
        restart_at = args.seconds * args.restart_at
        restart_task: asyncio.Future[None] | None = None
        restart_window = (0.0, 0.0)
        posts = []
        for n in range(total):
            await asyncio.sleep(max(0.0, start + n / args.rate - loop.time()))
            if restart_task is None and loop.time() - start >= restart_at:
                print(f"[{loop.time() - start:5.1f}s] restarting PostgreSQL ...", flush=True)
                began = loop.time() - start
                restart_task = asyncio.ensure_future(asyncio.to_thread(restart))

                def done(_: object, began: float = began) -> None:
                    nonlocal restart_window
                    restart_window = (began, loop.time() - start)
                    print(f"[{loop.time() - start:5.1f}s] PostgreSQL is back", flush=True)

                restart_task.add_done_callback(done)
            posts.append(asyncio.ensure_future(post(n)))
        await asyncio.gather(*posts)
        if restart_task is not None:
            await restart_task
        posted_for = loop.time() - start

        # What committed: the tables, read after the server is back.
        conn = await asyncpg.connect(db_url)
        try:
            committed = [r["id"] for r in await conn.fetch("SELECT id FROM alerts ORDER BY id")]
        finally:
            await conn.close()
        expected = await expected_deliveries(db_url, objects)
        await wait_until(
            lambda: all(len(set(r.ids)) >= len(expected[r.object_id]) for r in recipients),
            args.settle,
        )
        await asyncio.sleep(1)  # a short quiet period in which a duplicate would show
        for recipient in recipients:
            await recipient.stop()

    lost = duplicated = reordered = 0
    for r in recipients:
        want = expected[r.object_id]
        lost += len(set(want) - set(r.ids))
        duplicated += len(r.ids) - len(set(r.ids))
        reordered += r.ids != sorted(r.ids)
    deliveries = sum(len(expected[r.object_id]) for r in recipients)
    unknown = set(ok_ids) - set(committed)
    ambiguous = len(set(committed) - set(ok_ids))
    latencies.sort()
    print()
    print(f"server                      {args.description}")
    print(f"posted                      {total} alerts in {posted_for:.1f}s ({args.rate}/s)")
    print(f"restart window              {restart_window[0]:.1f}s - {restart_window[1]:.1f}s")
    print(f"POST answers                {dict(sorted(statuses.items()))}")
    print(
        f"POST latency p50/p99/max    {latencies[len(latencies) // 2]:.3f}s / "
        f"{latencies[int(len(latencies) * 0.99)]:.3f}s / {latencies[-1]:.3f}s"
    )
    print(
        f"committed (alerts table)    {len(committed)}  (200s: {len(ok_ids)}, committed "
        f"but not answered 200: {ambiguous}, 200 but not in table: {len(unknown)})"
    )
    print(
        f"sockets                     {len(recipients)} on {len(objects)} objects, "
        f"reconnects {sum(r.reconnects for r in recipients)}, refused "
        f"{dict(sum((Counter(r.refusals) for r in recipients), Counter()))}"
    )
    print(f"deliveries expected         {deliveries}")
    print(f"lost                        {lost}")
    print(f"duplicated                  {duplicated}")
    print(f"sockets out of id order     {reordered}")
    bad_status = {k: v for k, v in statuses.items() if k not in {"200", "503"}}
    if bad_status:
        print(f"answers other than 200/503: {bad_status}")
    return 0 if not (lost or duplicated or reordered or unknown or bad_status) else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=30, help="how long alerts are posted")
    parser.add_argument("--rate", type=float, default=20, help="alerts per second")
    parser.add_argument("--restart-at", type=float, default=0.4, help="fraction of the run")
    parser.add_argument("--objects", type=int, default=10)
    parser.add_argument("--sockets-per-object", type=int, default=2)
    parser.add_argument("--settle", type=float, default=30, help="seconds to wait for delivery")
    parser.add_argument("--request-timeout", type=float, default=30)
    parser.add_argument("--restart-cmd", help="command restarting DATABASE_URL's server")
    parser.add_argument(
        "--down-seconds",
        type=float,
        default=0,
        help="instead of a restart: stop the server, keep it down this long, start it",
    )
    parser.add_argument("--data-dir", type=Path, default=ROOT / ".pgdata-restart")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    database_url = os.environ.get("DATABASE_URL") or None
    restart_cmd = shlex.split(args.restart_cmd) if args.restart_cmd else None
    log_path = ROOT / "pg_restart_check.log"
    with target(database_url, args.data_dir, restart_cmd, args.down_seconds) as pg:
        args.description = pg.description + (
            f", down for {args.down_seconds:g}s" if args.down_seconds else ""
        )
        with service(pg.url, log_path, LISTEN_RECONNECT_MAX="1", DB_TIMEOUT="5") as svc:
            print(f"service pid {svc.pid} at {svc.url}; log in {log_path}", flush=True)
            with contextlib.suppress(KeyboardInterrupt):
                return asyncio.run(run(args, svc.url, pg.url, pg.restart))
    return 1


if __name__ == "__main__":
    sys.exit(main())
