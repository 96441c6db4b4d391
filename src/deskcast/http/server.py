"""``deskcast serve``: one source, one encoder per format, any number of HTTP listeners.

The audio thread reads the source all the time and feeds the encoders that run (a format's
encoder runs while somebody listens to it, or always with ``always_on``); their ~100 ms chunks
go to the event loop, where each format's :class:`Broadcaster` fans them out. Each listener
first gets the header (Ogg) and ~1 s of recent audio so players start at once, then live audio;
one that falls more than a few seconds behind is cut and never slows anybody else.

Endpoints: ``/`` (the page, with ``/app.js`` and ``/app.css``), ``/stream.mp3``, ``/stream.aac``,
``/stream.opus``, ``/api/status``, ``/api/events`` (server-sent events), ``POST /api/metadata``
(bearer token) and ``/metrics`` (Prometheus text format).

Trust: everything that changes state (``POST /api/metadata``) needs the bearer token. Listening
is read-only and open by default, like a radio; with a listen token everything but the page's
static assets (and the metadata POST, which has its own token) needs ``?token=`` or HTTP basic
auth. Requests are bounded: line and header sizes, a 16 KB body, a header timeout (slowloris),
a body timeout, and a stall timeout for listeners that stop reading. HTTPS with
:func:`deskcast.http.tls.server_context`.

Internal consumers (e.g. an Icecast push) use :meth:`Server.subscribe` and
:meth:`Server.on_now_playing`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gc
import hmac
import json
import logging
import resource
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from typing import Any

from aiohttp import hdrs, web

from deskcast import realtime
from deskcast.capture.base import Source
from deskcast.errors import ConfigError
from deskcast.http import page
from deskcast.http.broadcaster import CUT_TOO_SLOW
from deskcast.http.icy import DEFAULT_METAINT, IcyInserter
from deskcast.http.nowplaying import NowPlaying, Track, parse_metadata
from deskcast.http.streams import (
    FORMATS,
    AacStream,
    FormatStream,
    Mp3Stream,
    OggOpusStream,
    StreamEncoder,
)
from deskcast.media import PcmBlock

logger = logging.getLogger(__name__)

NO_CACHE = "no-cache, no-store, must-revalidate"
MIN_BACKLOG = 128
"""The smallest accept queue (aiohttp's default): see :func:`listen_backlog`."""
SERVE_BLOCK_MS = 40.0
"""serve's block size unless ``--block-ms`` (or the config file) sets one: its listeners get
~0.1 s chunks anyway, and 25 blocks a second instead of 100 save the audio thread three
quarters of its wake-ups (each ~0.1 ms of CPU on a VM) and of its per-block Python."""
STATUS_EVERY_S = 2.0
"""Server-sent ``status`` events come this often."""
TASK_STOP_S = 3.0
"""Background tasks (tracker, MPRIS, Icecast push) get this long to end when serve stops."""
MAX_BODY_BYTES = 16 * 1024
"""Largest request body (``POST /api/metadata``); a title is a few hundred bytes."""
BODY_TIMEOUT_S = 10.0
"""A request body must arrive within this long (a slow-body client holds nothing longer)."""
HEADER_TIMEOUT_S = 15.0
"""Default of ``--header-timeout-s``: a connection that has not sent a whole request this long
after connecting (or after its last answer) is closed (Icecast's header-timeout)."""
MAX_LINE_BYTES = 4096
"""Longest request line: our URLs, with a token, are under 200 bytes."""
MAX_FIELD_BYTES = 8190
"""Longest header (aiohttp's default): room for cookies other apps on this host set."""
MAX_HEADERS = 64
"""Most header lines in one request: browsers and players send about 15."""
EVENTS_STALL_S = 30.0
"""An /api/events client whose socket takes nothing for this long is dropped."""
STREAM_SNDBUF_BYTES = 64 * 1024
"""Kernel send buffer of a listener's socket (Linux doubles it): ~8 s of 128 kbit/s MP3, and
640 KB/s over a 200 ms round trip — far more than any stream needs. Left to autotuning a
socket whose client never reads would pin up to 4 MB of kernel memory and take minutes to
show as stalled."""
OPEN_PATHS = frozenset({"/app.js", "/app.css", "/api/metadata"})
"""Paths a listen token does not guard: static, secret-free assets, and the metadata POST
(guarded by its own bearer token). Everything else, present or future, needs the token."""
# media-src blob:: the page feeds its <audio> element through a MediaSource (an object URL).
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
       "media-src 'self' blob:; img-src 'self' data:; base-uri 'none'; form-action 'none'; "
       "frame-ancestors 'none'")
