"""Every key the application stores state under."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from .config import Config
from .db import Database
from .hub import Hub
from .listener import Listener

if TYPE_CHECKING:  # metrics.py imports this module
    from .metrics import Metrics

config_key = web.AppKey("config", Config)
db_key = web.AppKey("db", Database)
hub_key = web.AppKey("hub", Hub)
listener_key = web.AppKey("listener", Listener)
sockets_key = web.AppKey("sockets", set[web.WebSocketResponse])  # open inbox sockets
metrics_key: web.AppKey[Metrics] = web.AppKey("metrics")  # the app's own Prometheus registry
# Set by server.py on a request whose `Expect: 100-continue` it held back until a route reads.
expects_continue_key = web.RequestKey("expects_continue", bool)
