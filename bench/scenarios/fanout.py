"""3 fan-out: K inbox sockets, alerts at a steady rate to random subsets and every n-th to all;
end-to-end latency, frames per service CPU-second against a bare aiohttp broadcast server with
no database (the reference), the span of each alert_all burst inside the service (its
`inbox_burst_seconds`), the same load over SSE streams at the smallest K, and 6 the RSS each
idle socket costs."""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

import aiohttp

from ..common import summarize_ms
from ..database import last_alert_id, reset
from ..plan import progress
from ..procs import Server, free_port, serve
from ..session import Bench

RATIO_TARGET = 1.5  # frames per service CPU-second, against the bare broadcast
P99_TARGET_MS = 50.0  # subset alerts' frames while alert_all bursts run, at the largest K
BURST_TARGET_S = 0.15  # NOTIFY to the last frame of an alert_all, one process
RSS_TARGET_KIB = 16.0


async def run(bench: Bench, server: Server, workers: int) -> None:
    ks = bench.plan.fanout_k
    for k in sorted(ks, reverse=True):  # the largest K on a fresh process
        fig = await measure(bench, server, workers, k, footprint=k == max(ks))
        if k == max(ks):
            fig.update(await burst_spans(server))
        if k not in bench.bare_fanout:
            progress(f"3 fan-out K={k}: bare broadcast reference ...")
            bench.bare_fanout[k] = await bare(bench, k)
        checks(bench, fig, bench.bare_fanout[k], k, workers)
    k = min(ks)
    sse = await measure(bench, server, workers, k, footprint=False, kind="sse")
    check_delivery(bench, sse, f"3 fan-out SSE K={k}", workers)


