"""The orchestrator behind `make bench`: database, service, scenarios, report.

One run: start a fresh database (the embedded PostgreSQL in `.pgdata-bench/`, or a throwaway
database on the server in DATABASE_URL), migrate it, start `inbox serve` as a subprocess with 1
and then 2 worker processes, drive every scenario with load generators in their own processes
(loadgen.py), and measure each figure next to its reference in the same run. CPU seconds of
the service, PostgreSQL and the load generators are read with psutil over their process trees.
Results go to `bench/results/` (report.py).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import secrets
import signal
import socket
import statistics
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import asyncpg
import orjson
import psutil

from service import embedded, migrate

from . import report
from .common import CpuMeter, Tree, raise_nofile, sample, summarize_ms

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
EMBEDDED_DIR = ROOT / ".pgdata-bench"
SEED_OBJECTS = """
INSERT INTO objects (email, phone_number)
SELECT 'seed' || g || '@example.com', '+12125550100' FROM generate_series(1, $1) AS g
RETURNING id
"""
SEED_BACKLOG = """
WITH a AS (
    INSERT INTO alerts (text, number_of_objects_receiving_alert)
    SELECT 'Backlog alert number ' || g || ': severe weather warning for your area.', 1
    FROM generate_series(1, $2) AS g
    RETURNING id
)
INSERT INTO object_alerts (object_id, alert_id) SELECT $1, id FROM a
"""
NO_LOCK = """
CREATE OR REPLACE FUNCTION alerts_assign_id() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.id := nextval('alerts_id_seq');
    RETURN NEW;
