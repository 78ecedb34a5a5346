"""GET /metrics: Prometheus text, one registry per app, the real-time path counted."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from service.frames import Prepared
from service.hub import Session
from service.keys import db_key, hub_key

from .conftest import ClientFactory, app_of, create_alert, create_object, eventually

Client = TestClient[Any, Any]


async def scrape(client: Client) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample as {(name, labels): value}."""
    response = await client.get("/metrics")
    assert response.status == 200
    assert response.content_type == "text/plain"
    samples = {}
    for family in text_string_to_metric_families(await response.text()):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def test_requests_counted_by_route_template_and_status(client: Client) -> None:
    obj = await create_object(client)
    await client.get(f"/object/{obj['id']}")
    await client.get("/object/999")
    await client.get("/no/such/route")
    samples = await scrape(client)
    total = "inbox_http_requests_total"
    assert value(samples, total, route="/object", method="POST", status="200") == 1
    assert value(samples, total, route="/object/{object_id}", method="GET", status="200") == 1
    assert value(samples, total, route="/object/{object_id}", method="GET", status="404") == 1
    assert value(samples, total, route="unmatched", method="GET", status="404") == 1
    latency = "inbox_http_request_duration_seconds_count"
    assert value(samples, latency, route="/object/{object_id}", method="GET") == 2


async def test_each_app_has_its_own_registry(make_client: ClientFactory) -> None:
    first, second = await make_client(), await make_client()
    await create_object(first)
    assert (
        value(
            await scrape(first),
            "inbox_http_requests_total",
            route="/object",
            method="POST",
            status="200",
        )
        == 1
    )
    assert (
        value(
            await scrape(second),
            "inbox_http_requests_total",
            route="/object",
            method="POST",
            status="200",
        )
        == 0
    )


async def test_realtime_path_is_counted(client: Client) -> None:
    obj = await create_object(client)
    ws = await client.ws_connect(f"/inbox/{obj['id']}")
    hub = app_of(client)[hub_key]
    await eventually(lambda: hub.count_for(obj["id"]) == 1)
    before = await scrape(client)
    assert value(before, "inbox_open_sockets") == 1
    assert value(before, "inbox_listener_ready") == 1
    # Cluster-wide: another database's slow listener may hold a page of the queue.
    assert 0.0 <= value(before, "inbox_pg_notification_queue_usage") < 0.01
    alert = await create_alert(client, object_ids=[obj["id"]])
    msg = await ws.receive_json(timeout=5)
    assert msg["id"] == alert["id"]
    after = await scrape(client)
    assert value(after, "inbox_alerts_dispatched_total") == 1
    assert value(after, "inbox_frames_sent_total") == 1
    assert value(after, "inbox_notification_to_send_seconds_count") == 1
    assert value(after, "inbox_notification_to_send_seconds_bucket", le="+Inf") == 1
    assert 0 < value(after, "inbox_notification_to_send_seconds_sum") < 5
    assert value(after, "inbox_notification_to_send_beside_burst_seconds_count") == 0
    await ws.close()


async def test_backlog_frames_are_counted_without_latency(client: Client) -> None:
    obj = await create_object(client)
    await create_alert(client, object_ids=[obj["id"]])
    ws = await client.ws_connect(f"/inbox/{obj['id']}")
    await ws.receive_json(timeout=5)
    samples = await scrape(client)
    assert value(samples, "inbox_frames_sent_total") == 1
    assert value(samples, "inbox_notification_to_send_seconds_count") == 0
    await ws.close()


async def test_clients_dropped_as_slow_are_counted(client: Client) -> None:
    hub = app_of(client)[hub_key]
    session = Session(1, 0, limit=1, on_overflow=lambda _s: None)
    hub.add(session)
    session.offer(Prepared(1, b"{}"))
    session.offer(Prepared(2, b"{}"))  # the backlog is not read yet: one frame over the limit
    hub.discard(session)
    assert value(await scrape(client), "inbox_clients_dropped_slow_total") == 1


async def test_listen_reconnects_are_counted(client: Client, db: asyncpg.Connection) -> None:
    await db.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        " WHERE datname = current_database() AND query LIKE 'LISTEN%'"
    )
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while True:  # poll the endpoint itself until the listener is back
        samples = await scrape(client)
        if value(samples, "inbox_listen_reconnects_total") >= 1 and value(
            samples, "inbox_listener_ready"
        ):
            break
        assert loop.time() < deadline, "LISTEN was not re-opened"
        await asyncio.sleep(0.02)


async def test_queue_usage_is_nan_when_the_database_is_down(client: Client) -> None:
    app_of(client)[db_key].pool.terminate()
    samples = await scrape(client)
    usage = value(samples, "inbox_pg_notification_queue_usage")
    assert usage != usage  # NaN
