"""`inbox serve --workers 2`, run for real: an alert posted through one process reaches
sockets held by the other, because each process LISTENs on its own connection.

The command runs as a subprocess against this test run's database on a free port, with
LOG_FORMAT=json, so the test also checks that every log line is one JSON object.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

import testbed
from service.logs import REQUEST_ID_HEADER, WORKER_HEADER

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]

START_TIMEOUT = 30.0
MAX_SOCKETS = 64  # SO_REUSEPORT spreads connections by hash: enough to land on both


@pytest.fixture
async def served(database_url: str, tmp_path: Path) -> AsyncIterator[tuple[str, Path]]:
    """The base URL of `inbox serve --workers 2`, and the file its log goes to."""
    log_path = tmp_path / "serve.log"
    settings = {"LOG_FORMAT": "json", "LOG_LEVEL": "info"}
    with log_path.open("wb") as log_file:
        server = testbed.service(
            database_url,
            log_file,
            workers=2,
            settings=settings,
            cwd=tmp_path,  # no stray .env
        )
        try:
            with server as process:
                await wait_until_up(process.url)
                yield process.url, log_path
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{log_path.read_text()[-4000:]}") from None
    assert process.process.returncode >= 0, "inbox serve did not stop on SIGTERM"


def fresh_connections() -> aiohttp.ClientSession:
    """A session that opens a new connection per request, so each may land on either process."""
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True))


async def wait_until_up(base: str) -> None:
    """Until both processes have answered /readyz with 200 (each starts on its own)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + START_TIMEOUT
    ready: set[str] = set()
    async with fresh_connections() as session:
        while len(ready) < 2:
            try:
                async with session.get(f"{base}/readyz") as response:
                    if response.status == 200:
                        ready.add(response.headers[WORKER_HEADER])
            except aiohttp.ClientError:
                pass
            assert loop.time() < deadline, f"inbox serve did not come up (ready: {ready})"
            await asyncio.sleep(0.02)


@asynccontextmanager
async def sockets_on_both_workers(
    http: aiohttp.ClientSession, base: str, object_id: int
) -> AsyncIterator[list[tuple[str, aiohttp.ClientWebSocketResponse]]]:
    """Inbox sockets of `object_id`, as (pid of the process holding it, socket): new connections
    land on either process, so they are opened until both hold some; closed on the way out."""
    sockets: list[tuple[str, aiohttp.ClientWebSocketResponse]] = []
    try:
        while len({pid for pid, _ in sockets}) < 2 and len(sockets) < MAX_SOCKETS:
            ws = await http.ws_connect(f"{base}/inbox/{object_id}")
            sockets.append((ws._response.headers[WORKER_HEADER], ws))
        pids = {pid for pid, _ in sockets}
        assert len(pids) == 2, f"{len(sockets)} sockets all landed on one process"
        yield sockets
    finally:
        for _, ws in sockets:
            await ws.close()


@pytest.mark.slow
async def test_an_alert_reaches_sockets_on_every_worker(served: tuple[str, Path]) -> None:
    base, log_path = served
    async with fresh_connections() as http:
        async with http.post(
            f"{base}/object", json={"email": "w@example.com", "phone_number": "212-555-1234"}
        ) as response:
            assert response.status == 200, await response.text()
            object_id = (await response.json())["id"]

        async with sockets_on_both_workers(http, base, object_id) as sockets:
            pids = {pid for pid, _ in sockets}
            await wait_all_listening(http, base, len(sockets))

            # Posted through whichever process takes it: every socket on both must get it.
            async with http.post(
                f"{base}/alert",
                json={"text": "across processes", "object_ids": [object_id]},
                headers={REQUEST_ID_HEADER: "post-across"},
            ) as response:
                assert response.status == 200, await response.text()
                alert = await response.json()
                posted_by = response.headers[WORKER_HEADER]
            received = await asyncio.gather(*(ws.receive_json(timeout=10) for _, ws in sockets))
            assert [frame["id"] for frame in received] == [alert["id"]] * len(sockets)
            other = pids - {posted_by}
            assert other, "both workers hold sockets"

    entries = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    access = [e for e in entries if e["logger"] == "inbox.access"]
    posted = [e for e in access if e.get("request_id") == "post-across"]
    assert len(posted) == 1
    assert posted[0]["method"] == "POST"
    assert posted[0]["status"] == 200
    assert str(posted[0]["pid"]) == posted_by
    assert {str(e["pid"]) for e in access} >= pids