PAGE_HEADERS = {"Cache-Control": NO_CACHE, "Content-Security-Policy": CSP,
                "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
                "X-Frame-Options": "DENY"}
API_HEADERS = {"Cache-Control": NO_CACHE, "Access-Control-Allow-Origin": "*",
               "X-Content-Type-Options": "nosniff"}


class Server:
    def __init__(self, source: Source, *, bitrate_kbps: int = 128, opus_bitrate_kbps: float = 96,
                 aac_bitrate_kbps: int = 128,
                 rtprio: int = 0, burst_s: float = 1.0, opus_burst_s: float = 2.0,
                 max_lag_s: float = 4.0,
                 max_listeners: int = 1000, max_per_address: int = 20, always_on: bool = False,
                 idle_stop_s: float = 2.0, token: str = "", icy_metaint: int = DEFAULT_METAINT,
                 name: str = "deskcast", listen_token: str = "") -> None:
        self.source = source
        self.rtprio = rtprio
        self.name = name
        self.started = time.monotonic()
        self.max_listeners = max_listeners
        self.max_per_address = max_per_address
        self.always_on = always_on
        self.token = token
        self.listen_token = listen_token
        self.max_lag_s = max_lag_s
        self.icy_metaint = icy_metaint
        self.refused = 0
        self.nowplaying = NowPlaying()
        self.bitrates: dict[str, float] = {"mp3": bitrate_kbps, "opus": opus_bitrate_kbps,
                                           "aac": aac_bitrate_kbps}
        fmt = source.fmt
        factories: dict[str, Callable[[], StreamEncoder]] = {
            "mp3": lambda: Mp3Stream(fmt, bitrate_kbps),
            "opus": lambda: OggOpusStream(fmt, opus_bitrate_kbps),
            "aac": lambda: AacStream(fmt, aac_bitrate_kbps),
        }
        self.streams: dict[str, FormatStream] = {}
        for fmt_name, factory in factories.items():
            try:
                factory()  # fail now, not at the first listener
            except ConfigError as err:
                logger.warning("no /stream.%s: %s", fmt_name, err)
                continue
            burst = opus_burst_s if fmt_name == "opus" else burst_s
            if burst > max_lag_s:
                raise ConfigError(f"the {fmt_name} burst ({burst:g} s) cannot exceed --max-lag-s "
                                  f"({max_lag_s:g} s): a new listener would be cut at once")
            self.streams[fmt_name] = FormatStream(FORMATS[fmt_name], factory, burst_s=burst,
                                                  max_lag_s=max_lag_s, always_on=always_on,
                                                  idle_stop_s=idle_stop_s)
        if not self.streams:
            raise ConfigError(f"no format can carry {fmt}: use --rate 48000")
        self.nowplaying.watch(self._retag)
        self.internal: dict[str, int] = dict.fromkeys(self.streams, 0)
        """Internal consumers (:meth:`subscribe`) per format."""
        self.status_providers: dict[str, Callable[[], dict[str, Any]]] = {}
        """Extra sections of /api/status and its events, e.g. ``{"icecast": push.status}``."""
        self._per_address: dict[str, int] = {}
        self._event_clients = 0
        self._status_cache: tuple[float, bytes] = (-1e9, b"")
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._closing = asyncio.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=[self._guard])
        self.app.on_response_prepare.append(_nosniff)
        r = self.app.router
        r.add_get("/", self.page)
        r.add_get("/app.js", self.asset)
        r.add_get("/app.css", self.asset)
        r.add_get("/stream.{fmt}", self.stream)
        r.add_get("/api/status", self.status)
        r.add_get("/api/events", self.events)
        r.add_post("/api/metadata", self.metadata)
        r.add_route("OPTIONS", "/api/metadata", self.preflight)
        r.add_get("/metrics", self.metrics)

    # --- hooks for internal consumers ------------------------------------------------------

    async def subscribe(self, fmt: str) -> AsyncGenerator[bytes]:
        """The encoded stream of ``fmt`` ("mp3", "opus"), as an internal consumer.

        Yields the header (Ogg: the OpusHead/OpusTags pages) with the first batch, then whole
        frames/pages about every 100 ms. The format's encoder runs while the iterator is open.
        The iterator ends if the consumer falls more than ``max_lag_s`` behind or the source
        ends; subscribing again starts afresh (header again). Close it to let the encoder stop:
        ``async with contextlib.aclosing(server.subscribe("opus")) as chunks: async for …``.
        """
        stream = self.streams.get(fmt)
        if stream is None:
            raise ValueError(f"no format {fmt!r}: use one of {', '.join(self.streams)}")
        listener = stream.acquire().subscribe()
        self.internal[fmt] += 1
        try:
            while (data := await listener.next_batch()) is not None:
                yield data
        finally:
            listener.close()
            self.internal[fmt] -= 1
            stream.release()

    def on_now_playing(self, callback: Callable[[Track], None]) -> Callable[[], None]:
        """Call ``callback(track)`` (on the loop thread) whenever now playing changes; returns
        a function that removes it. ``server.nowplaying.track`` is the current one."""
        return self.nowplaying.watch(callback)

    def _title(self) -> str:
        """The ICY title now."""
        return self.nowplaying.track.text

    def _retag(self, track: Track) -> None:
        for stream in self.streams.values():
            stream.set_tags(track.artist, track.title)

    # --- audio thread -------------------------------------------------------------------------

    def start_audio(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        for stream in self.streams.values():
            if stream.always_on:
                stream.start()
        self._thread = threading.Thread(target=self._audio, name="deskcast-audio", daemon=True)
        self._thread.start()

    def _audio(self) -> None:
        realtime.request(self.rtprio)
        loop = self._loop
        assert loop is not None
        streams = list(self.streams.values())
        # The last burst's worth of PCM: a freshly started encoder encodes it first, so the
        # listener who started it gets a burst too (~2 s of audio: tens of ms of CPU, once).
        keep_s = max(s.burst_s for s in streams)
        history: deque[PcmBlock] = deque()
        history_s = 0.0
        try:
            while not self._stop.is_set():
                block = self.source.read()
                if block is None:
                    logger.info("the source ended")
                    break
                for stream in streams:
                    running = stream.running  # set and cleared by the loop thread
                    if running is None:
                        continue
                    if not running.primed:
                        running.primed = True
                        skip = history_s - stream.burst_s
                        for old in history:
                            if skip >= old.duration - 1e-9:
                                skip -= old.duration
                                continue
                            for chunk in running.encoder.encode(old):
                                loop.call_soon_threadsafe(running.broadcaster.publish, chunk)
                    for chunk in running.encoder.encode(block):
                        loop.call_soon_threadsafe(running.broadcaster.publish, chunk)
                if keep_s > 0:
                    history.append(block)
                    history_s += block.duration
                    while history and history_s - history[0].duration >= keep_s - 1e-9:
                        history_s -= history.popleft().duration
        except BaseException as err:
            self.error = err
            logger.error("audio stopped: %s", err)
        finally:
            if not loop.is_closed():
                for stream in streams:
                    loop.call_soon_threadsafe(stream.end)

    def stop_audio(self) -> None:
        self._stop.set()
        self._closing.set()
        if self._thread is not None:
            self._thread.join(2.0)

    # --- HTTP: listen token -----------------------------------------------------------------

    @web.middleware
    async def _guard(self, request: web.Request,
                     handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                     ) -> web.StreamResponse:
        """With a listen token, refuse (401) requests without it, except :data:`OPEN_PATHS`
        and CORS preflights (browsers never send credentials with those)."""
        if self.listen_token and request.method != "OPTIONS" and \
                request.path not in OPEN_PATHS and not self._has_listen_token(request):
            resp = _error(401, "this server needs the listen token: add ?token=TOKEN to the "
                          "URL, or log in with any user name and the token as password")
            resp.headers["WWW-Authenticate"] = 'Basic realm="deskcast", charset="UTF-8"'
            return resp
        return await handler(request)

    def _has_listen_token(self, request: web.Request) -> bool:
        given = request.query.get("token")
        if given is None:
            scheme, _, value = request.headers.get("Authorization", "").partition(" ")
            if scheme.lower() != "basic":
                return False
            try:
                decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
            except (ValueError, UnicodeDecodeError):
                return False
            _user, colon, given = decoded.partition(":")
            if not colon:
                return False
        return hmac.compare_digest(given.encode(), self.listen_token.encode())

    # --- HTTP: page -----------------------------------------------------------------------

    async def page(self, request: web.Request) -> web.Response:
        return web.Response(text=page.HTML, content_type="text/html", headers=PAGE_HEADERS)

    async def asset(self, request: web.Request) -> web.Response:
        if request.path == "/app.js":
            return web.Response(text=page.JS, content_type="text/javascript",
                                headers=PAGE_HEADERS)
        return web.Response(text=page.CSS, content_type="text/css", headers=PAGE_HEADERS)

    # --- HTTP: streams --------------------------------------------------------------------

    @property
    def listeners(self) -> int:
        return sum(s.stats.listeners for s in self.streams.values()) - sum(self.internal.values())

    async def stream(self, request: web.Request) -> web.StreamResponse:
        fmt = request.match_info["fmt"]
        stream = self.streams.get(fmt)
        if stream is None:
            offered = ", ".join(f"/stream.{f}" for f in self.streams)
            return _error(404, f"no stream format {fmt!r} here: use {offered}")
        spec = stream.spec
        headers = {"Content-Type": spec.content_type, **API_HEADERS,
                   "icy-name": self.name, "icy-pub": "0",
                   "icy-br": f"{self.bitrates[fmt]:g}"}
        icy = spec.icy and request.headers.get("Icy-MetaData", "").strip() == "1"
        if icy:
            headers["icy-metaint"] = str(self.icy_metaint)
        if request.method == "HEAD":
            return web.Response(headers=headers)
        if stream.ended:
            return _error(503, "the source has ended; restart deskcast serve")
        address = request.remote or "?"
        if self.listeners >= self.max_listeners or \
                self._per_address.get(address, 0) >= self.max_per_address:
            self.refused += 1
            refusal = _error(503, "too many listeners, try again in 10 s")
            refusal.headers["Retry-After"] = "10"
            return refusal
        resp = web.StreamResponse(headers=headers)
        sock = request.transport.get_extra_info("socket") if request.transport else None
        if sock is not None:
            with contextlib.suppress(OSError):  # the client may have hung up already
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, STREAM_SNDBUF_BYTES)
        listener = stream.acquire().subscribe()
        inserter = IcyInserter(self.icy_metaint) if icy else None
        self._per_address[address] = self._per_address.get(address, 0) + 1
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
                    data = inserter.feed(data, self.nowplaying.track.text)
                # A client that stops reading would block here forever, holding its slot.
                await _write(request, resp, data, self.max_lag_s + 1.0)
                transport = request.transport
                if direct and transport is not None and not transport.is_closing():
                    chunked = resp.headers.get(hdrs.TRANSFER_ENCODING, "").lower() == "chunked"
                    await listener.stream_to(transport, chunked=chunked, icy=inserter,
                                             title=self._title)
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
            stream.release()
            left = self._per_address.get(address, 1) - 1
            if left:
                self._per_address[address] = left
            else:
                self._per_address.pop(address, None)
        return resp

    # --- HTTP: API ------------------------------------------------------------------------

    def status_dict(self) -> dict[str, Any]:
        formats: dict[str, Any] = {}
        totals = {"listeners_total": 0, "listeners_cut": 0, "published_bytes": 0,
                  "sent_bytes": 0}
        for name, stream in self.streams.items():
            st = stream.stats
            formats[name] = {
                "path": f"/stream.{name}", "content_type": stream.spec.content_type,
                "bitrate_kbps": self.bitrates[name],
                "listeners": st.listeners - self.internal[name],
                "internal": self.internal[name],
                "encoder": "running" if st.running else "stopped",
                "encoder_starts": st.starts, "listeners_total": st.listeners_total,
                "listeners_cut": st.listeners_cut, "sent_bytes": st.sent_bytes,
                "published_bytes": st.published_bytes, "icy": stream.spec.icy,
            }
            totals["listeners_total"] += st.listeners_total
            totals["listeners_cut"] += st.listeners_cut
            totals["published_bytes"] += st.published_bytes
            totals["sent_bytes"] += st.sent_bytes
        return {
            "uptime_s": round(time.monotonic() - self.started, 1),
            "source": self.source.name,
            "source_overruns": self.source.overruns,
            "always_on": self.always_on,
            "formats": formats,
            "listeners": self.listeners,
            **totals,
            "listeners_refused": self.refused,
            "event_clients": self._event_clients,
            "now_playing": self.nowplaying.track.as_dict(),
            **{name: provide() for name, provide in self.status_providers.items()},
        }

    async def status(self, request: web.Request) -> web.Response:
        return web.Response(text=json.dumps(self.status_dict()),
                            content_type="application/json", headers=API_HEADERS)

    async def preflight(self, request: web.Request) -> web.Response:
        return web.Response(status=204, headers={
            **API_HEADERS, "Access-Control-Allow-Methods": "POST",
            "Access-Control-Allow-Headers": "Authorization, Content-Type"})

    async def metadata(self, request: web.Request) -> web.Response:
        auth = request.headers.get("Authorization", "")
        scheme, _, given = auth.partition(" ")
        if scheme.lower() != "bearer" or not self.token or \
                not hmac.compare_digest(given.strip().encode(), self.token.encode()):
            resp = _error(401, "missing or wrong token: send 'Authorization: Bearer TOKEN' "
                          "(the token is in the serve log, or set it with --token)")
            resp.headers["WWW-Authenticate"] = 'Bearer realm="deskcast"'
            return resp
        if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
            return _error(413, f"body too large: at most {MAX_BODY_BYTES} bytes")
        try:
            async with asyncio.timeout(BODY_TIMEOUT_S):
                raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return _error(413, f"body too large: at most {MAX_BODY_BYTES} bytes")
        except TimeoutError:
            return _error(408, f"the body did not arrive within {BODY_TIMEOUT_S:g} s")
        try:
            body = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            return _error(400, 'body is not JSON: send {"title": "Artist - Title"}')
        try:
            artist, title = parse_metadata(body)
        except ValueError as err:
            return _error(400, str(err))
        self.nowplaying.set(artist, title, "api")
        return web.Response(text=json.dumps({"now_playing": self.nowplaying.track.as_dict()}),
                            content_type="application/json", headers=API_HEADERS)

    async def events(self, request: web.Request) -> web.StreamResponse:
        """Server-sent events: ``metadata`` at once and on every change, ``status`` every 2 s."""
        if self._event_clients >= self.max_listeners:
            self.refused += 1
            return _error(503, "too many event clients, try again in 10 s")
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                           **API_HEADERS})
        queue: asyncio.Queue[Track] = asyncio.Queue(maxsize=16)

        def changed(track: Track) -> None:
            if queue.full():
                queue.get_nowait()
            queue.put_nowait(track)

        unwatch = self.nowplaying.watch(changed)
        self._event_clients += 1
        try:
            await resp.prepare(request)
            await _write(request, resp, b"retry: 2000\n\n" +
                         _sse("metadata", self.nowplaying.track.as_dict()) +
                         self._status_event(), EVENTS_STALL_S)
            next_status = time.monotonic() + STATUS_EVERY_S
            while not self._closing.is_set():
                wait = max(next_status - time.monotonic(), 0.0)
                try:
                    track = await asyncio.wait_for(queue.get(), wait)
                except TimeoutError:
                    await _write(request, resp, self._status_event(), EVENTS_STALL_S)
                    next_status = time.monotonic() + STATUS_EVERY_S
                else:
                    await _write(request, resp, _sse("metadata", track.as_dict()),
                                 EVENTS_STALL_S)
        except (ConnectionResetError, asyncio.CancelledError, TimeoutError):
            pass
        finally:
            unwatch()
            self._event_clients -= 1
        return resp

    def _status_event(self) -> bytes:
        """The ``status`` event, built at most every 0.5 s however many clients there are."""
        now = time.monotonic()
        if now - self._status_cache[0] > 0.5:
            self._status_cache = (now, _sse("status", self.status_dict()))
        return self._status_cache[1]

    async def metrics(self, request: web.Request) -> web.Response:
        lines: list[str] = []

        def metric(name: str, kind: str, text: str, values: list[tuple[str, float]]) -> None:
            lines.append(f"# HELP deskcast_{name} {text}")
            lines.append(f"# TYPE deskcast_{name} {kind}")
            for labels, value in values:
                lines.append(f"deskcast_{name}{labels} {value:g}")

        st = {name: s.stats for name, s in self.streams.items()}

        def per(fn: Callable[[str], float]) -> list[tuple[str, float]]:
            return [(f'{{format="{name}"}}', fn(name)) for name in st]

        metric("uptime_seconds", "gauge", "Seconds since serve started.",
               [("", round(time.monotonic() - self.started, 1))])
        metric("listeners", "gauge", "HTTP listeners connected now.",
               per(lambda f: st[f].listeners - self.internal[f]))
        metric("internal_consumers", "gauge", "Internal consumers (e.g. an Icecast push).",
               per(lambda f: self.internal[f]))
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
               [("", self.refused)])
        metric("event_clients", "gauge", "Clients of /api/events.", [("", self._event_clients)])
        metric("source_overruns_total", "counter",
               "Times the capture device dropped audio because it was read too late.",
               [("", self.source.overruns)])
        return web.Response(text="\n".join(lines) + "\n",
                            headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8",
                                     "Cache-Control": NO_CACHE})


