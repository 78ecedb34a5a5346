"""Every key the application stores state under."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from .admission import Admission
from .batch import Committer, NewAlert, NewObject
from .config import Config
from .db import Database
from .hub import Hub
from .listener import Listener

if TYPE_CHECKING:  # metrics.py imports this module
    from .metrics import Metrics

config_key = web.AppKey("config", Config)
db_key = web.AppKey("db", Database)
admission_key = web.AppKey("admission", Admission)  # the bound on writes in flight
# group commit of POST /alert and POST /object
alert_committer_key = web.AppKey("alert_committer", Committer[NewAlert])
object_committer_key = web.AppKey("object_committer", Committer[NewObject])
hub_key = web.AppKey("hub", Hub)
listener_key = web.AppKey("listener", Listener)
sockets_key = web.AppKey("sockets", set[web.WebSocketResponse])  # open inbox sockets
metrics_key: web.AppKey[Metrics] = web.AppKey("metrics")  # the app's own Prometheus registry
