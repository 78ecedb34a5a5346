"""Request bodies: read only by a route that takes one, after access control, and bounded in
size (before and after decompression) and in time.

aiohttp's parser would inflate a `Content-Encoding: gzip` body as it arrives, on any route and
before anyone is authenticated, and a malformed one ended in a 500. The server runs with that
off (server.py), so a body reaches this module as the bytes sent; `read_body` inflates it
itself, only when a route asks, with zlib's `max_length`, so it stops after MAX_BODY_BYTES of
output however far the input would inflate: a bomb costs what MAX_BODY_BYTES costs, not what
its compressed size would unfold to.

- Content-Encoding: `identity` (or none), `gzip` (`x-gzip`) or `deflate` (zlib format);
  anything else, stacked codings included, is 415 with `Accept-Encoding`.
- MAX_BODY_BYTES bounds the bytes sent and the bytes they inflate to: 413, decided from
  Content-Length before a byte is read when the client sent one.
- A body that is not valid for its coding (or cut short) is 400 malformed_request.
- HTTP_BODY_TIMEOUT bounds the whole read: a body that trickles gets 408, and aiohttp closes
  the connection since the request was not read to its end.
- `Expect: 100-continue` is answered here, when the route starts reading, so a caller that
  will be refused (unknown route, no credential, wrong size or type) never gets it.
"""

from __future__ import annotations

import asyncio
import zlib

from aiohttp import web

from .errors import MalformedRequest, PayloadTooLarge, RequestTimeout, UnsupportedMediaType
from .keys import config_key, expects_continue_key

# Content-Encoding -> zlib wbits (None: the bytes as sent).
ENCODINGS: dict[str, int | None] = {
    "identity": None,
    "gzip": 16 + zlib.MAX_WBITS,
    "x-gzip": 16 + zlib.MAX_WBITS,
    "deflate": zlib.MAX_WBITS,
}
ACCEPT_ENCODING = "gzip, deflate"
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


def decoder_for(request: web.BaseRequest) -> zlib._Decompress | None:
    """A fresh decompressor for the request's Content-Encoding (None for identity), or 415."""
    coding = request.headers.get("Content-Encoding", "identity").strip().lower() or "identity"
    if coding not in ENCODINGS:
        raise UnsupportedMediaType(
            "Content-Encoding must be identity, gzip or deflate", accept_encoding=ACCEPT_ENCODING
        )
    wbits = ENCODINGS[coding]
    return None if wbits is None else zlib.decompressobj(wbits)


async def send_continue(request: web.Request) -> None:
    """The `100 Continue` aiohttp would have sent before routing (see server.py)."""
    if request.get(expects_continue_key) and request.version >= (1, 1):
        request[expects_continue_key] = False
        await request.writer.write(CONTINUE)
        request.writer.output_size = 0  # the response proper has not started


async def read_body(request: web.Request) -> bytes:
    """The whole body, decoded, or the error that says why not (413, 415, 400, 408)."""
    config = request.app[config_key]
    limit = config.max_body_bytes
    decoder = decoder_for(request)
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"the body is over {limit} bytes")
    await send_continue(request)
    if request.content.is_eof():
        # The whole body has already arrived (the usual small body, read with the headers):
        # it is taken at once, without a timer armed and cancelled or an iterator per chunk.
        body = _Body(limit, decoder)
        body.add(request.content.read_nowait())
        return body.done()
    try:
        async with asyncio.timeout(config.http_body_timeout):
            return await _read(request, limit, decoder)
    except TimeoutError:
        raise RequestTimeout(
            f"the body did not arrive within {config.http_body_timeout:g} seconds"
        ) from None


class _Body:
    """The body as it arrives, decoded and bounded: `add` each chunk, then `done`."""

    def __init__(self, limit: int, decoder: zlib._Decompress | None) -> None:
        self.limit, self.decoder = limit, decoder
        self.sent = 0
        self.body = bytearray()

    def add(self, chunk: bytes) -> None:
        limit, body = self.limit, self.body
        self.sent += len(chunk)
        if self.sent > limit:
            raise PayloadTooLarge(f"the body is over {limit} bytes")
        if self.decoder is None:
            body += chunk
            return
        try:
            # At most one byte past the limit is ever produced: enough to know it is over.
            body += self.decoder.decompress(chunk, limit + 1 - len(body))
        except zlib.error:
            raise MalformedRequest("the body is not valid for its Content-Encoding") from None
        if len(body) > limit:
            raise PayloadTooLarge(f"the body inflates to more than {limit} bytes")

    def done(self) -> bytes:
        decoder = self.decoder
        if decoder is not None and (not decoder.eof or decoder.unused_data):
            raise MalformedRequest("the compressed body is cut short or has bytes after its end")
        return bytes(self.body)


async def _read(request: web.Request, limit: int, decoder: zlib._Decompress | None) -> bytes:
    body = _Body(limit, decoder)
    async for chunk in request.content.iter_any():
        body.add(chunk)
    return body.done()
