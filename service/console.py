"""The browser console: GET / and its two static files, served from service/static/.

A single page with no build step and nothing fetched from elsewhere: it creates objects, sends
alerts and watches inboxes through the public API, like any other client.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from .errors import NotFound

STATIC_DIR = Path(__file__).resolve().parent / "static"
# Only these are served: a fixed list cannot be walked out of with `..`.
FILES = {"app.js": "text/javascript", "style.css": "text/css"}
NO_CACHE = {"Cache-Control": "no-cache"}


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(
        STATIC_DIR / "index.html", headers={**NO_CACHE, "Content-Type": "text/html"}
    )


async def static_file(request: web.Request) -> web.FileResponse:
    name = request.match_info["filename"]
    if name not in FILES:
        raise NotFound(f"no static file {name!r}")
    return web.FileResponse(STATIC_DIR / name, headers={**NO_CACHE, "Content-Type": FILES[name]})