async def scrape(http: aiohttp.ClientSession, base: str) -> tuple[str, Samples]:
    """One scrape of /metrics: the pid that answered, and every sample as {(name, labels): v}."""
    async with http.get(f"{base}/metrics") as response:
        assert response.status == 200
        text = await response.text()
        pid = response.headers[WORKER_HEADER]
    samples = {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    return pid, samples


async def wait_all_listening(http: aiohttp.ClientSession, base: str, expected: int) -> None:
    """Until /metrics counts `expected` open sockets, summed over both workers: each worker
    registers its sockets with its hub after the handshake, and copies its count for the
    others' scrapes every second (metrics.SYNC_INTERVAL)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while True:
        _, samples = await scrape(http, base)
        count = samples.get(("inbox_open_sockets", frozenset()), 0)
        if count == expected:
            return
        assert loop.time() < deadline, f"open sockets counted: {count}, expected {expected}"
        await asyncio.sleep(0.05)


@pytest.mark.slow
async def test_one_scrape_reports_every_worker(served: tuple[str, Path]) -> None:
    """prometheus_client's multiprocess mode: whichever worker answers /metrics, it reports the
    requests of both, their sockets and the frames they sent."""
    base, _ = served
    body = {"email": "m@example.com", "phone_number": "212-555-1234"}
    posted_by: Counter[str] = Counter()
    async with fresh_connections() as http:
        while len(posted_by) < 2 or sum(posted_by.values()) < 20:
            async with http.post(f"{base}/object", json=body) as response:
                assert response.status == 200, await response.text()
                object_id = (await response.json())["id"]
                posted_by[response.headers[WORKER_HEADER]] += 1
            assert sum(posted_by.values()) < 200, "connections kept landing on one worker"
        posts = sum(posted_by.values())
        async with sockets_on_both_workers(http, base, object_id) as held:
            sockets = [ws for _, ws in held]
            await wait_all_listening(http, base, len(sockets))
            async with http.post(
                f"{base}/alert", json={"text": "to all", "object_ids": [object_id]}
            ) as response:
                assert response.status == 200, await response.text()
            for ws in sockets:
                await ws.receive_json(timeout=10)
            answered_by: set[str] = set()
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 10
            while len(answered_by) < 2:
                pid, samples = await scrape(http, base)
                frames = samples.get(("inbox_frames_sent_total", frozenset()), 0)
                if frames < len(sockets):  # the other worker copies its count each second
                    assert loop.time() < deadline, f"frames counted: {frames}"
                    await asyncio.sleep(0.05)
                    continue
                answered_by.add(pid)
                key = frozenset({"route": "/object", "method": "POST", "status": "200"}.items())
                assert samples[("inbox_http_requests_total", key)] == posts
                assert frames == len(sockets)
                assert samples[("inbox_open_sockets", frozenset())] == len(sockets)
                assert samples[("inbox_listener_ready", frozenset())] == 1
                latency = ("inbox_notification_to_send_seconds_count", frozenset())
                assert samples[latency] == len(sockets)
                assert loop.time() < deadline, "scrapes kept landing on one worker"


@pytest.mark.slow
async def test_an_ack_reaches_sockets_on_every_worker(served: tuple[str, Path]) -> None:
    """Acks posted through either process, then one sent on a socket: every socket of the object
    on both processes is told (the other process hears it on its own LISTEN connection), with
    `unread` right."""
    base, _ = served
    async with fresh_connections() as http:
        async with http.post(
            f"{base}/object", json={"email": "w@example.com", "phone_number": "212-555-1234"}
        ) as response:
            object_id = (await response.json())["id"]
        ids = []
        for text in ("one", "two", "three"):
            async with http.post(
                f"{base}/alert", json={"text": text, "object_ids": [object_id]}
            ) as response:
                ids.append((await response.json())["id"])
        async with sockets_on_both_workers(http, base, object_id) as sockets:
            for _, ws in sockets:
                assert [(await ws.receive_json(timeout=10))["id"] for _ in ids] == ids
            await wait_all_listening(http, base, len(sockets))

            for alert_id in ids[:2]:  # new connections: the two acks may land on either process
                async with http.post(
                    f"{base}/object/{object_id}/ack", json={"alert_id": alert_id}
                ) as response:
                    assert response.status == 200, await response.text()

                    unread = ids[-1:] if alert_id == ids[1] else ids[1:]
                    assert await response.json() == {
                        "object_id": object_id,
                        "acked_alert_id": alert_id,
                        "unread": len(unread),
                    }
                told = await asyncio.gather(*(ws.receive_json(timeout=10) for _, ws in sockets))
                assert told == [{"acked_alert_id": alert_id, "unread": len(unread)}] * len(sockets)
            # And from a socket, on the process that holds it: the others hear it too.
            await sockets[0][1].send_json({"ack": ids[2]})
            told = await asyncio.gather(*(ws.receive_json(timeout=10) for _, ws in sockets))
            assert told == [{"acked_alert_id": ids[2], "unread": 0}] * len(sockets)
            async with http.get(f"{base}/object/{object_id}") as response:
                body = await response.json()
            assert (body["acked_alert_id"], body["unread"]) == (ids[2], 0)
