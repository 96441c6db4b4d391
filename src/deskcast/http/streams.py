"""The formats ``serve`` offers, and one encoder per format that runs only while somebody listens.

A :class:`StreamEncoder` turns PCM blocks into :class:`Chunk` objects of ~100 ms that are whole
join points (whole MP3 frames; whole Ogg pages), plus a ``header`` every new listener gets first.

A :class:`FormatStream` owns one format's current encoder and :class:`Broadcaster`. Its users
(HTTP listeners and internal consumers such as an Icecast push) :meth:`~FormatStream.acquire` it;
the first starts a fresh encoder (for Ogg: a new stream serial), and ``idle_stop_s`` after the
last one leaves the encoder stops again, unless ``always_on``. The audio thread reads
:attr:`FormatStream.running` once per block and feeds only the encoders that run.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from deskcast.encode.aac import AacEncoder
from deskcast.encode.mp3 import Mp3Encoder
from deskcast.encode.ogg import OPUS_GRANULE_RATE, OggOpusMuxer
from deskcast.encode.opus import OpusEncoder
from deskcast.http.broadcaster import Broadcaster, Chunk
from deskcast.media import AudioFormat, PcmBlock, Reblocker

logger = logging.getLogger(__name__)

CHUNK_S = 0.1
"""Frames are handed to the event loop in ~100 ms chunks: writes are batched anyway."""
MAX_BATCH_S = 0.3
"""Longest batch written to a listener once there are many (see :data:`WRITES_PER_S`): the page
keeps ~0.5 s buffered ahead of its playhead, so 0.3 s batches never starve it."""
WRITES_PER_S = 1000.0
"""Above this many writes per second (listeners / batch) a format's batch grows, up to
:data:`MAX_BATCH_S`: each write is a send() syscall plus Python around it, the bulk of serve's
CPU with hundreds of listeners. 100 listeners get 0.1 s batches, 300 and more 0.3 s."""
OPUS_FRAME_MS = 20.0
"""20 ms Opus frames: the codec's sweet spot and what every player expects."""


class StreamEncoder(Protocol):
    header: bytes
    """Sent to every new listener before any audio (empty for MP3)."""

    def encode(self, block: PcmBlock) -> list[Chunk]:
        """The chunks completed by ``block`` (any block size)."""
        ...

    def describe(self) -> str:
        ...

    def header_for(self, artist: str, title: str) -> bytes:
        """The header carrying this now-playing information (MP3: none)."""
        ...


class FrameEncoder(Protocol):
    """An encoder whose every frame decodes on its own (a join point)."""

    @property
    def frame_duration_s(self) -> float: ...

    def encode(self, block: PcmBlock) -> list[bytes]: ...

    def describe(self) -> str: ...


class FramesStream:
    """Self-contained frames (MP3 with the bit reservoir off, AAC in ADTS), ~0.1 s per chunk:
    exactly as many frames per chunk whatever the block size (MP3: 5, 120 ms at 48 kHz)."""

    def __init__(self, encoder: FrameEncoder) -> None:
        self.encoder = encoder
        self.header = b""
        self._pending: list[bytes] = []
        self._per_chunk = math.ceil(CHUNK_S / self.encoder.frame_duration_s - 1e-9)
        self._pts_s = 0.0

    def describe(self) -> str:
        return self.encoder.describe()

    def header_for(self, artist: str, title: str) -> bytes:
        return b""

    def encode(self, block: PcmBlock) -> list[Chunk]:
        self._pending += self.encoder.encode(block)
        chunks: list[Chunk] = []
        n = self._per_chunk
        duration = n * self.encoder.frame_duration_s
        # Exactly n frames, whatever the block size: a 0.3 s batch is then always 3 chunks
        # (0.36 s), never 3 of 6 frames (0.43 s).
        while len(self._pending) >= n:
            frames, self._pending = self._pending[:n], self._pending[n:]
            chunks.append(Chunk(b"".join(frames), duration, self._pts_s))
            self._pts_s += duration
        return chunks


class Mp3Stream(FramesStream):
    """MP3 frames, bit reservoir off: any frame is a join point."""

    def __init__(self, fmt: AudioFormat, bitrate_kbps: int) -> None:
        super().__init__(Mp3Encoder(fmt, bitrate_kbps=bitrate_kbps))


class AacStream(FramesStream):
    """AAC-LC in ADTS frames: what Safari and iOS play over plain HTTP; also HLS's source."""

    def __init__(self, fmt: AudioFormat, bitrate_kbps: int) -> None:
        super().__init__(AacEncoder(fmt, bitrate_kbps=bitrate_kbps))


class OggOpusStream:
    """20 ms Opus packets in Ogg pages, one page (~100 ms) per chunk; a new serial per start."""

    def __init__(self, fmt: AudioFormat, bitrate_kbps: float) -> None:
        self.encoder = OpusEncoder(fmt, frame_ms=OPUS_FRAME_MS, bitrate_kbps=bitrate_kbps,
                                   application="audio")
        pre_skip = self.encoder.lookahead_frames * OPUS_GRANULE_RATE // fmt.rate
        self.muxer = OggOpusMuxer(fmt.channels, pre_skip=pre_skip, input_rate=fmt.rate)
        self.header = self.muxer.header
        self._reblocker = Reblocker(fmt, self.encoder.frame_frames)
        self._packets: list[bytes] = []
        self._per_chunk = round(CHUNK_S * 1000 / OPUS_FRAME_MS)
        self._pts_s = 0.0

    def describe(self) -> str:
        return f"Ogg/{self.encoder.describe()}"

    def header_for(self, artist: str, title: str) -> bytes:
        """Header pages whose OpusTags carry ARTIST and TITLE, for listeners who join now."""
        comments = [f"{k}={v}" for k, v in (("ARTIST", artist), ("TITLE", title)) if v]
        return self.muxer.header_with(comments)

    def encode(self, block: PcmBlock) -> list[Chunk]:
        for frame in self._reblocker.push(block.data):
            self._packets.append(self.encoder.encode(frame))
        chunks: list[Chunk] = []
        n = self._per_chunk
        while len(self._packets) >= n:  # pages of exactly n packets, whatever the block size
            packets, self._packets = self._packets[:n], self._packets[n:]
            duration = n * OPUS_FRAME_MS / 1000
            chunks.append(Chunk(self.muxer.pages(packets), duration, self._pts_s))
            self._pts_s += duration
        return chunks


