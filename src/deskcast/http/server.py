"""``deskcast serve``'s core: one source, one encoder per format, each fanned out by a
:class:`Broadcaster` to any number of listeners.

The audio runs in the same loop as every other command's: a :class:`~deskcast.pump.Pump` reads
the source all the time and writes to serve's sink, the :class:`~deskcast.http.feed.EncoderFeed`,
which feeds the encoders that run (a format's encoder runs while somebody listens to it, or
always with ``always_on``) and hands their ~100 ms chunks to the event loop (the one place where
a thread hands audio to asyncio), where each format's broadcaster fans them out. Each listener
first gets the header (Ogg) and ~1 s of recent audio so players start at once, then live audio;
one that falls more than a few seconds behind is cut and never slows anybody else.

The HTTP side is an aiohttp application (:func:`deskcast.http.app.make_app`) whose handlers
find this object under :data:`SERVER`. Internal consumers (an Icecast push, the HLS writer)
use :meth:`Server.subscribe` and :meth:`Server.on_now_playing`.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncGenerator, Callable
from typing import Any

from aiohttp import web

from deskcast.capture.base import Source
from deskcast.errors import ConfigError
from deskcast.http.feed import EncoderFeed
from deskcast.http.icy import DEFAULT_METAINT
from deskcast.http.nowplaying import NowPlaying, Track
from deskcast.http.streams import (
    FORMATS,
    AacStream,
    FormatStream,
    Mp3Stream,
    OggOpusStream,
    StreamEncoder,
)
from deskcast.pump import Pump

logger = logging.getLogger(__name__)

SERVE_BLOCK_MS = 40.0
"""serve's block size unless ``--block-ms`` (or the config file) sets one: its listeners get
~0.1 s chunks anyway, and 25 blocks a second instead of 100 save the audio thread three
quarters of its wake-ups (each ~0.1 ms of CPU on a VM) and of its per-block Python."""


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
        self.refused = 0
        """Connections refused by the limits (listeners and event clients)."""
        self.event_clients = 0
        """Clients of /api/events connected now."""
        self.closing = asyncio.Event()
        """Set when serve stops: long-lived handlers (/api/events) end."""
        self.feed = EncoderFeed(list(self.streams.values()), fmt, source.block_frames)
        """serve's sink: the running encoders, fed by the audio loop."""
        self._pump: Pump | None = None

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

    def title(self) -> str:
        """The ICY title now."""
        return self.nowplaying.track.text

    def _retag(self, track: Track) -> None:
        for stream in self.streams.values():
            stream.set_tags(track.artist, track.title)

    # --- audio thread -------------------------------------------------------------------------

    def start_audio(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start the encoders that are always on and the audio loop: a :class:`Pump` from
        the source to the encoders' :class:`EncoderFeed`, publishing on ``loop``."""
        for stream in self.streams.values():
            if stream.always_on:
                stream.start()
        self.feed.attach(loop)
        self._pump = Pump(self.source, self.feed, rtprio=self.rtprio)
        self._pump.start(on_end=self._audio_ended)

    def _audio_ended(self, pump: Pump) -> None:
        """On the audio thread, as the loop ends (the feed is closed next: the streams
        end)."""
        if pump.error is not None:
            logger.error("audio stopped: %s", pump.error)
        elif pump.stats.ended == "source ended":
            logger.info("the source ended")

    @property
    def _thread(self) -> threading.Thread | None:
        """The audio thread, once started (the pump's)."""
        return None if self._pump is None else self._pump.thread

    @property
    def error(self) -> BaseException | None:
        """What stopped the audio loop, if it failed."""
        return None if self._pump is None else self._pump.error

    def stop_audio(self) -> None:
        self.closing.set()
        if self._pump is not None:
            self._pump.stop()

    def stop(self) -> None:
        """Stop the audio thread and end every stream (their listeners end); idempotent."""
        self.stop_audio()
        for stream in self.streams.values():
            stream.end()

    @property
    def listeners(self) -> int:
        """HTTP listeners connected now (internal consumers not counted)."""
        return sum(s.stats.listeners for s in self.streams.values()) - sum(self.internal.values())

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
            "event_clients": self.event_clients,
            "now_playing": self.nowplaying.track.as_dict(),
            **{name: provide() for name, provide in self.status_providers.items()},
        }


SERVER = web.AppKey("server", Server)
"""The :class:`Server` an application serves (set by :func:`deskcast.http.app.make_app`)."""
