"""``deskcast serve`` as an aiohttp application: :func:`make_app` puts it together,
:func:`serve` runs it on a port.

Routes: ``/`` (the page, with ``/app.js`` and ``/app.css``: :mod:`.page`), ``/stream.{fmt}``
(:mod:`.stream_handler`), ``/api/status``, ``/api/events``, ``POST /api/metadata`` and ``/metrics``
(:mod:`.api`); the listen token is a middleware (:mod:`.auth`), HTTPS a site (:mod:`.tls`).

Lifecycle: the audio thread and the background tasks (song tracker, MPRIS, the relays)
live in the application's ``cleanup_ctx``: started when the application starts, stopped when
it is cleaned up. On shutdown, before aiohttp closes the connections, the tasks are stopped
and then the streams ended, so every handler finishes by itself instead of being cut.

Trust and bounds: line and header sizes, a 16 KB body, a header timeout (slowloris), a body
timeout, a stall timeout for listeners that stop reading, a TLS handshake deadline.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import resource
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

from aiohttp import web

from deskcast.errors import DeviceError
from deskcast.http import api, page, stream_handler
from deskcast.http.auth import listen_guard
from deskcast.http.relay import Relay
from deskcast.http.responses import nosniff
from deskcast.http.server import SERVER, Server
from deskcast.http.tls import Site

logger = logging.getLogger(__name__)

MIN_BACKLOG = 128
"""The smallest accept queue (aiohttp's default): see :func:`listen_backlog`."""
TASK_STOP_S = 3.0
"""Background tasks (tracker, MPRIS, Icecast push) get this long to end when serve stops."""
HEADER_TIMEOUT_S = 15.0
"""Default of ``--header-timeout-s``: a connection that has not sent a whole request this long
after connecting (or after its last answer) is closed (Icecast's header-timeout)."""
MAX_LINE_BYTES = 4096
"""Longest request line: our URLs, with a token, are under 200 bytes."""
MAX_FIELD_BYTES = 8190
"""Longest header (aiohttp's default): room for cookies other apps on this host set."""
MAX_HEADERS = 64
"""Most header lines in one request: browsers and players send about 15."""

Task = Callable[[asyncio.Event], Awaitable[Any]]
"""A background task: a coroutine function given an event that is set when serve stops."""


class Background:
    """The background tasks of one application: started together, stopped together."""

    def __init__(self, tasks: Sequence[Task]) -> None:
        self.tasks = list(tasks)
        self.stopping = asyncio.Event()
        self._running: list[asyncio.Task[Any]] = []

    def start(self) -> None:
        self._running = [asyncio.ensure_future(task(self.stopping)) for task in self.tasks]

    async def stop(self) -> None:
        """Set ``stopping``, cancel the tasks and give them :data:`TASK_STOP_S` to end
        (idempotent)."""
        self.stopping.set()
        running, self._running = self._running, []
        for task in running:
            task.cancel()
        if running:
            _done, pending = await asyncio.wait(running, timeout=TASK_STOP_S)
            for task in pending:
                logger.warning("a background task did not stop within %g s: %r", TASK_STOP_S,
                               task.get_coro())


BACKGROUND = web.AppKey("background", Background)


def make_app(server: Server, tasks: Sequence[Task] = (),
             relays: Sequence[Relay] = ()) -> web.Application:
    """The application serving ``server``; ``tasks`` and ``relays`` run while it runs, each
    relay's status a section of /api/status."""
    for relay in relays:
        server.status_providers[relay.name] = relay.status
    tasks = [*tasks, *(functools.partial(relay.relay, server) for relay in relays)]
    app = web.Application(client_max_size=api.MAX_BODY_BYTES,
                          middlewares=[listen_guard(server.listen_token)])
    app[SERVER] = server
    app[BACKGROUND] = Background(tasks)
    app[stream_handler.PER_ADDRESS] = {}
    app.on_response_prepare.append(nosniff)
    page.add_routes(app)
    app.router.add_get("/stream.{fmt}", stream_handler.stream)
    api.add_routes(app)
    app.cleanup_ctx.append(_audio)
    app.cleanup_ctx.append(_background)
    app.on_shutdown.append(_wind_down)
    return app


async def _audio(app: web.Application) -> AsyncIterator[None]:
    server = app[SERVER]
    server.start_audio(asyncio.get_running_loop())
    yield
    server.stop()


async def _background(app: web.Application) -> AsyncIterator[None]:
    app[BACKGROUND].start()
    yield
    await app[BACKGROUND].stop()


async def _wind_down(app: web.Application) -> None:
    """Before the connections close: stop the tasks, then the audio, which ends every stream
    (and with it its listeners' handlers) and the event streams."""
    await app[BACKGROUND].stop()
    app[SERVER].stop()


def listen_backlog(max_listeners: int) -> int:
    """The listening socket's accept queue: room for every allowed listener connecting at once.

    The kernel completes a TCP handshake before the server accepts it; once the queue is full it
    drops the SYNs of further clients, which retry only after a second. With aiohttp's 128, a
    few hundred players reconnecting together (serve restarted, a network blip) waited 1 s+ for
    their first byte while the loop worked through the first ones. Linux caps it at
    ``net.core.somaxconn`` (4096 by default)."""
    return max(MIN_BACKLOG, max_listeners)


def raise_fd_limit(max_listeners: int) -> int:
    """Raise the soft limit on open files towards what ``max_listeners`` needs (a socket per
    listener and per event client, plus slack for connections being opened and closed):
    desktops start programs with 1024, which ~500 listeners would exhaust. Returns the limit."""
    want = 2 * max_listeners + 1024
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= want:
        return want if soft == resource.RLIM_INFINITY else soft
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    if target < want:
        logger.warning("open-file limit %d (hard) is below the %d that --max-listeners %d "
                       "needs: raise it (ulimit -Hn, LimitNOFILE=) or lower --max-listeners",
                       target, want, max_listeners)
    return target


async def serve(server: Server, host: str, port: int, stop: asyncio.Event,
                tasks: Sequence[Task] = (), *, relays: Sequence[Relay] = (),
                ssl_context: ssl.SSLContext | None = None,
                header_timeout_s: float = HEADER_TIMEOUT_S) -> None:
    """Serve until ``stop`` is set; ``tasks`` are coroutine functions taking an event set when
    serve stops (e.g. the song-tracker poller), run alongside with ``relays`` (Icecast, HLS)
    and cancelled at the end. With ``ssl_context``, HTTPS.
    """
    raise_fd_limit(server.max_listeners)
    # aiohttp's keep-alive timer starts when a connection opens and is not reset by incoming
    # bytes, so it also bounds how long a client may take to send its request headers.
    app = make_app(server, tasks, relays)
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=1.0,
                           keepalive_timeout=header_timeout_s,
                           max_line_size=MAX_LINE_BYTES, max_field_size=MAX_FIELD_BYTES,
                           max_headers=MAX_HEADERS)
    await runner.setup()
    try:
        site = Site(runner, host or None, port, ssl_context=ssl_context,
                    handshake_timeout_s=header_timeout_s,
                    backlog=listen_backlog(server.max_listeners))
        try:
            await site.start()
        except OSError as err:
            raise DeviceError(f"cannot listen on {host or '*'}:{port}: {err.strerror} — is "
                              "another server running? choose another with --listen") from None
        # What exists now (modules, the app, the encoders' set-up) lives as long as serve: out
        # of the collector's sight, a full collection no longer walks ~50,000 objects (~35 ms
        # with the loop stalled, seen in connect storms, when hundreds of new connections
        # trigger one).
        gc.freeze()
        logger.info("serving %s on %s://%s:%d/ (streams: %s)", server.source.name,
                    "https" if ssl_context else "http", host or "0.0.0.0", port,
                    ", ".join(f"/stream.{f}" for f in server.streams))
        await stop.wait()
    finally:
        await runner.cleanup()
