"""`inbox tail`: prints each alert once, and resumes after the server drops the socket."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from service.inbox import close_all_inboxes
from service.tail import tail

from .conftest import app_of, create_alert, create_object, eventually
from .test_inbox import connected


async def test_tail_prints_alerts_and_resumes(
    client: TestClient[Any, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    obj = await create_object(client)
    first = await create_alert(client, text="first", object_ids=[obj["id"]])
    base = str(client.make_url("/"))
    lines: list[str] = []

    def printed() -> list[int]:
        lines.extend(capsys.readouterr().out.splitlines())
        return [json.loads(line)["id"] for line in lines]

    following = asyncio.ensure_future(tail(base, obj["id"], max_delay=0.2))
    try:
        await connected(client, obj["id"])
        second = await create_alert(client, text="second", object_ids=[obj["id"]])
        await eventually(lambda: printed() == [first["id"], second["id"]])
        await close_all_inboxes(app_of(client))  # the server drops the socket (1001)
        third = await create_alert(client, text="third", object_ids=[obj["id"]])
        fourth = await create_alert(client, text="fourth", object_ids=[obj["id"]])
        await eventually(lambda: len(printed()) >= 4)
        # a duplicate of anything before `fourth` would stand before it
        assert printed() == [first["id"], second["id"], third["id"], fourth["id"]]
    finally:
        following.cancel()
        await asyncio.gather(following, return_exceptions=True)


async def test_tail_stops_on_an_unknown_object(
    client: TestClient[Any, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    await asyncio.wait_for(tail(str(client.make_url("/")), 424242), 5)
    assert "no object with id 424242" in capsys.readouterr().err


async def test_tail_ack_marks_what_it_printed_as_read(
    make_client: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """With access control on: the token opens the inbox and the ack."""
    client = await make_client(INBOX_SECRET="t" * 32)
    obj = await create_object(client)
    token = obj["inbox_token"]
    first = await create_alert(client, text="first", object_ids=[obj["id"]])
    base = str(client.make_url("/"))
    lines: list[str] = []

    def printed() -> list[int]:
        lines.extend(capsys.readouterr().out.splitlines())
        return [json.loads(line)["id"] for line in lines]

    async def cursor() -> tuple[int, int]:
        body = await (await client.get(f"/object/{obj['id']}", params={"token": token})).json()
        return body["acked_alert_id"], body["unread"]

    following = asyncio.ensure_future(tail(base, obj["id"], ack=True, token=token))
    try:
        await connected(client, obj["id"])
        second = await create_alert(client, text="second", object_ids=[obj["id"]])
        await eventually(lambda: printed() == [first["id"], second["id"]])
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5
        while await cursor() != (second["id"], 0):
            assert loop.time() < deadline, await cursor()
            await asyncio.sleep(0.02)
    finally:
        following.cancel()
        await asyncio.gather(following, return_exceptions=True)
    await create_alert(client, text="third", object_ids=[obj["id"]])
    assert await cursor() == (second["id"], 1)


async def test_tail_stops_when_the_token_is_refused(
    make_client: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    client = await make_client(INBOX_SECRET="t" * 32)
    obj = await create_object(client)
    await asyncio.wait_for(tail(str(client.make_url("/")), obj["id"], token="wrong"), 5)
    assert "refused (403)" in capsys.readouterr().err


async def test_tail_after_acked_prints_only_what_is_unread(
    client: TestClient[Any, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    obj = await create_object(client)
    ids = [(await create_alert(client, object_ids=[obj["id"]]))["id"] for _ in range(3)]
    response = await client.post(f"/object/{obj['id']}/ack", json={"alert_id": ids[1]})
    assert response.status == 200
    lines: list[str] = []

    def printed() -> list[int]:
        lines.extend(capsys.readouterr().out.splitlines())
        return [json.loads(line)["id"] for line in lines]

    following = asyncio.ensure_future(tail(str(client.make_url("/")), obj["id"], after="acked"))
    try:
        await eventually(lambda: printed() == [ids[2]])
        await connected(client, obj["id"])
        # Another device reads everything: the tail reports it on stderr, prints no alert.
        response = await client.post(f"/object/{obj['id']}/ack", json={"alert_id": ids[2]})
        assert response.status == 200
        err: list[str] = []

        def reported() -> bool:
            out, text = capsys.readouterr()
            lines.extend(out.splitlines())
            err.append(text)
            return f"read up to {ids[2]}, 0 unread" in "".join(err)

        await eventually(reported)
        assert printed() == [ids[2]]
    finally:
        following.cancel()
        await asyncio.gather(following, return_exceptions=True)