END
$$
"""


SERVICE_SCENARIOS = frozenset({"fanout", "objects", "alerts", "storm", "alert_all"})
SCENARIOS = SERVICE_SCENARIOS | {"lock", "scaleout"}  # these two need no service


@dataclass(frozen=True)
class Plan:
    """Sizes and durations; `--quick` shrinks them to a smoke run of under two minutes."""

    quick: bool
    workers: tuple[int, ...] = (1, 2)
    phase: float = 4.0  # seconds per request-rate phase
    concurrency: int = 32  # requests in flight, service and reference alike
    fanout_k: tuple[int, ...] = (1_000, 10_000)
    fanout_seconds: float = 8.0
    fanout_frames_per_s: int = 10_000
    alert_rate: float = 50.0  # alerts/s in the fan-out
    storm_rate: float = 1_000.0
    storm_seconds: float = 3.0
    backlog: int = 10_000
    backlog_repeats: int = 5
    all_objects: int = 100_000
    all_sockets: int = 1_000
    all_repeats: int = 4
    listeners: tuple[int, ...] = (1, 10, 100)
    listen_seconds: float = 3.0
    lock_rounds: int = 3
    only: frozenset[str] = SCENARIOS
    profile: bool = False  # run the service under py-spy (its CPU then includes py-spy's)

    def runs(self, name: str) -> bool:
        return name in self.only

    @classmethod
    def make(cls, quick: bool, only: frozenset[str], workers: tuple[int, ...]) -> Plan:
        if not quick:
            return cls(quick=False, only=only, workers=workers)
        return cls(
            quick=True,
            only=only,
            workers=workers,
            phase=1.2,
            fanout_k=(1_000,),
            fanout_seconds=2.5,
            storm_seconds=1.0,
            backlog_repeats=3,
            all_repeats=2,
            listen_seconds=1.2,
            lock_rounds=1,
        )


@dataclass
class Results:
    plan: Plan
    figures: list[dict[str, Any]] = field(default_factory=list)
    checks: list[dict[str, Any]] = field(default_factory=list)
    distributions: dict[str, list[float]] = field(default_factory=dict)
    machine: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def figure(self, **data: Any) -> dict[str, Any]:
        self.figures.append(data)
        return data

    def check(self, name: str, value: float, target: str, met: bool, workers: int | None) -> None:
        self.checks.append(
            {"name": name, "workers": workers, "value": value, "target": target, "met": met}
        )


def progress(text: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def machine() -> dict[str, Any]:
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_avg_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def with_database(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


# -- child processes --------------------------------------------------------------------------


def child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DB_", "DATABASE_URL"))}
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra)
    return env


class Worker:
    """A load-generator (or listener fleet) process speaking the line protocol of common.py."""

    def __init__(self, proc: asyncio.subprocess.Process, mode: str) -> None:
        self.proc = proc
        self.mode = mode
        self.tree = Tree(proc.pid)

    @classmethod
    async def start(cls, which: str, log: Any, timeout: float = 120, **cfg: Any) -> Worker:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.loadgen",
            which,
            orjson.dumps(cfg).decode(),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=log,
            env=child_env(),
            cwd=ROOT,
            limit=1 << 28,
        )
        worker = cls(proc, which)
        worker.ready = await worker.event("ready", timeout)
        return worker

    async def event(self, name: str, timeout: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        while True:
            line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
            if not line:
                raise RuntimeError(f"load generator {self.mode} exited (see workers.log)")
            data: dict[str, Any] = orjson.loads(line)
            if data["event"] == name:
                return data

    async def send(self, command: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command.encode() + b"\n")
        await self.proc.stdin.drain()

    async def finish(self, timeout: float = 120) -> dict[str, Any]:
        """The results; the process stays until `close()` so that its CPU can still be read."""
        try:
            return await self.event("done", timeout)
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ConnectionError):
                await self.send("exit")
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
        await self.proc.wait()


@dataclass
class Server:
    """The service (or the bare broadcast server) running as a subprocess on a free port."""

    proc: asyncio.subprocess.Process
    url: str
    name: str

    @property
    def tree(self) -> Tree:
        return Tree(self.proc.pid)


@contextlib.asynccontextmanager
async def serve(
    argv: list[str], env: dict[str, str], log: Any, port: int, name: str, ready_path: str
) -> AsyncIterator[Server]:
    proc = await asyncio.create_subprocess_exec(
        *argv, env=env, cwd=ROOT, stdout=log, stderr=log, start_new_session=True
    )
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(600):
                if proc.returncode is not None:
                    raise RuntimeError(f"{name} exited with {proc.returncode} (see service.log)")
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(url + ready_path) as resp:
                        if resp.status in (200, 404, 405):
                            break
                await asyncio.sleep(0.1)
            else:
                raise RuntimeError(f"{name} did not become ready")
        yield Server(proc, url, name)
    finally:
        if proc.returncode is None:
            # py-spy writes its profile on SIGINT; the service treats it like SIGTERM.
            os.killpg(proc.pid, signal.SIGINT if "py-spy" in argv[0] else signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), 15)
        # Whatever is left of its process group (a worker, py-spy's child) goes too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()


def service_argv(workers: int, port: int, profile: bool = False) -> list[str]:
    """`inbox serve`; with `profile`, under py-spy (collapsed stacks in bench/results/)."""
    spy = [
        str(Path(sys.executable).parent / "py-spy"),
        "record",
        "--subprocesses",
        "--format",
        "raw",
        "--rate",
        "250",
        "-o",
        str(RESULTS / f"profile-workers{workers}.txt"),
        "--",
    ]
    return [
        *(spy if profile else []),
        sys.executable,
        "-m",
        "service",
        "serve",
        "--workers",
        str(workers),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]


# -- the database -------------------------------------------------------------------------------


@dataclass
class BenchDatabase:
    admin_url: str  # a database to run CREATE/DROP DATABASE from
    url: str  # this run's database, migrated
    pg: Tree  # the postmaster and its backends
    max_connections: int


def postmaster_pid(backend_pid: int) -> int:
    return psutil.Process(backend_pid).ppid()


async def server_facts(url: str) -> tuple[int, int]:
    conn = await asyncpg.connect(url)
    try:  # the backend's parent is the postmaster; read it while the backend lives
        postmaster = postmaster_pid(await conn.fetchval("SELECT pg_backend_pid()"))
        max_conn = int(await conn.fetchval("SHOW max_connections"))
    finally:
        await conn.close()
    return postmaster, max_conn


@contextlib.contextmanager
def database_server() -> Iterator[tuple[str, str]]:
    """(admin URL, kind): DATABASE_URL's server, or the embedded one with room for 300 clients."""
    configured = os.environ.get("DATABASE_URL")
    if configured:
        yield configured, "DATABASE_URL server"
        return
    server = embedded.start(EMBEDDED_DIR, database="postgres")
    url = server.url
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        current = conn.execute("SHOW max_connections").fetchone()
        if current is not None and int(current[0]) < 300:
            # 100 LISTEN processes + pools + load generators do not fit the default 100.
            conn.execute("ALTER SYSTEM SET max_connections = 300")
            restart = True
        else:
            restart = False
    if restart:
        server.stop()
        server = embedded.start(EMBEDDED_DIR, database="postgres")
        url = server.url
    try:
        yield url, f"embedded PostgreSQL in {EMBEDDED_DIR.name}/"
    finally:
        server.stop()


