"""GET /object/{id}/alerts: pages that add up to exactly the inbox, bounded and validated."""

from __future__ import annotations

import asyncio
import json
import random
from typing import Any

import pytest
from aiohttp import WSMsgType
from aiohttp.test_utils import TestClient

from service.auth import inbox_token

from .conftest import ClientFactory, create_alert, create_object

Client = TestClient[Any, Any]
SECRET = "s" * 32


async def page(client: Client, object_id: int, **query: Any) -> tuple[dict[str, Any], str | None]:
    response = await client.get(
        f"/object/{object_id}/alerts", params={k: str(v) for k, v in query.items()}
    )
    assert response.status == 200, await response.text()
    assert response.content_type == "application/json"
    return await response.json(), response.headers.get("Link")


async def all_pages(client: Client, object_id: int, limit: int) -> list[dict[str, Any]]:
    """Follow `next_after` until `has_more` is false; checks the Link header on the way."""
    alerts: list[dict[str, Any]] = []
    after = 0
    while True:
        body, link = await page(client, object_id, after=after, limit=limit)
        assert len(body["alerts"]) <= limit
        alerts.extend(body["alerts"])
        if not body["has_more"]:
            assert link is None
            return alerts
        assert len(body["alerts"]) == limit
        assert body["next_after"] == body["alerts"][-1]["id"]
        assert link == (
            f'</object/{object_id}/alerts?after={body["next_after"]}&limit={limit}>; rel="next"'
        )
        after = body["next_after"]


async def inbox_backlog(client: Client, object_id: int, count: int) -> list[str]:
    """The frames an inbox socket opened with ?after=0 sends, as the text it sends them."""
    ws = await client.ws_connect(f"/inbox/{object_id}")
    frames = []
    try:
        for _ in range(count):
            msg = await ws.receive(timeout=5)
            assert msg.type == WSMsgType.TEXT, msg
            frames.append(msg.data)
        with pytest.raises(asyncio.TimeoutError):
            await ws.receive(timeout=0.3)  # and nothing more
    finally:
        await ws.close()
    return frames


@pytest.mark.parametrize("limit", [1, 7, 100, 1000])
async def test_pages_concatenate_to_exactly_the_inbox(client: Client, limit: int) -> None:
    mine, other = await create_object(client), await create_object(client)
    rng = random.Random(limit)
    expected = []
    for i in range(45):
        choice = rng.choice(["mine", "other", "both", "all"])
        if choice == "all":
            alert = await create_alert(client, text=f"all {i}", alert_all=True)
        else:
            ids = {"mine": [mine["id"]], "other": [other["id"]]}.get(
                choice, [mine["id"], other["id"]]
            )
            alert = await create_alert(client, text=f'{choice} {i} ü "q"', object_ids=ids)
        if choice != "other":
            expected.append(alert["id"])

    history = await all_pages(client, mine["id"], limit)
    backlog = await inbox_backlog(client, mine["id"], len(expected))
    assert [a["id"] for a in history] == expected
    assert history == [json.loads(frame) for frame in backlog]


async def test_the_link_header_is_a_working_url_with_the_token(make_client: ClientFactory) -> None:
    client = await make_client(INBOX_SECRET=SECRET)
    obj = await create_object(client)
    for i in range(5):
        await create_alert(client, text=str(i), object_ids=[obj["id"]])
    token = inbox_token(SECRET, obj["id"])
    seen = []
    url: str | None = f"/object/{obj['id']}/alerts?limit=2&token={token}"
    while url is not None:
        response = await client.get(url)
        assert response.status == 200, await response.text()
        seen.extend(a["text"] for a in (await response.json())["alerts"])
        link = response.headers.get("Link")
        url = link[1 : link.index(">")] if link else None
    assert seen == ["0", "1", "2", "3", "4"]


async def test_an_object_without_alerts_has_an_empty_page(client: Client) -> None:
    obj = await create_object(client)
    body, link = await page(client, obj["id"], after=17)
    assert body == {"alerts": [], "next_after": 17, "has_more": False}
    assert link is None


