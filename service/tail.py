"""`inbox tail`: follow one inbox from a terminal, resuming after a dropped connection, and
optionally marking what it printed as read (`--ack`)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys

import aiohttp
from yarl import URL


class Acker:
    """Acks the newest alert printed, one request at a time: a burst of alerts printed while
    an ack is in flight costs one more ack, not one each."""

    def __init__(self, session: aiohttp.ClientSession, url: URL, headers: dict[str, str]) -> None:
        self.session = session
        self.url = url
        self.headers = headers
        self.printed = 0
        self.acked = 0
        self._wake = asyncio.Event()

    def printed_up_to(self, alert_id: int) -> None:
        self.printed = max(self.printed, alert_id)
        self._wake.set()

    async def flush(self) -> None:
        """One last ack of what was printed, when leaving."""
        if self.printed > self.acked:
            async with self.session.post(
                self.url, json={"alert_id": self.printed}, headers=self.headers
            ) as response:
                if response.status == 200:
                    self.acked = self.printed

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            target = self.printed
            if target <= self.acked:
                continue
            try:
                async with self.session.post(
                    self.url, json={"alert_id": target}, headers=self.headers
                ) as response:
                    if response.status == 200:
                        self.acked = target
                        continue
                    reason = f"{response.status} {(await response.text())[:200]}"
            except (aiohttp.ClientError, OSError) as exc:
                reason = f"unreachable ({exc})"
            print(f"inbox: ack of {target} failed: {reason}", file=sys.stderr)
            await asyncio.sleep(1)  # and try again with whatever is newest then
            self._wake.set()


async def tail(
    base_url: str,
    object_id: int,
    *,
    after: int | str = 0,
    max_delay: float = 5.0,
    ack: bool = False,
    token: str | None = None,
    api_key: str | None = None,
) -> None:
    """Print each alert frame as one JSON line; reconnect with ?after=<last id> when dropped.

    `after` may be "acked": start after the object's read cursor. With `ack`, what was printed
    is acked (POST /object/{id}/ack). Read-cursor frames ({"acked_alert_id": N, "unread": M})
    are reported on stderr, never printed as alerts.
    """
    base = URL(base_url.rstrip("/") + "/")
    query = {"token": token} if token else {}
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    delay = 0.2
    async with aiohttp.ClientSession() as session:
        acker = Acker(session, (base / f"object/{object_id}/ack").with_query(query), headers)
        acking = asyncio.create_task(acker.run()) if ack else None
        try:
            while True:
                url = (base / f"inbox/{object_id}").with_query({**query, "after": str(after)})
                try:
                    async with session.ws_connect(url, heartbeat=30, headers=headers) as ws:
                        delay = 0.2
                        async for msg in ws:
                            if msg.type != aiohttp.WSMsgType.TEXT:
                                break
                            frame = json.loads(msg.data)
                            if "acked_alert_id" in frame:
                                print(
                                    f"inbox: read up to {frame['acked_alert_id']}, "
                                    f"{frame['unread']} unread",
                                    file=sys.stderr,
                                )
                                continue
                            after = frame["id"]
                            print(msg.data, flush=True)
                            if acking is not None:
                                acker.printed_up_to(frame["id"])
                        reason = f"closed ({ws.close_code})"
                except aiohttp.WSServerHandshakeError as exc:
                    if exc.status == 404:
                        print(f"inbox: no object with id {object_id}", file=sys.stderr)
                        return
                    if exc.status in (401, 403):
                        print(f"inbox: refused ({exc.status}): check --token", file=sys.stderr)
                        return
                    reason = f"refused ({exc.status})"
                except (aiohttp.ClientError, OSError) as exc:
                    reason = f"unreachable ({exc})"
                print(f"inbox: connection {reason}; resuming after {after}", file=sys.stderr)
                await asyncio.sleep(delay)
                delay = min(delay * 2, max_delay)
        finally:
            if acking is not None:
                acking.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await acking
                with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
                    await asyncio.wait_for(acker.flush(), 2)
