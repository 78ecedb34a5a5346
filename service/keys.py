"""Every key the application stores state under.

A leaf: the types are imported for the type checker only, so every module may read these keys
without this one sitting above what it types.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from .admission import Admission
    from .batch import Committer, NewAlert, NewObject
    from .config import Config
    from .db import Database
    from .hub import Hub
    from .listener import Listener
    from .metrics import Metrics
    from .server import Gate

config_key: web.AppKey[Config] = web.AppKey("config")
db_key: web.AppKey[Database] = web.AppKey("db")
admission_key: web.AppKey[Admission] = web.AppKey("admission")  # the bound on writes in flight
# group commit of POST /alert and POST /object (service/batch.py)
alert_committer_key: web.AppKey[Committer[NewAlert]] = web.AppKey("alert_committer")
object_committer_key: web.AppKey[Committer[NewObject]] = web.AppKey("object_committer")
hub_key: web.AppKey[Hub] = web.AppKey("hub")
listener_key: web.AppKey[Listener] = web.AppKey("listener")
sockets_key = web.AppKey("sockets", set[web.StreamResponse])  # open inbox streams
metrics_key: web.AppKey[Metrics] = web.AppKey("metrics")  # the app's own Prometheus registry
# The connection counter of the server running the app (server.py; absent in test servers).
gate_key: web.AppKey[Gate] = web.AppKey("gate")
# Set by server.py on a request whose `Expect: 100-continue` it held back until a route reads.
expects_continue_key = web.RequestKey("expects_continue", bool)
