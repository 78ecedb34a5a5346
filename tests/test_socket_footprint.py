"""What an open, idle inbox socket keeps alive in the process (service/inbox.py): its handler's
one coroutine and its session, no finished task, no closure per socket. The figures per socket
are measured by `python -m bench --only fanout` (RSS per idle socket); these tests pin the
structure that keeps them down, and that behaviour did not change with it."""

from __future__ import annotations

import asyncio
import gc
import os
from collections.abc import Coroutine
from typing import Any

import pytest
from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestClient, make_mocked_request

from service import server
from service.errors import DatabaseUnavailable, ServerBusy
from service.inbox import NO_MESSAGES, SocketSession
from service.keys import db_key, hub_key
from service.wire import CLOSE_TRY_AGAIN

from .conftest import app_of, create_alert, create_object, eventually

Client = TestClient[Any, Any]


def live_coroutines(name: str) -> int:
    """Coroutine objects of `name` (a qualified name) still alive (suspended or kept by a
    finished task)."""
    gc.collect()
    return sum(
        1
        for obj in gc.get_objects()
        if type(obj).__name__ == "coroutine" and obj.cr_code.co_qualname == name
    )


def socket_sessions(client: Client) -> list[SocketSession]:
    return [s for s in app_of(client)[hub_key].sessions() if isinstance(s, SocketSession)]


async def test_an_up_to_date_socket_has_no_backlog_task(client: Client) -> None:
    obj = await create_object(client)
    alert = await create_alert(client, text="seen", object_ids=[obj["id"]])
    before = live_coroutines("send_socket_backlog")
    async with client.ws_connect(f"/inbox/{obj['id']}", params={"after": str(alert["id"])}) as ws:
        await eventually(lambda: len(socket_sessions(client)) == 1)
        (session,) = socket_sessions(client)
        assert session.backlog is None
        assert live_coroutines("send_socket_backlog") == before
        live = await create_alert(client, text="live", object_ids=[obj["id"]])
        msg = await ws.receive(timeout=5)
        assert msg.type is WSMsgType.TEXT
        assert msg.json()["id"] == live["id"]


async def test_a_backlog_task_is_let_go_of_once_the_backlog_is_sent(client: Client) -> None:
    obj = await create_object(client)
    alerts = [await create_alert(client, text=f"a{i}", object_ids=[obj["id"]]) for i in range(3)]
    before = live_coroutines("send_socket_backlog")
    async with client.ws_connect(f"/inbox/{obj['id']}", params={"after": "0"}) as ws:
        got = [(await ws.receive(timeout=5)).json()["id"] for _ in alerts]
        assert got == [a["id"] for a in alerts]
        (session,) = socket_sessions(client)
        await eventually(lambda: session.backlog is None)
        assert live_coroutines("send_socket_backlog") == before
        live = await create_alert(client, text="live", object_ids=[obj["id"]])
        msg = await ws.receive(timeout=5)
        assert msg.json()["id"] == live["id"]


async def test_an_idle_socket_keeps_one_coroutine_of_the_inbox(client: Client) -> None:
    """The handler reads the socket itself: no `async for` iterator, no reading coroutine of
    its own, no registration context manager suspended beside it; and the middlewares with
    nothing to do after the handler (admission, access control) keep no coroutine of theirs
    suspended above it."""
    obj = await create_object(client)
    kept = ("inbox", "access_log_middleware", "metrics_middleware", "json_errors")
    gone = (
        "websocket",
        "read_client_messages",
        "WebSocketResponse.__anext__",
        "admit_writes",
        "access_control",
    )
    before = {name: live_coroutines(name) for name in kept + gone}
    sockets = [await client.ws_connect(f"/inbox/{obj['id']}") for _ in range(3)]
    try:
        await eventually(lambda: len(socket_sessions(client)) == 3)
        await asyncio.sleep(0.05)
        after = {name: live_coroutines(name) for name in kept + gone}
        assert {name: after[name] - before[name] for name in kept} == dict.fromkeys(kept, 3)
        assert {name: after[name] - before[name] for name in gone} == dict.fromkeys(gone, 0)
        gc.collect()
        generators = [
            o
            for o in gc.get_objects()
            if type(o).__name__ == "async_generator" and o.ag_code.co_name == "registered"
        ]
        assert not generators
    finally:
        for ws in sockets:
            await ws.close()


async def test_an_open_socket_keeps_no_handshake_headers_http_parser_or_request_queue(
    client: Client,
) -> None:
    obj = await create_object(client)
    async with client.ws_connect(f"/inbox/{obj['id']}") as ws:
        handshake = ws._response.headers
        assert handshake["Upgrade"].lower() == "websocket"
        assert handshake["X-Request-Id"]  # still sent
        assert handshake["X-Inbox-Worker"] == str(os.getpid())
        await eventually(lambda: len(socket_sessions(client)) == 1)
        (session,) = socket_sessions(client)
        assert len(session.ws.headers) == 0
        assert session.request.protocol._parser is None
        assert session.request.protocol._messages is NO_MESSAGES
        live = await create_alert(client, text="after the shedding", object_ids=[obj["id"]])
        msg = await ws.receive(timeout=5)
        assert msg.json()["id"] == live["id"]
        await ws.send_json({"ack": live["id"]})  # a client message is still read
        notice = await ws.receive(timeout=5)
        assert notice.json()["acked_alert_id"] == live["id"]


def test_a_request_without_expect_goes_to_the_application_unwrapped() -> None:
    """`inbox serve`'s Expect wrapper (server.py) hands on the application's own coroutine,
    so it keeps nothing suspended above an inbox socket; with Expect it still wraps."""

    async def application(request: web.BaseRequest) -> web.StreamResponse:
        return web.Response()

    wrapped = server.hold_back_continue(application)
    plain = wrapped(make_mocked_request("GET", "/inbox/1"))
    assert isinstance(plain, Coroutine)
    assert plain.cr_code is application.__code__
    plain.close()
    expecting = wrapped(make_mocked_request("POST", "/alert", headers={"Expect": "100-continue"}))
    assert isinstance(expecting, Coroutine)
    assert expecting.cr_code is not application.__code__
    expecting.close()


@pytest.mark.parametrize(
    ("failure", "reason"),
    [
        (DatabaseUnavailable("down"), "database unavailable: reconnect"),
        (ServerBusy("no connection free"), "server busy: reconnect"),
    ],
)
async def test_a_backlog_that_cannot_be_read_closes_with_try_again(
    client: Client, monkeypatch: pytest.MonkeyPatch, failure: Exception, reason: str
) -> None:
    """A backlog read refused by an unreachable database or a full pool closes the socket with
    1013 (try again later), not 1011: the client retries with ?after=."""
    obj = await create_object(client)
    await create_alert(client, text="missed", object_ids=[obj["id"]])
    db = app_of(client)[db_key]

    async def refused(*args: Any) -> Any:
        raise failure

    monkeypatch.setattr(db, "inbox_page", refused)
    async with client.ws_connect(f"/inbox/{obj['id']}", params={"after": "0"}) as ws:
        msg = await ws.receive(timeout=5)
        assert msg.type is WSMsgType.CLOSE
        assert (msg.data, msg.extra) == (CLOSE_TRY_AGAIN, reason)
