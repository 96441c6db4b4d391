"""``serve``'s API: ``GET /api/status``, ``GET /api/events`` (server-sent events),
``POST /api/metadata`` (bearer token; CORS preflight too) and ``GET /metrics`` (Prometheus
text format)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from deskcast.http.auth import bearer_refusal
from deskcast.http.nowplaying import Track, parse_metadata
from deskcast.http.responses import API_HEADERS, NO_CACHE, error, json_response, write
from deskcast.http.server import SERVER, Server

STATUS_EVERY_S = 2.0
"""Server-sent ``status`` events come this often."""
EVENTS_STALL_S = 30.0
"""An /api/events client whose socket takes nothing for this long is dropped."""
MAX_BODY_BYTES = 16 * 1024
"""Largest request body (``POST /api/metadata``); a title is a few hundred bytes."""
BODY_TIMEOUT_S = 10.0
"""A request body must arrive within this long (a slow-body client holds nothing longer)."""


@dataclass
class StatusEvent:
    """The ``status`` event, built at most every 0.5 s however many clients there are."""

    built_at: float = -1e9
    data: bytes = b""

    def get(self, server: Server) -> bytes:
        now = time.monotonic()
        if now - self.built_at > 0.5:
            self.built_at, self.data = now, sse("status", server.status_dict())
        return self.data


STATUS_EVENT = web.AppKey("status_event", StatusEvent)


def add_routes(app: web.Application) -> None:
    app[STATUS_EVENT] = StatusEvent()
    r = app.router
    r.add_get("/api/status", status)
    r.add_get("/api/events", events)
    r.add_post("/api/metadata", metadata)
    r.add_route("OPTIONS", "/api/metadata", preflight)
    r.add_get("/metrics", metrics)


async def status(request: web.Request) -> web.Response:
    return json_response(request.app[SERVER].status_dict())


async def preflight(request: web.Request) -> web.Response:
    return web.Response(status=204, headers={
        **API_HEADERS, "Access-Control-Allow-Methods": "POST",
        "Access-Control-Allow-Headers": "Authorization, Content-Type"})


async def metadata(request: web.Request) -> web.Response:
    server = request.app[SERVER]
    refusal = bearer_refusal(request, server.token)
    if refusal is not None:
        return refusal
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        return error(413, f"body too large: at most {MAX_BODY_BYTES} bytes")
    try:
        async with asyncio.timeout(BODY_TIMEOUT_S):
            raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        return error(413, f"body too large: at most {MAX_BODY_BYTES} bytes")
    except TimeoutError:
        return error(408, f"the body did not arrive within {BODY_TIMEOUT_S:g} s")
    try:
        body = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return error(400, 'body is not JSON: send {"title": "Artist - Title"}')
    try:
        artist, title = parse_metadata(body)
    except ValueError as err:
        return error(400, str(err))
    server.nowplaying.set(artist, title, "api")
    return json_response({"now_playing": server.nowplaying.track.as_dict()})


async def events(request: web.Request) -> web.StreamResponse:
    """Server-sent events: ``metadata`` at once and on every change, ``status`` every 2 s."""
    server = request.app[SERVER]
    status_event = request.app[STATUS_EVENT]
    if server.event_clients >= server.max_listeners:
        server.refused += 1
        return error(503, "too many event clients, try again in 10 s")
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", **API_HEADERS})
    queue: asyncio.Queue[Track] = asyncio.Queue(maxsize=16)

    def changed(track: Track) -> None:
        if queue.full():
            queue.get_nowait()
        queue.put_nowait(track)

    unwatch = server.nowplaying.watch(changed)
    server.event_clients += 1
    try:
        await resp.prepare(request)
        await write(request, resp, b"retry: 2000\n\n" +
                    sse("metadata", server.nowplaying.track.as_dict()) +
                    status_event.get(server), EVENTS_STALL_S)
        next_status = time.monotonic() + STATUS_EVERY_S
        while not server.closing.is_set():
            wait = max(next_status - time.monotonic(), 0.0)
            try:
                track = await asyncio.wait_for(queue.get(), wait)
            except TimeoutError:
                await write(request, resp, status_event.get(server), EVENTS_STALL_S)
                next_status = time.monotonic() + STATUS_EVERY_S
            else:
                await write(request, resp, sse("metadata", track.as_dict()), EVENTS_STALL_S)
    except (ConnectionResetError, asyncio.CancelledError, TimeoutError):
        pass
    finally:
        unwatch()
        server.event_clients -= 1
    return resp


def sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


async def metrics(request: web.Request) -> web.Response:
    server = request.app[SERVER]
    lines: list[str] = []

    def metric(name: str, kind: str, text: str, values: list[tuple[str, float]]) -> None:
        lines.append(f"# HELP deskcast_{name} {text}")
        lines.append(f"# TYPE deskcast_{name} {kind}")
        for labels, value in values:
            lines.append(f"deskcast_{name}{labels} {value:g}")

    st = {name: s.stats for name, s in server.streams.items()}
    internal = server.internal

    def per(fn: Callable[[str], float]) -> list[tuple[str, float]]:
        return [(f'{{format="{name}"}}', fn(name)) for name in st]

    metric("uptime_seconds", "gauge", "Seconds since serve started.",
           [("", round(time.monotonic() - server.started, 1))])
    metric("listeners", "gauge", "HTTP listeners connected now.",
           per(lambda f: st[f].listeners - internal[f]))
    metric("internal_consumers", "gauge", "Internal consumers (e.g. an Icecast push).",
           per(lambda f: internal[f]))
    metric("sent_bytes_total", "counter", "Bytes handed to listeners, headers included.",
           per(lambda f: st[f].sent_bytes))
    metric("listeners_total", "counter", "Listeners ever connected.",
           per(lambda f: st[f].listeners_total))
    metric("listeners_cut_total", "counter", "Listeners cut for falling behind.",
           per(lambda f: st[f].listeners_cut))
    metric("encoder_running", "gauge", "1 while the format's encoder runs.",
           per(lambda f: int(st[f].running)))
    metric("encoder_starts_total", "counter", "Times the format's encoder was started.",
           per(lambda f: st[f].starts))
    metric("listeners_refused_total", "counter", "Connections refused by the limits.",
           [("", server.refused)])
    metric("event_clients", "gauge", "Clients of /api/events.", [("", server.event_clients)])
    metric("source_overruns_total", "counter",
           "Times the capture device dropped audio because it was read too late.",
           [("", server.source.overruns)])
    return web.Response(text="\n".join(lines) + "\n",
                        headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8",
                                 "Cache-Control": NO_CACHE})
