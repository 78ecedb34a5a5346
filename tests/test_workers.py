"""`inbox serve --workers 2`, run for real: an alert posted through one process reaches
sockets held by the other, because each process LISTENs on its own connection.

The command runs as a subprocess against this test run's database on a free port, with
LOG_FORMAT=json, so the test also checks that every log line is one JSON object.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

import testbed
from service.logs import REQUEST_ID_HEADER, WORKER_HEADER

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


@pytest.mark.slow
async def test_an_alert_reaches_sockets_on_every_worker(served: tuple[str, Path]) -> None:
    base, log_path = served
    async with fresh_connections() as http:
        async with http.post(
            f"{base}/object", json={"email": "w@example.com", "phone_number": "212-555-1234"}
        ) as response:
            assert response.status == 200, await response.text()
            object_id = (await response.json())["id"]

        sockets: list[tuple[str, aiohttp.ClientWebSocketResponse]] = []
        pids: set[str] = set()
        try:
            # New connections land on either process; open until both hold some.
            while len(pids) < 2 and len(sockets) < MAX_SOCKETS:
                ws = await http.ws_connect(f"{base}/inbox/{object_id}")
                pid = ws._response.headers[WORKER_HEADER]
                sockets.append((pid, ws))
                pids.add(pid)
            assert len(pids) == 2, f"{len(sockets)} sockets all landed on one process"
            await wait_all_listening(http, base, pids)

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
        finally:
            for _, ws in sockets:
                await ws.close()

    entries = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    access = [e for e in entries if e["logger"] == "inbox.access"]
    posted = [e for e in access if e.get("request_id") == "post-across"]
    assert len(posted) == 1
    assert posted[0]["method"] == "POST"
    assert posted[0]["status"] == 200
    assert str(posted[0]["pid"]) == posted_by
    assert {str(e["pid"]) for e in access} >= pids


async def wait_all_listening(http: aiohttp.ClientSession, base: str, pids: set[str]) -> None:
    """Each process reports its own sockets at /metrics: wait until both count theirs."""
    # Sockets are registered with the hub after the handshake; a scrape lands on either
    # process, so poll until each pid has shown an open-socket count that covers its share.
    seen: dict[str, float] = {}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while set(seen) != pids or not all(seen.values()):
        async with http.get(f"{base}/metrics") as response:
            text = await response.text()
            pid = response.headers[WORKER_HEADER]
        for line in text.splitlines():
            if line.startswith("inbox_open_sockets "):
                seen[pid] = float(line.split()[1])
        assert loop.time() < deadline, f"open sockets per worker: {seen}"
        await asyncio.sleep(0.02)