@dataclass(frozen=True)
class FormatSpec:
    name: str
    """As in ``/stream.NAME`` and in the status."""
    content_type: str
    icy: bool
    """ICY metadata can be interleaved (MP3); Ogg carries titles in its own headers instead."""


FORMATS: dict[str, FormatSpec] = {
    "mp3": FormatSpec("mp3", "audio/mpeg", icy=True),
    "opus": FormatSpec("opus", "audio/ogg", icy=False),
    "aac": FormatSpec("aac", "audio/aac", icy=True),
}


@dataclass
class Running:
    """One run of a format's encoder: handed to the audio thread as a whole."""

    encoder: StreamEncoder
    broadcaster: Broadcaster
    primed: bool = False
    """The audio thread has fed the encoder the recent audio it keeps (see ``EncoderFeed``), so that
    even the listener who started the encoder gets a burst."""


@dataclass
class FormatStats:
    listeners: int
    users: int
    running: bool
    starts: int
    sent_bytes: int
    published_bytes: int
    listeners_total: int
    listeners_cut: int


class FormatStream:
    """One format: its encoder while it runs, its listeners, its counters. Loop thread only,
    except :attr:`running`, which the audio thread reads."""

    def __init__(self, spec: FormatSpec, factory: Callable[[], StreamEncoder], *,
                 burst_s: float, max_lag_s: float, always_on: bool = False,
                 idle_stop_s: float = 2.0) -> None:
        self.spec = spec
        self.factory = factory
        self.burst_s = burst_s
        self.max_lag_s = max_lag_s
        self.always_on = always_on
        self.idle_stop_s = idle_stop_s
        self.running: Running | None = None
        self.users = 0
        self.starts = 0
        self.ended = False
        self._stop_timer: asyncio.TimerHandle | None = None
        self._done = _Totals()
        self.description = ""
        self.started_at: float | None = None
        self._tags = ("", "")
        """(artist, title) for the header of listeners who join from now on."""

    def set_tags(self, artist: str, title: str) -> None:
        """Now playing changed: listeners who join from now on get it in the header (Ogg)."""
        self._tags = (artist, title)
        if self.running is not None:
            self.running.broadcaster.header = self.running.encoder.header_for(artist, title)

    def start(self) -> Running:
        """The running encoder, starting a fresh one if none runs."""
        if self._stop_timer is not None:
            self._stop_timer.cancel()
            self._stop_timer = None
        if self.running is None:
            encoder = self.factory()
            self.description = encoder.describe()
            broadcaster = Broadcaster(header=encoder.header_for(*self._tags), burst_s=self.burst_s,
                                      max_lag_s=self.max_lag_s, batch_s=CHUNK_S,
                                      max_batch_s=MAX_BATCH_S, writes_per_s=WRITES_PER_S)
            self.running = Running(encoder, broadcaster)
            self.starts += 1
            self.started_at = time.monotonic()
            logger.info("%s encoder started (%s)", self.spec.name, self.description)
        return self.running

    def stop(self) -> None:
        running, self.running = self.running, None
        if running is None:
            return
        self._done.add(running.broadcaster)
        running.broadcaster.close()
        self.started_at = None
        logger.info("%s encoder stopped: nobody listens", self.spec.name)

    def acquire(self) -> Broadcaster:
        """A user arrives: the format's broadcaster, its encoder started if needed."""
        self.users += 1
        return self.start().broadcaster

    def release(self) -> None:
        """A user left: stop the encoder ``idle_stop_s`` after the last one, unless always on."""
        self.users = max(self.users - 1, 0)
        if self.users or self.always_on or self.running is None:
            return
        if self._stop_timer is not None:
            self._stop_timer.cancel()
        if self.idle_stop_s <= 0:
            self.stop()
        else:
            loop = asyncio.get_running_loop()
            self._stop_timer = loop.call_later(self.idle_stop_s, self._stop_if_idle)

    def _stop_if_idle(self) -> None:
        self._stop_timer = None
        if not self.users:
            self.stop()

    def end(self) -> None:
        """The source ended: close for good."""
        self.ended = True
        if self._stop_timer is not None:
            self._stop_timer.cancel()
            self._stop_timer = None
        if self.running is not None:
            self.running.broadcaster.close()

    @property
    def stats(self) -> FormatStats:
        totals = _Totals(self._done.sent, self._done.published, self._done.total, self._done.cut)
        listeners = 0
        if self.running is not None:
            totals.add(self.running.broadcaster)
            listeners = self.running.broadcaster.listeners
        return FormatStats(listeners=listeners, users=self.users,
                           running=self.running is not None and not self.ended,
                           starts=self.starts, sent_bytes=totals.sent,
                           published_bytes=totals.published, listeners_total=totals.total,
                           listeners_cut=totals.cut)


@dataclass
class _Totals:
    sent: int = 0
    published: int = 0
    total: int = 0
    cut: int = 0

    def add(self, b: Broadcaster) -> None:
        st = b.stats
        self.sent += st.sent_bytes
        self.published += st.published_bytes
        self.total += st.listeners_total
        self.cut += st.listeners_cut