async def create_database(admin_url: str, suffix: str) -> str:
    name = f"inbox_bench_{os.getpid()}_{suffix}_{secrets.token_hex(3)}"
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    url = with_database(admin_url, name)
    await asyncio.to_thread(migrate.apply, url)
    return url


async def drop_database(admin_url: str, url: str) -> None:
    name = urlsplit(url).path.lstrip("/")
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def sql(url: str, query: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(url)
    try:
        return list(await conn.fetch(query, *args))
    finally:
        await conn.close()


BLOCKERS = """
SELECT pid, state, application_name, now() - xact_start AS in_transaction, left(query, 120) AS query
FROM pg_stat_activity WHERE pid = ANY (pg_blocking_pids($1))
"""


async def truncate(url: str) -> None:
    """TRUNCATE waits for every transaction that touched the tables: never forever. Once, a
    full run stalled here for 13 minutes; if it happens again, say who held the lock."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("SET lock_timeout = '60s'")
        waiting = asyncio.ensure_future(conn.execute("TRUNCATE object_alerts, alerts, objects"))
        done, _ = await asyncio.wait({waiting}, timeout=10)
        if not done:
            watcher = await asyncpg.connect(url)
            try:
                pid = conn.get_server_pid()
                for row in await watcher.fetch(BLOCKERS, pid):
                    progress(f"TRUNCATE waits for {dict(row)}")
            finally:
                await watcher.close()
        await waiting
    finally:
        await conn.close()


async def reset(url: str, objects: int = 0) -> list[int]:
    """Empty tables (sequences go on, so alert ids keep rising) and `objects` fresh objects."""
    await truncate(url)
    if not objects:
        return []
    ids = [row["id"] for row in await sql(url, SEED_OBJECTS, objects)]
    await analyze(url, "objects")
    return ids


async def analyze(url: str, tables: str) -> None:
    """Statistics as autovacuum would have them in steady state, right after a bulk load.

    Only of tables that hold their rows: cached generic plans follow the statistics, so
    without them pooled connections read a 10,000-alert backlog in seconds instead of
    milliseconds (inbox_page), and with statistics of an empty `alerts` every new alert
    pays a sequential scan of it (the foreign-key check) until the next ANALYZE.
    """
    await sql(url, f"ANALYZE {tables}")


async def last_alert_id(url: str) -> int:
    rows = await sql(url, "SELECT coalesce(max(id), 0) AS id FROM alerts")
    return int(rows[0]["id"])


# -- scenarios ----------------------------------------------------------------------------------


class Bench:
    def __init__(self, plan: Plan, db: BenchDatabase, results: Results) -> None:
        self.plan = plan
        self.db = db
        self.results = results
        RESULTS.mkdir(parents=True, exist_ok=True)
        self.log = (RESULTS / "workers.log").open("ab")
        self.service_log = (RESULTS / "service.log").open("ab")

    def meter(self, server: Server | None, workers: list[Worker]) -> CpuMeter:
        return CpuMeter(
            {
                "service": [server.tree] if server else [],
                "postgres": [self.db.pg],
                "loadgen": [w.tree for w in workers],
            }
        )

    async def requests(
        self,
        server: Server | None,
        *,
        target: str,
        kind: str,
        mode: str,
        rate: float = 0,
        dsn: str = "",
        pool: int = 10,
        recipients: tuple[int, int] = (1, 1),
    ) -> dict[str, Any]:
        worker = await Worker.start(
            "requests",
            self.log,
            target=target,
            kind=kind,
            mode=mode,
            rate=rate,
            duration=self.plan.phase,
            concurrency=self.plan.concurrency,
            pool=pool,
            dsn=dsn or self.db.url,
            url=server.url if server else "",
            recipients=recipients,
        )
        meter = self.meter(server, [worker])
        meter.start()
        await worker.send("go")
        result = await worker.finish()
        cpu = meter.stop()
        await worker.close()
        lat = result.pop("latencies")
        return {
            "throughput_rps": result["completed"] / result["elapsed"],
            **summarize_ms(lat),
            **cpu,
            "errors": result["errors"],
            "first_error": result["first_error"],
            "_latencies": lat,
        }

    def record(
        self, scenario: str, label: str, workers: int | None, data: dict[str, Any], **extra: Any
    ) -> dict[str, Any]:
        lat = data.pop("_latencies", None)
        if lat is not None:
            who = "" if workers is None else f", {workers} worker{'s' if workers > 1 else ''}"
            self.results.distributions[f"{scenario} | {label}{who}"] = sample(sorted(lat))
        return self.results.figure(
            scenario=scenario, target=label, workers=workers, **data, **extra
        )

    async def request_pair(
        self,
        server: Server,
        workers: int,
        kind: str,
        scenario: str,
        recipients: tuple[int, int] = (1, 1),
    ) -> tuple[float, float]:
        pool = 10 * workers  # the service's pools: DB_POOL_MAX_SIZE per worker
        caps = {}
        for target in ("service", "reference"):
            progress(f"{scenario} workers={workers}: {target} capacity ...")
            data = await self.requests(
                server if target == "service" else None,
                target="http" if target == "service" else "raw",
                kind=kind,
                mode="saturate",
                pool=pool,
                recipients=recipients,
            )
            data.pop("_latencies")
            caps[target] = data["throughput_rps"]
            self.record(
                scenario,
                f"{target} capacity ({self.plan.concurrency} in flight)",
                workers,
                data,
                lost=0,
                duplicated=0,
            )
        rate = round(0.5 * caps["service"], -1) or 10
        for target in ("service", "reference"):
            progress(f"{scenario} workers={workers}: {target} at {rate:.0f}/s open loop ...")
            data = await self.requests(
                server if target == "service" else None,
                target="http" if target == "service" else "raw",
                kind=kind,
                mode="rate",
                rate=rate,
                pool=pool,
                recipients=recipients,
            )
            self.record(scenario, f"{target} at {rate:.0f}/s", workers, data, lost=0, duplicated=0)
        return caps["service"], caps["reference"]

    async def scenario_objects(self, server: Server, workers: int) -> None:
        await reset(self.db.url)
        service, reference = await self.request_pair(server, workers, "object", "1 POST /object")
        ratio = service / reference
        self.results.check(
            "1 POST /object capacity / raw asyncpg INSERT",
            round(ratio, 3),
            ">= 0.7",
            ratio >= 0.7,
            workers,
        )
        progress(
            f"1 POST /object workers={workers}: {service:.0f}/s vs raw {reference:.0f}/s "
            f"= {ratio:.2f}"
        )

    async def scenario_alerts(self, server: Server, workers: int) -> None:
        ids = await reset(self.db.url, 1_000)
        span = (ids[0], ids[-1])
        service, reference = await self.request_pair(
            server, workers, "alert", "2 POST /alert (10 recipients)", recipients=span
        )
        ratio = service / reference
        self.results.check(
            "2 POST /alert capacity / NOTIFY-serialised ceiling (raw tx)",
            round(ratio, 3),
            ">= 0.9",
            ratio >= 0.9,
            workers,
        )
        progress(
            f"2 POST /alert workers={workers}: {service:.0f}/s vs raw {reference:.0f}/s "
            f"= {ratio:.2f}"
        )

    async def scenario_lock_cost(self) -> None:
        """The same raw transaction on two scratch databases, with and without the advisory
        lock, alternated `lock_rounds` times so that a noisy neighbour hits both alike."""
        variants = {"advisory lock (as migrated)": "", "plain nextval (lock removed)": NO_LOCK}
        urls: dict[str, str] = {}
        try:
            for label, ddl in variants.items():
                urls[label] = await create_database(self.db.admin_url, "lock")
                if ddl:
                    await sql(urls[label], ddl)
            ids = {label: await reset(url, 1_000) for label, url in urls.items()}
            caps: dict[str, list[float]] = {label: [] for label in variants}
            for round_ in range(self.plan.lock_rounds):
                for label, url in urls.items():
                    progress(f"2 lock cost: raw transaction, {label} (round {round_ + 1}) ...")
                    data = await self.requests(
                        None,
                        target="raw",
                        kind="alert",
                        mode="saturate",
                        dsn=url,
                        pool=10,
                        recipients=(ids[label][0], ids[label][-1]),
                    )
                    data.pop("_latencies")
                    caps[label].append(data["throughput_rps"])
                    self.record(
                        "2b advisory-lock cost (raw tx, scratch db)",
                        f"{label}, round {round_ + 1}",
                        None,
                        data,
                        lost=0,
                        duplicated=0,
                    )
            with_lock, without = (statistics.median(c) for c in caps.values())
            self.results.notes.append(
                f"Advisory lock in alerts_assign_id: raw alert transactions {with_lock:.0f}/s "
                f"with the lock vs {without:.0f}/s with a plain nextval (medians of "
                f"{self.plan.lock_rounds} alternated rounds; lock cost "
                f"{(1 - with_lock / without) * 100:+.1f}%) at {self.plan.concurrency} in "
                "flight, pool 10, no listener."
            )
        finally:
            for url in urls.values():
                await drop_database(self.db.admin_url, url)

    async def fanout(
        self, server: Server, workers: int | None, k: int, footprint: bool
    ) -> dict[str, Any]:
        """K sockets, alerts at a steady rate to random subsets and every n-th to all."""
        plan = self.plan
        ids = await reset(self.db.url, k) if server.name == "service" else list(range(1, k + 1))
        after = await last_alert_id(self.db.url) if server.name == "service" else 0
        rss_before = server.tree.rss_bytes()
        groups = 2 if k > 2_000 else 1
        clients = await asyncio.gather(
            *(
                Worker.start(
                    "clients",
                    self.log,
                    url=server.url,
                    after=after,
                    object_ids=ids[g::groups],
                    connect_concurrency=100,
                )
                for g in range(groups)
            )
        )
        connected = sum(c.ready["connected"] for c in clients)
        await asyncio.sleep(1.0)  # idle: let the handshakes' garbage go
        rss_after = server.tree.rss_bytes()
        # Frames/s: a fifth from alert_all, the rest from subsets of `subset` recipients.
        all_period = 5 * k / plan.fanout_frames_per_s  # seconds between alert_all posts
        all_every = max(2, round(plan.alert_rate * all_period))
        subset = max(1, round(0.8 * plan.fanout_frames_per_s / plan.alert_rate))
        poster = await Worker.start(
            "poster",
            self.log,
            url=server.url,
            object_ids=ids,
            subset=min(subset, k),
            all_every=all_every,
            rate=plan.alert_rate,
            duration=plan.fanout_seconds,
        )
        meter = self.meter(server, [poster, *clients])
        meter.start()
        started = time.monotonic()
        await poster.send("go")
        posted = await poster.finish()
        records = posted["records"]
        expected = sum(connected if r[2] is None else len(r[2]) for r in records)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            await asyncio.gather(*(c.send("progress") for c in clients))
            got = sum([(await c.event("progress", 30))["frames"] for c in clients])
            if got >= expected:
                break
            await asyncio.sleep(0.1)
        wall = time.monotonic() - started
        cpu = meter.stop()
        await poster.close()
        await asyncio.gather(*(c.send("stop") for c in clients))
        outs = await asyncio.gather(*(c.finish() for c in clients))
        await asyncio.gather(*(c.close() for c in clients))
        sent_at = {r[0]: r[1] for r in records}
        to = {r[0]: (None if r[2] is None else set(r[2])) for r in records}
        e2e: list[float] = []
        e2e_subsets: list[float] = []  # without the frames of alert_all bursts
        seen: set[tuple[int, int]] = set()
        duplicated = unexpected = 0
        for out in outs:
            for oid, aid, t in zip(out["object_ids"], out["alert_ids"], out["times"], strict=True):
                if aid not in sent_at or (to[aid] is not None and oid not in to[aid]):
                    unexpected += 1
                    continue
                if (oid, aid) in seen:
                    duplicated += 1
                    continue
                seen.add((oid, aid))
                e2e.append(t - sent_at[aid])
                if to[aid] is not None:
                    e2e_subsets.append(t - sent_at[aid])
        lost = expected - len(seen)
        frames = len(e2e)
        data = {
            "throughput_rps": posted["completed"] / posted["elapsed"],
            "frames_per_s": frames / wall,
            **summarize_ms(e2e),
            **cpu,
            "lost": lost,
            "duplicated": duplicated + unexpected + sum(o["out_of_order"] for o in outs),
            "errors": posted["errors"] + sum(o["connect_errors"] for o in outs),
            "first_error": posted["first_error"],
            "sockets": connected,
            "frames_per_service_cpu_s": frames / cpu["cpu_service_s"]
            if cpu["cpu_service_s"]
            else None,
            "post_p50_ms": summarize_ms(posted["latencies"])["p50_ms"],
            "subset_frames_p50_ms": summarize_ms(e2e_subsets)["p50_ms"],
            "subset_frames_p99_ms": summarize_ms(e2e_subsets)["p99_ms"],
            "_latencies": e2e,
        }
        if footprint:
            data["rss_per_idle_socket_kib"] = (rss_after - rss_before) / max(connected, 1) / 1024
        label = "service" if server.name == "service" else "bare aiohttp broadcast (no db)"
        fig = self.record(f"3 fan-out K={k}", label, workers, data)
        progress(
            f"3 fan-out K={k} {label} workers={workers}: {fig['frames_per_s']:.0f} frames/s "
            f"p50={fig['p50_ms']:.1f} ms p99={fig['p99_ms']:.1f} ms lost={lost} "
            f"dup={fig['duplicated']}"
        )
        await asyncio.sleep(1.0)  # the server notices the closed sockets
        return fig

    async def bare_fanout(self, k: int) -> dict[str, Any]:
        port = free_port()
        async with serve(
            [sys.executable, "-m", "bench.broadcast", str(port)],
            child_env(),
            self.service_log,
            port,
            "bare",
            "/alert",
        ) as bare:
            return await self.fanout(bare, None, k, footprint=True)

    async def scenario_storm(self, server: Server, workers: int) -> None:
        plan = self.plan
        n = int(plan.storm_rate * plan.storm_seconds)
        ids = await reset(self.db.url, n + 1)
        progress(
            f"4 connect storm workers={workers}: {plan.storm_rate:.0f}/s for "
            f"{plan.storm_seconds:.0f} s ..."
        )
        storm = await Worker.start(
            "storm",
            self.log,
            url=server.url,
            object_ids=ids[:n],
            rate=plan.storm_rate,
            duration=plan.storm_seconds,
        )
        meter = self.meter(server, [storm])
        meter.start()
        await storm.send("go")
        out = await storm.finish()
        cpu = meter.stop()
        await storm.close()
        data = {
            "throughput_rps": out["completed"] / out["elapsed"],
            **summarize_ms(out["latencies"]),
            **cpu,
            "lost": 0,
            "duplicated": 0,
            "errors": out["errors"],
            "first_error": out["first_error"],
            "_latencies": out["latencies"],
        }
        self.record(
            "4 connect storm (handshake)", f"service, {plan.storm_rate:.0f} new/s", workers, data
        )
        await asyncio.sleep(1.0)
        # One inbox that already holds `backlog` alerts.
        await sql(self.db.url, SEED_BACKLOG, ids[-1], plan.backlog)
        await analyze(self.db.url, "alerts, object_alerts")
        await asyncio.sleep(0.5)  # the listener skims the burst of notifications
        progress(f"4 backlog workers={workers}: {plan.backlog} alerts x{plan.backlog_repeats} ...")
        reader = await Worker.start(
            "backlog",
            self.log,
            url=server.url,
            object_id=ids[-1],
            expect=plan.backlog,
            repeats=plan.backlog_repeats,
        )
        meter = self.meter(server, [reader])
        meter.start()
        await reader.send("go")
        out = await reader.finish()
        cpu = meter.stop()
        await reader.close()
        data = {
            "throughput_rps": plan.backlog * len(out["latencies"]) / sum(out["latencies"]),
            **summarize_ms(out["latencies"]),
            **cpu,
            "lost": out["lost"],
            "duplicated": out["duplicated"],
            "errors": 0,
            "_latencies": out["latencies"],
        }
        fig = self.record("4 backlog of 10,000 (time to all)", "service", workers, data)
        self.results.check(
            "4 backlog of 10,000 received (p50 of repeats)",
            round(fig["p50_ms"], 1),
            "< 300 ms",
            fig["p50_ms"] < 300,
            workers,
        )
        progress(
            f"4 backlog workers={workers}: p50={fig['p50_ms']:.0f} ms max={fig['max_ms']:.0f} ms"
        )

    async def scenario_alert_all(self, server: Server, workers: int) -> None:
        plan = self.plan
        progress(f"5 alert_all over {plan.all_objects} objects workers={workers} ...")
        ids = await reset(self.db.url, plan.all_objects)
        after = await last_alert_id(self.db.url)
        step = len(ids) // plan.all_sockets
        watched = ids[::step][: plan.all_sockets]
        client = await Worker.start(
            "clients", self.log, url=server.url, after=after, object_ids=watched
        )
        poster = await Worker.start(
            "poster",
            self.log,
            url=server.url,
            object_ids=watched,
            subset=1,
            all_every=1,
            rate=0.5,
            duration=plan.all_repeats / 0.5,
        )
        meter = self.meter(server, [poster, client])
        meter.start()
        await poster.send("go")
        posted = await poster.finish()
        await asyncio.sleep(2.0)
        cpu = meter.stop()
        await poster.close()
        await client.send("stop")
        out = await client.finish()
        await client.close()
        sent_at = {r[0]: r[1] for r in posted["records"]}
        last_at: dict[int, float] = {}
        got: dict[int, set[int]] = {}
        for oid, aid, t in zip(out["object_ids"], out["alert_ids"], out["times"], strict=True):
            last_at[aid] = max(last_at.get(aid, 0.0), t)
            got.setdefault(aid, set()).add(oid)
        reach = [last_at[a] - sent_at[a] for a in sent_at if a in last_at]
        lost = sum(out["connected"] - len(got.get(a, ())) for a in sent_at)
        post = summarize_ms(posted["latencies"])
        data = {
            "throughput_rps": posted["completed"] / posted["elapsed"],
            **post,
            **cpu,
            "lost": lost,
            "duplicated": len(out["alert_ids"]) - sum(map(len, got.values())),
            "errors": posted["errors"],
            "first_error": posted["first_error"],
            "last_socket_p50_ms": summarize_ms(reach)["p50_ms"],
            "last_socket_max_ms": summarize_ms(reach)["max_ms"],
            "sockets": out["connected"],
            "_latencies": posted["latencies"],
        }
        fig = self.record(
            f"5 alert_all over {plan.all_objects:,} (POST = committed)", "service", workers, data
        )
        self.results.check(
            "5 alert_all over 100k committed (POST max)",
            round(fig["max_ms"], 1),
            "< 1000 ms",
            fig["max_ms"] < 1000,
            workers,
        )
        progress(
            f"5 alert_all workers={workers}: POST p50={fig['p50_ms']:.0f} ms "
            f"max={fig['max_ms']:.0f} ms, last socket max={fig['last_socket_max_ms']:.0f} ms"
            f" lost={lost}"
        )

    async def scenario_scale_out(self) -> None:
        await reset(self.db.url, 1_000)
        for n in self.plan.listeners:
            if n + 20 > self.db.max_connections:
                self.results.notes.append(
                    f"7: {n} listeners skipped: max_connections is {self.db.max_connections}"
                )
                continue
            progress(f"7 scale-out: {n} LISTEN processes ...")
            fleet = await Worker.start(
                "listeners", self.log, dsn=self.db.url, channel="alerts", n=n
            )
            producer = await Worker.start(
                "requests",
                self.log,
                target="raw",
                kind="alert",
                mode="saturate",
                duration=self.plan.listen_seconds,
                concurrency=8,
                pool=8,
                dsn=self.db.url,
                recipients=(1, 1_000),
                url="",
                rate=0,
            )
            # The fleet's tree holds its forked listeners.
            meter = CpuMeter({"postgres": [self.db.pg], "loadgen": [producer.tree, fleet.tree]})
            before = await last_alert_id(self.db.url)
            meter.start()
            await fleet.send(f"go {before}")
            await producer.send("go")
            produced = await producer.finish()
            committed = await last_alert_id(self.db.url) - before
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:  # until every listener has every alert
                await fleet.send("progress")
                counts = (await fleet.event("progress", 30))["counts"]
                if min(counts) >= committed:
                    break
                await asyncio.sleep(0.05)
            delivered_in = time.monotonic() - deadline + 10
            cpu = meter.stop()
            await producer.close()
            await fleet.send("stop")
            out = await fleet.finish()
            await fleet.close()
            received = sum(out["counts"])
            lat = produced.pop("latencies")
            data = {
                "throughput_rps": produced["completed"] / produced["elapsed"],
                "notifications_per_s": received / produced["elapsed"],
                **summarize_ms(lat),
                **cpu,
                "cpu_service_s": 0.0,
                "lost": sum(max(0, committed - c) for c in out["counts"]),
                "drain_after_last_commit_ms": delivered_in * 1000,
                "duplicated": 0,
                "errors": produced["errors"],
                "listeners": n,
                "_latencies": lat,
            }
            fig = self.record(
                "7 scale-out: NOTIFY to N listeners (raw alert tx, 8 in flight)",
                f"{n} listening processes",
                None,
                data,
            )
            progress(
                f"7 scale-out n={n}: {fig['throughput_rps']:.0f} commits/s, "
                f"{fig['notifications_per_s']:.0f} notifications/s delivered, "
                f"lost={fig['lost']}"
            )

    async def per_workers(self, workers: int, bare: dict[int, dict[str, Any]]) -> None:
        plan = self.plan
        port = free_port()
        env = child_env(DATABASE_URL=self.db.url)
        progress(f"starting inbox serve --workers {workers}")
        async with serve(
            service_argv(workers, port, plan.profile),
            env,
            self.service_log,
            port,
            "service",
            "/readyz",
        ) as server:
            for k in sorted(plan.fanout_k, reverse=True):  # the largest K on a fresh process
                if not plan.runs("fanout"):
                    break
                fig = await self.fanout(server, workers, k, footprint=k == max(plan.fanout_k))
                if k not in bare:
                    progress(f"3 fan-out K={k}: bare broadcast reference ...")
                    bare[k] = await self.bare_fanout(k)
                self.fanout_checks(fig, bare[k], k, workers)
            if plan.runs("objects"):
                await self.scenario_objects(server, workers)
            if plan.runs("alerts"):
                await self.scenario_alerts(server, workers)
            if plan.runs("storm"):
                await self.scenario_storm(server, workers)
            if plan.runs("alert_all"):
                await self.scenario_alert_all(server, workers)

    def fanout_checks(
        self, fig: dict[str, Any], bare: dict[str, Any], k: int, workers: int
    ) -> None:
        check = self.results.check
        if fig.get("frames_per_service_cpu_s") and bare.get("frames_per_service_cpu_s"):
            ratio = fig["frames_per_service_cpu_s"] / bare["frames_per_service_cpu_s"]
            fig["ratio_to_reference"] = round(ratio, 3)
            check(
                f"3 fan-out K={k}: frames per service CPU-s / bare broadcast",
                round(ratio, 3),
                ">= 0.8",
                ratio >= 0.8,
                workers,
            )
        if k == max(self.plan.fanout_k):
            check(
                f"3 fan-out K={k}: e2e p50 at {fig['frames_per_s']:.0f} frames/s",
                round(fig["p50_ms"], 2),
                "<= 5 ms",
                fig["p50_ms"] <= 5,
                workers,
            )
            check(
                f"3 fan-out K={k}: e2e p99",
                round(fig["p99_ms"], 2),
                "<= 50 ms",
                fig["p99_ms"] <= 50,
                workers,
            )
            check(
                f"3 fan-out K={k}: lost + duplicated frames",
                fig["lost"] + fig["duplicated"],
                "== 0",
                fig["lost"] + fig["duplicated"] == 0,
                workers,
            )
            if "rss_per_idle_socket_kib" in fig:
                rss = fig["rss_per_idle_socket_kib"]
                check(
                    f"6 footprint: service RSS per idle socket at K={k}",
                    round(rss, 1),
                    "<= 20 KiB",
                    rss <= 20,
                    workers,
                )


async def amain(plan: Plan) -> Path:
    nofile = raise_nofile()
    results = Results(plan)
    results.machine = machine()
    results.machine["rlimit_nofile"] = nofile
    started = time.monotonic()
    with database_server() as (admin_url, kind):
        results.machine["database"] = kind
        url = await create_database(admin_url, "main")
        try:
            pg_pid, max_conn = await server_facts(url)
            results.machine["postgres_version"] = (await sql(url, "SHOW server_version"))[0][0]
            db = BenchDatabase(admin_url, url, Tree(pg_pid), max_conn)
            bench = Bench(plan, db, results)
            bare: dict[int, dict[str, Any]] = {}
            for workers in plan.workers:
                if plan.only & SERVICE_SCENARIOS:
                    await bench.per_workers(workers, bare)
            if plan.runs("lock"):
                await bench.scenario_lock_cost()
            if plan.runs("scaleout"):
                await bench.scenario_scale_out()
        finally:
            await drop_database(admin_url, url)
    results.machine["load_avg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    results.machine["wall_seconds"] = round(time.monotonic() - started, 1)
    path = report.write(results, RESULTS)
    progress(f"done in {results.machine['wall_seconds']:.0f} s: {path}")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a smoke run of under two minutes")
    parser.add_argument(
        "--only",
        default=",".join(sorted(SCENARIOS)),
        help=f"comma-separated subset of {', '.join(sorted(SCENARIOS))} (default: all)",
    )
    parser.add_argument(
        "--profile", action="store_true", help="record the service with py-spy (raw stacks)"
    )
    parser.add_argument("--workers", default="1,2", help="worker counts to serve with (1,2)")
    args = parser.parse_args(argv)
    only = frozenset(args.only.split(","))
    if only - SCENARIOS:
        parser.error(f"unknown scenario(s): {', '.join(sorted(only - SCENARIOS))}")
    workers = tuple(int(w) for w in args.workers.split(","))
    plan = replace(Plan.make(args.quick, only, workers), profile=args.profile)
    print(asyncio.run(amain(plan)))
    return 0