def _sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


def _error(status: int, message: str) -> web.Response:
    """A one-line plain-text error (``nosniff``: it may quote the request)."""
    return web.Response(status=status, text=message + "\n",
                        headers={"Cache-Control": NO_CACHE, "X-Content-Type-Options": "nosniff",
                                 "Access-Control-Allow-Origin": "*"})


async def _nosniff(request: web.Request, response: web.StreamResponse) -> None:
    """Every answer, aiohttp's own errors too: browsers must not guess a type for it."""
    response.headers.setdefault("X-Content-Type-Options", "nosniff")


async def _write(request: web.Request, resp: web.StreamResponse, data: bytes,
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


class _Site(web.TCPSite):
    """A TCP site whose TLS handshake has to finish within ``handshake_timeout_s`` (asyncio's
    default, 60 s, would let a client that never says hello hold a socket that long)."""

    def __init__(self, runner: web.AppRunner, host: str | None, port: int, *,
                 ssl_context: ssl.SSLContext | None, handshake_timeout_s: float,
                 backlog: int = MIN_BACKLOG) -> None:
        super().__init__(runner, host, port, ssl_context=ssl_context, backlog=backlog)
        self.handshake_timeout_s = handshake_timeout_s

    async def start(self) -> None:
        if self._ssl_context is None:
            await super().start()
            return
        await web.BaseSite.start(self)  # registers the site with the runner
        server = self._runner.server
        assert server is not None
        self._server = await asyncio.get_running_loop().create_server(
            server, self._host, self._port, ssl=self._ssl_context, backlog=self._backlog,
            ssl_handshake_timeout=self.handshake_timeout_s)
        sockets = self._server.sockets
        self._bound_port = sockets[0].getsockname()[1] if sockets else self._port


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
                tasks: Sequence[Callable[[asyncio.Event], Any]] = (), *,
                ssl_context: ssl.SSLContext | None = None,
                header_timeout_s: float = HEADER_TIMEOUT_S) -> None:
    """Serve until ``stop`` is set; ``tasks`` are coroutine functions taking ``stop`` (e.g. the
    song-tracker poller), run alongside and cancelled at the end. With ``ssl_context``, HTTPS.
    """
    # aiohttp's keep-alive timer starts when a connection opens and is not reset by incoming
    # bytes, so it also bounds how long a client may take to send its request headers.
    raise_fd_limit(server.max_listeners)
    runner = web.AppRunner(server.app, access_log=None, handler_cancellation=True,
                           shutdown_timeout=1.0, keepalive_timeout=header_timeout_s,
                           max_line_size=MAX_LINE_BYTES, max_field_size=MAX_FIELD_BYTES,
                           max_headers=MAX_HEADERS)
    await runner.setup()
    site = _Site(runner, host or None, port, ssl_context=ssl_context,
                 handshake_timeout_s=header_timeout_s, backlog=listen_backlog(server.max_listeners))
    try:
        await site.start()
    except OSError as err:
        await runner.cleanup()
        from deskcast.errors import DeviceError

        raise DeviceError(f"cannot listen on {host or '*'}:{port}: {err.strerror} — is "
                          "another server running? choose another with --listen") from None
    # What exists now (modules, the app, the encoders' set-up) lives as long as serve: out of
    # the collector's sight, a full collection no longer walks ~50,000 objects (~35 ms with the
    # loop stalled, seen in connect storms, when hundreds of new connections trigger one).
    gc.freeze()
    server.start_audio(asyncio.get_running_loop())
    logger.info("serving %s on %s://%s:%d/ (streams: %s)", server.source.name,
                "https" if ssl_context else "http", host or "0.0.0.0", port,
                ", ".join(f"/stream.{f}" for f in server.streams))
    running = [asyncio.create_task(task(stop)) for task in tasks]
    try:
        await stop.wait()
    finally:
        for task in running:
            task.cancel()
        if running:
            _done, pending = await asyncio.wait(running, timeout=TASK_STOP_S)
            for task in pending:
                logger.warning("a background task did not stop within %g s: %r", TASK_STOP_S,
                               task.get_coro())
        server.stop_audio()
        for stream in server.streams.values():
            stream.end()
        await runner.cleanup()
