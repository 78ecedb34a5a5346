"""Every key the application stores state under.

A leaf: the types are imported for the type checker only, so every module may read these keys
without this one sitting above what it types.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from .config import Config
    from .db import Database
    from .hub import Hub
    from .listener import Listener
    from .metrics import Metrics

config_key: web.AppKey[Config] = web.AppKey("config")
db_key: web.AppKey[Database] = web.AppKey("db")
hub_key: web.AppKey[Hub] = web.AppKey("hub")
listener_key: web.AppKey[Listener] = web.AppKey("listener")
sockets_key = web.AppKey("sockets", set[web.WebSocketResponse])  # open inbox sockets
metrics_key: web.AppKey[Metrics] = web.AppKey("metrics")  # the app's own Prometheus registry
