"""What every handler of ``serve`` answers with: the common headers, one-line errors, and a
write that drops a client who stops reading."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from aiohttp import web

logger = logging.getLogger(__name__)

NO_CACHE = "no-cache, no-store, must-revalidate"
API_HEADERS = {"Cache-Control": NO_CACHE, "Access-Control-Allow-Origin": "*",
               "X-Content-Type-Options": "nosniff"}


def error(status: int, message: str) -> web.Response:
    """A one-line plain-text error (``nosniff``: it may quote the request)."""
    return web.Response(status=status, text=message + "\n",
                        headers={"Cache-Control": NO_CACHE, "X-Content-Type-Options": "nosniff",
                                 "Access-Control-Allow-Origin": "*"})


def json_response(data: dict[str, Any]) -> web.Response:
    return web.Response(text=json.dumps(data), content_type="application/json",
                        headers=API_HEADERS)


async def nosniff(request: web.Request, response: web.StreamResponse) -> None:
    """Every answer, aiohttp's own errors too: browsers must not guess a type for it."""
    response.headers.setdefault("X-Content-Type-Options", "nosniff")


async def write(request: web.Request, resp: web.StreamResponse, data: bytes,
                stall_s: float) -> None:
    """Write ``data``; if the client takes none of it for ``stall_s``, drop the connection
    and raise TimeoutError."""
    transport = request.transport
    if transport is not None and \
            transport.get_write_buffer_size() + len(data) < transport.get_write_buffer_limits()[1]:
        # Stays below the high-water mark: the write cannot wait for the client, so no timer
        # is needed (with a thousand listeners, arming one per write costs a tenth of the CPU).
        await resp.write(data)
        return
    try:
        async with asyncio.timeout(stall_s):
            await resp.write(data)
    except TimeoutError:
        logger.debug("dropping %s: it read nothing for %g s", request.remote, stall_s)
        if request.transport is not None:
            request.transport.abort()
        raise
