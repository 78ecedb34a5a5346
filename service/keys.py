"""Every key the application stores state under."""

from __future__ import annotations

from aiohttp import web

from .config import Config
from .db import Database
from .hub import Hub
from .listener import Listener

config_key = web.AppKey("config", Config)
db_key = web.AppKey("db", Database)
hub_key = web.AppKey("hub", Hub)
listener_key = web.AppKey("listener", Listener)
sockets_key = web.AppKey("sockets", set[web.WebSocketResponse])  # open inbox sockets