async def histogram_buckets(server: Server, *names: str) -> dict[str, dict[str, float]]:
    """The cumulative buckets (upper bound -> count) of the service's histograms `names`,
    from one scrape (with several workers, their sum)."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{server.url}/metrics") as response,
    ):
        text = await response.text()
    found: dict[str, dict[str, float]] = {name: {} for name in names}
    for line in text.splitlines():
        name, _, rest = line.partition("_bucket{")
        if rest and name in found:
            bound = rest.split('le="', 1)[1].split('"', 1)[0]
            found[name][bound] = float(rest.rsplit(" ", 1)[1])
    return found


def bound_of(buckets: dict[str, float], share: float) -> str | None:
    """The smallest upper bound holding `share` of the counts ("+Inf" if only that does)."""
    total = buckets.get("+Inf", 0.0)
    if not total:
        return None
    return next((b for b, n in buckets.items() if n >= share * total and b != "+Inf"), "+Inf")


async def burst_spans(server: Server) -> dict[str, Any]:
    """The service's own side of the bursts: the span of each alert_all (NOTIFY to its last
    frame written) and how soon the frames of alerts published meanwhile were written."""
    found = await histogram_buckets(
        server, "inbox_burst_seconds", "inbox_notification_to_send_beside_burst_seconds"
    )
    spans, beside = found.values()
    beside_p99 = bound_of(beside, 0.99)
    return {
        "bursts": int(spans.get("+Inf", 0.0)),
        "bursts_within_150ms": int(spans.get(repr(BURST_TARGET_S), 0.0)),
        # The smallest bound holding every burst: an upper bound of the slowest one.
        "burst_max_le_s": bound_of(spans, 1.0),
        "beside_burst_frames": int(beside.get("+Inf", 0.0)),
        "beside_burst_written_p99_le_ms": (
            None if beside_p99 is None else float(beside_p99) * 1000
        ),
    }


async def bare(bench: Bench, k: int) -> dict[str, Any]:
    port = free_port()
    with serve(
        [sys.executable, "-m", "bench.broadcast", str(port)],
        bench.service_log,
        port,
        "bare",
        "/alert",
    ) as server:
        return await measure(bench, server, None, k, footprint=True)


async def measure(
    bench: Bench,
    server: Server,
    workers: int | None,
    k: int,
    footprint: bool,
    kind: str = "ws",
) -> dict[str, Any]:
    plan = bench.plan
    db_url = bench.db.url
    ids = await reset(db_url, k) if server.name == "service" else list(range(1, k + 1))
    after = await last_alert_id(db_url) if server.name == "service" else 0
    rss_before = server.tree.rss_bytes()
    groups = 2 if k > 2_000 else 1
    clients = await asyncio.gather(
        *(
            bench.load(
                "clients",
                url=server.url,
                after=after,
                object_ids=ids[g::groups],
                connect_concurrency=100,
                kind=kind,
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
    poster = await bench.load(
        "poster",
        url=server.url,
        object_ids=ids,
        subset=min(subset, k),
        all_every=all_every,
        rate=plan.alert_rate,
        duration=plan.fanout_seconds,
    )
    started = time.monotonic()
    wall = 0.0

    async def delivered(posted: dict[str, Any]) -> None:
        nonlocal wall
        expected = sum(connected if r[2] is None else len(r[2]) for r in posted["records"])
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            await asyncio.gather(*(c.send("progress") for c in clients))
            got = sum([(await c.event("progress", 30))["frames"] for c in clients])
            if got >= expected:
                break
            await asyncio.sleep(0.1)
        wall = time.monotonic() - started

    posted, cpu = await bench.measure(server, poster, watchers=clients, settle=delivered)
    await asyncio.gather(*(c.send("stop") for c in clients))
    outs = await asyncio.gather(*(c.finish() for c in clients))
    await asyncio.gather(*(c.close() for c in clients))
    records = posted["records"]
    expected = sum(connected if r[2] is None else len(r[2]) for r in records)
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
        "frames_per_service_cpu_s": frames / cpu["cpu_service_s"] if cpu["cpu_service_s"] else None,
        "post_p50_ms": summarize_ms(posted["latencies"])["p50_ms"],
        "subset_frames_p50_ms": summarize_ms(e2e_subsets)["p50_ms"],
        "subset_frames_p99_ms": summarize_ms(e2e_subsets)["p99_ms"],
        "_latencies": e2e,
    }
    if footprint:
        data["rss_per_idle_socket_kib"] = (rss_after - rss_before) / max(connected, 1) / 1024
    label = "service" if server.name == "service" else "bare aiohttp broadcast (no db)"
    scenario = f"3 fan-out SSE K={k}" if kind == "sse" else f"3 fan-out K={k}"
    fig = bench.record(scenario, label, workers, data)
    progress(
        f"{scenario} {label} workers={workers}: {fig['frames_per_s']:.0f} frames/s "
        f"p50={fig['p50_ms']:.1f} ms p99={fig['p99_ms']:.1f} ms lost={lost} "
        f"dup={fig['duplicated']}"
    )
    await asyncio.sleep(1.0)  # the server notices the closed sockets
    return fig


def check_delivery(bench: Bench, fig: dict[str, Any], scenario: str, workers: int) -> None:
    bench.results.check(
        f"{scenario}: lost + duplicated frames",
        fig["lost"] + fig["duplicated"],
        "== 0",
        fig["lost"] + fig["duplicated"] == 0,
        workers,
    )


def checks(bench: Bench, fig: dict[str, Any], bare: dict[str, Any], k: int, workers: int) -> None:
    check = bench.results.check
    if fig.get("frames_per_service_cpu_s") and bare.get("frames_per_service_cpu_s"):
        ratio = fig["frames_per_service_cpu_s"] / bare["frames_per_service_cpu_s"]
        fig["ratio_to_reference"] = round(ratio, 3)
        check(
            f"3 fan-out K={k}: frames per service CPU-s / bare broadcast",
            round(ratio, 3),
            f">= {RATIO_TARGET}",
            ratio >= RATIO_TARGET,
            workers,
        )
    check_delivery(bench, fig, f"3 fan-out K={k}", workers)
    if k != max(bench.plan.fanout_k):
        return
    check(
        f"3 fan-out K={k}: subset-alert frames p99 while alert_all bursts run",
        round(fig["subset_frames_p99_ms"], 2),
        f"<= {P99_TARGET_MS:.0f} ms",
        fig["subset_frames_p99_ms"] <= P99_TARGET_MS,
        workers,
    )
    if workers == 1 and fig.get("bursts"):
        slowest = fig["burst_max_le_s"]
        check(
            f"3 fan-out K={k}: alert_all bursts, NOTIFY to last frame written, slowest "
            f"(histogram bound; {fig['bursts_within_150ms']} of {fig['bursts']} within 150 ms)",
            float("inf") if slowest == "+Inf" else float(slowest) * 1000,
            f"<= {BURST_TARGET_S * 1000:.0f} ms",
            fig["bursts_within_150ms"] == fig["bursts"],
            workers,
        )
    if "rss_per_idle_socket_kib" in fig:
        rss = fig["rss_per_idle_socket_kib"]
        check(
            f"6 footprint: service RSS per idle socket at K={k}",
            round(rss, 1),
            f"<= {RSS_TARGET_KIB:.0f} KiB",
            rss <= RSS_TARGET_KIB,
            workers,
        )