async def test_polling_with_next_after_misses_nothing_while_alerts_commit(client: Client) -> None:
    """A reader that pages while a writer posts ends with every alert once, in order."""
    obj = await create_object(client)
    total = 60

    async def writer() -> list[int]:
        return [
            (await create_alert(client, text=str(i), object_ids=[obj["id"]]))["id"]
            for i in range(total)
        ]

    async def reader() -> list[int]:
        got: list[int] = []
        after = 0
        while len(got) < total:
            body, _ = await page(client, obj["id"], after=after, limit=3)
            got.extend(a["id"] for a in body["alerts"])
            after = body["next_after"]
            await asyncio.sleep(0)
        return got

    written, read = await asyncio.wait_for(asyncio.gather(writer(), reader()), 30)
    assert read == written


async def test_after_acked_starts_after_the_read_cursor(client: Client) -> None:
    obj = await create_object(client)
    ids = [(await create_alert(client, object_ids=[obj["id"]]))["id"] for _ in range(4)]
    body, _ = await page(client, obj["id"], after="acked")
    assert [a["id"] for a in body["alerts"]] == ids
    response = await client.post(f"/object/{obj['id']}/ack", json={"alert_id": ids[1]})
    assert response.status == 200
    body, _ = await page(client, obj["id"], after="acked")
    assert [a["id"] for a in body["alerts"]] == ids[2:]
    assert body["next_after"] == ids[3]


@pytest.mark.parametrize(
    "query",
    [
        {"after": "-1"},
        {"after": "abc"},
        {"after": "1.5"},
        {"after": ""},
        {"after": "Acked"},
        {"after": "９"},
        {"after": str(2**63)},
        {"limit": "0"},
        {"limit": "1001"},
        {"limit": "-5"},
        {"limit": "ten"},
        {"limit": ""},
        {"limit": "1e3"},
        {"limit": "99999999999999999999999999"},
        {"limit": "9" * 5000},  # int() refuses over 4300 digits: once a 500
        {"after": "9" * 5000},
    ],
)
async def test_malformed_after_or_limit_is_400(client: Client, query: dict[str, str]) -> None:
    obj = await create_object(client)
    response = await client.get(f"/object/{obj['id']}/alerts", params=query)
    assert response.status == 400
    body = await response.json()
    assert body["error"] == "malformed_request"
    assert next(iter(query)) in body["message"]


@pytest.mark.parametrize("query", [{}, {"after": "acked"}, {"after": "5", "limit": "1"}])
@pytest.mark.parametrize("path", ["/object/999/alerts", "/object/0/alerts", "/object/x/alerts"])
async def test_unknown_object_is_404(client: Client, path: str, query: dict[str, str]) -> None:
    response = await client.get(path, params=query)
    assert response.status == 404
    assert (await response.json())["error"] == "not_found"


async def test_the_inbox_token_protects_the_history(make_client: ClientFactory) -> None:
    client = await make_client(INBOX_SECRET=SECRET, API_KEYS="key-one")
    headers = {"Authorization": "Bearer key-one"}
    a = (await (await client.post("/object", json=OBJECT, headers=headers)).json())["id"]
    b = (await (await client.post("/object", json=OBJECT, headers=headers)).json())["id"]
    path = f"/object/{a}/alerts"
    cases = [
        ({}, {}, 401, "unauthorized"),
        ({"token": "wrong"}, {}, 403, "forbidden"),
        ({"token": inbox_token(SECRET, b)}, {}, 403, "forbidden"),  # another object's token
        ({}, {"Authorization": "Bearer wrong"}, 403, "forbidden"),
    ]
    for query, sent, status, code in cases:
        response = await client.get(path, params=query, headers=sent)
        assert response.status == status, (query, sent)
        assert (await response.json())["error"] == code
    for query, sent in (({"token": inbox_token(SECRET, a)}, {}), ({}, headers)):
        response = await client.get(path, params=query, headers=sent)
        assert response.status == 200, await response.text()


OBJECT = {"email": "bob@example.com", "phone_number": "212-555-1234"}
