"""``GET /stream.{fmt}``: one listener of one format, from the limits to the last byte.

A listener first gets the header (Ogg) and the burst at once, then about every 100 ms the
broadcaster writes to its socket directly (:meth:`Listener.stream_to`); one that falls more
than ``max_lag_s`` behind is cut and never slows anybody else. ICY metadata (``Icy-MetaData:
1``) is interleaved for the formats that carry it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket

from aiohttp import hdrs, web

from deskcast.http.broadcaster import CUT_TOO_SLOW
from deskcast.http.icy import IcyInserter
from deskcast.http.responses import API_HEADERS, error, write
from deskcast.http.server import SERVER

logger = logging.getLogger(__name__)

STREAM_SNDBUF_BYTES = 64 * 1024
"""Kernel send buffer of a listener's socket (Linux doubles it): ~8 s of 128 kbit/s MP3, and
640 KB/s over a 200 ms round trip — far more than any stream needs. Left to autotuning a
socket whose client never reads would pin up to 4 MB of kernel memory and take minutes to
show as stalled."""
PER_ADDRESS = web.AppKey("per_address", dict[str, int])
"""Listeners connected now from each client address (``--max-per-address``)."""


async def stream(request: web.Request) -> web.StreamResponse:
    server = request.app[SERVER]
    per_address = request.app[PER_ADDRESS]
    fmt = request.match_info["fmt"]
    fmt_stream = server.streams.get(fmt)
    if fmt_stream is None:
        offered = ", ".join(f"/stream.{f}" for f in server.streams)
        return error(404, f"no stream format {fmt!r} here: use {offered}")
    spec = fmt_stream.spec
    headers = {"Content-Type": spec.content_type, **API_HEADERS,
               "icy-name": server.name, "icy-pub": "0",
               "icy-br": f"{server.bitrates[fmt]:g}"}
    icy = spec.icy and request.headers.get("Icy-MetaData", "").strip() == "1"
    if icy:
        headers["icy-metaint"] = str(server.icy_metaint)
    if request.method == "HEAD":
        return web.Response(headers=headers)
    if fmt_stream.ended:
        return error(503, "the source has ended; restart deskcast serve")
    address = request.remote or "?"
    if server.listeners >= server.max_listeners or \
            per_address.get(address, 0) >= server.max_per_address:
        server.refused += 1
        refusal = error(503, "too many listeners, try again in 10 s")
        refusal.headers["Retry-After"] = "10"
        return refusal
    resp = web.StreamResponse(headers=headers)
    sock = request.transport.get_extra_info("socket") if request.transport else None
    if sock is not None:
        with contextlib.suppress(OSError):  # the client may have hung up already
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, STREAM_SNDBUF_BYTES)
    listener = fmt_stream.acquire().subscribe()
    inserter = IcyInserter(server.icy_metaint) if icy else None
    per_address[address] = per_address.get(address, 0) + 1
    try:
        # Inside the try: a client that already hung up makes even the headers fail.
        await resp.prepare(request)
        # After the first batch (header and burst, at once) the broadcaster writes to the
        # transport directly: the same bytes to every listener, ICY listeners' built once
        # per point of their metadata interval.
        direct = not resp.headers.get(hdrs.CONTENT_ENCODING)
        while True:
            data = await listener.next_batch()
            if data is None:
                break
            if inserter is not None:
                data = inserter.feed(data, server.title())
            # A client that stops reading would block here forever, holding its slot.
            await write(request, resp, data, server.max_lag_s + 1.0)
            transport = request.transport
            if direct and transport is not None and not transport.is_closing():
                chunked = resp.headers.get(hdrs.TRANSFER_ENCODING, "").lower() == "chunked"
                await listener.stream_to(transport, chunked=chunked, icy=inserter,
                                         title=server.title)
                if listener.cut_reason == CUT_TOO_SLOW:
                    # Its socket and write buffer are full: nothing more would reach it.
                    logger.debug("dropping %s: too slow", request.remote)
                    transport.abort()
                    raise ConnectionResetError
                # Else it ended (closed) or stream_to was cancelled: next_batch says which.
    except (ConnectionResetError, asyncio.CancelledError, TimeoutError):
        pass
    finally:
        listener.close()
        fmt_stream.release()
        left = per_address.get(address, 1) - 1
        if left:
            per_address[address] = left
        else:
            per_address.pop(address, None)
    return resp
