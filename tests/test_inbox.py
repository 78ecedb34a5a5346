"""WS /inbox/{id}: backlog then live, exactly once, in order, for every way an alert is made."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from aiohttp import ClientWebSocketResponse, WSMsgType
from aiohttp.test_utils import TestClient

from service.keys import hub_key

from .conftest import app_of, create_alert, create_object, eventually

Client = TestClient[Any, Any]
QUIET = 0.3  # how long "nothing more arrives" is watched for


async def receive(
    ws: ClientWebSocketResponse, count: int, timeout: float = 5.0
) -> list[dict[str, Any]]:
    frames = []
    for _ in range(count):
        msg = await ws.receive(timeout=timeout)
        assert msg.type == WSMsgType.TEXT, msg
        frames.append(json.loads(msg.data))
    return frames


async def assert_silent(ws: ClientWebSocketResponse, timeout: float = QUIET) -> None:
    with pytest.raises(asyncio.TimeoutError):
        await ws.receive(timeout=timeout)


async def connect(client: Client, object_id: int, **query: Any) -> ClientWebSocketResponse:
    ws = await client.ws_connect(
        f"/inbox/{object_id}", params={k: str(v) for k, v in query.items()}
    )
    return ws


async def connected(client: Client, object_id: int, count: int = 1) -> None:
    hub = app_of(client)[hub_key]
    await eventually(lambda: hub.count_for(object_id) >= count)


async def test_backlog_then_live(client: Client) -> None:
    obj = await create_object(client)
    first = await create_alert(client, text="one", object_ids=[obj["id"]])
    second = await create_alert(client, text="two", object_ids=[obj["id"]])
    ws = await connect(client, obj["id"])
    backlog = await receive(ws, 2)
    assert [f["id"] for f in backlog] == [first["id"], second["id"]]
    assert backlog[0] == {k: v for k, v in first.items() if k != "object_ids"}
    third = await create_alert(client, text="three", object_ids=[obj["id"]])
    live = await receive(ws, 1)
    assert live[0]["id"] == third["id"]
    assert live[0]["text"] == "three"
    assert set(live[0]) == {
        "id",
        "text",
        "alert_all",
        "number_of_objects_receiving_alert",
        "created_at",
    }
    await assert_silent(ws)
    await ws.close()
