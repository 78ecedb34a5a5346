"""`inbox tail`: follow one inbox from a terminal, resuming after a dropped connection."""

from __future__ import annotations

import asyncio
import json
import sys

import aiohttp


async def tail(base_url: str, object_id: int, *, after: int = 0, max_delay: float = 5.0) -> None:
    """Print each alert frame as one JSON line; reconnect with ?after=<last id> when dropped."""
    delay = 0.2
    async with aiohttp.ClientSession() as session:
        while True:
            url = f"{base_url.rstrip('/')}/inbox/{object_id}?after={after}"
            try:
                async with session.ws_connect(url, heartbeat=30) as ws:
                    delay = 0.2
                    async for msg in ws:
                        if msg.type != aiohttp.WSMsgType.TEXT:
                            break
                        after = json.loads(msg.data)["id"]
                        print(msg.data, flush=True)
                    reason = f"closed ({ws.close_code})"
            except aiohttp.WSServerHandshakeError as exc:
                if exc.status == 404:
                    print(f"inbox: no object with id {object_id}", file=sys.stderr)
                    return
                reason = f"refused ({exc.status})"
            except (aiohttp.ClientError, OSError) as exc:
                reason = f"unreachable ({exc})"
            print(f"inbox: connection {reason}; resuming after {after}", file=sys.stderr)
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_delay)
