"""``serve --hls DIR``: the AAC stream as HTTP Live Streaming, written to a folder.

Any web server (or a CDN) can serve the folder: ``index.m3u8``, a live playlist of the last
:data:`WINDOW` segments, and the segments themselves, ``NNNNNNNN.aac``. They are HLS "packed
audio" (RFC 8216 section 3.4): the ADTS frames of serve's one AAC encoder, cut at frame
boundaries every ``segment_s``, each segment opened by an ID3 tag whose PRIV frame
``com.apple.streaming.transportStreamTimestamp`` says where it starts on the 90 kHz clock.
Safari and iOS play the playlist natively, other browsers through hls.js, and ffmpeg, VLC and
mpv read it too. Packed audio rather than fMP4: the segments are the encoder's own frames, with
no remuxing, and every one is a join point.

Files are replaced atomically (written aside, then renamed), so a web server never serves half
a playlist; segments that left the playlist are deleted a little later, so a client holding
the previous playlist still finds them. When the encoder restarts, the next segment is marked
``#EXT-X-DISCONTINUITY``; when serve stops, the playlist ends with ``#EXT-X-ENDLIST``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deskcast.encode.aac import FRAME_SAMPLES, split_adts
from deskcast.errors import ConfigError

if TYPE_CHECKING:
    from deskcast.http.server import Server

logger = logging.getLogger(__name__)

PLAYLIST = "index.m3u8"
SEGMENT_S = 2.0
"""Default segment length: a player starts after ~3 segments, so this sets the delay behind
live (~6-8 s with 2 s); Apple suggests 6 s for robustness, 2 s keeps the delay reasonable."""
WINDOW = 6
"""Segments listed in the live playlist."""
KEEP_EXTRA = 3
"""Segments kept on disk after they left the playlist (for clients with an older playlist)."""
RESUBSCRIBE_S = 0.5
"""Pause before subscribing again after the stream ended (a source that ended, a restart)."""
TIMESTAMP_OWNER = b"com.apple.streaming.transportStreamTimestamp"
_CLOCK = 90000
"""MPEG-2 transport stream clock of the timestamps."""


def _syncsafe(n: int) -> bytes:
    """ID3v2 size: 7 bits per byte."""
    return bytes(((n >> 21) & 0x7F, (n >> 14) & 0x7F, (n >> 7) & 0x7F, n & 0x7F))


def timestamp_tag(pts_90khz: int) -> bytes:
    """The ID3v2.4 tag that opens a packed-audio segment: one PRIV frame with the 33-bit
    timestamp of the segment's first sample."""
    body = TIMESTAMP_OWNER + b"\0" + (pts_90khz % (1 << 33)).to_bytes(8, "big")
    frame = b"PRIV" + _syncsafe(len(body)) + b"\0\0" + body
    return b"ID3\x04\x00\x00" + _syncsafe(len(frame)) + frame


@dataclass
class Segment:
    sequence: int
    duration_s: float
    discontinuity: bool

    @property
    def name(self) -> str:
        return f"{self.sequence:08d}.aac"


class HlsWriter:
    """Collects ADTS frames into segments and keeps the folder's playlist current."""

    def __init__(self, folder: Path, sample_rate: int, segment_s: float = SEGMENT_S,
                 window: int = WINDOW) -> None:
        if not 0.5 <= segment_s <= 30:
            raise ConfigError(f"--hls-segment-s {segment_s:g} is out of range: use 0.5 to 30 "
                              f"seconds ({SEGMENT_S:g} is the default)")
        self.folder = folder
        self.sample_rate = sample_rate
        self.frames_per_segment = math.ceil(segment_s * sample_rate / FRAME_SAMPLES)
        self.window = window
        self.segments: list[Segment] = []
        self.written = 0
        self._frames: list[bytes] = []
        self._samples = 0
        """Samples in all segments so far: the next segment's timestamp."""
        self._sequence = 0
        self._discontinuity = False
        self._remainder = b""
        self._discontinuities_gone = 0
        """Discontinuities of the segments no longer kept (for DISCONTINUITY-SEQUENCE)."""

    def prepare(self) -> None:
        """Make the folder (or check it) and clear what an earlier run left there."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            for old in self.folder.glob("*.aac"):
                if old.stem.isdigit():
                    old.unlink()
            (self.folder / PLAYLIST).unlink(missing_ok=True)
            probe = self.folder / ".deskcast-write-test"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as err:
            raise ConfigError(f"--hls {self.folder}: cannot write there ({err.strerror}); "
                              "give a folder this user may write to") from None

    def restart(self) -> None:
        """The stream ended (the encoder stops or starts afresh): what there is of a segment
        becomes a short one, and the next segment is marked as a discontinuity."""
        if self._frames:
            self._write_segment()
        self._remainder = b""
        self._discontinuity = bool(self.segments)

    def feed(self, data: bytes) -> None:
        """Bytes of the ADTS stream, cut anywhere."""
        frames, self._remainder = split_adts(self._remainder + data)
        for frame in frames:
            self._frames.append(frame)
            if len(self._frames) >= self.frames_per_segment:
                self._write_segment()

    def finish(self) -> None:
        """The stream ends (serve stops): the partial segment is written and the playlist
        gets ``#EXT-X-ENDLIST``, so players stop at its end instead of waiting for more."""
        if self._frames:
            self._write_segment()
        if self.segments:
            self._replace(PLAYLIST, (self.playlist(self.segments[-self.window:])
                                     + "#EXT-X-ENDLIST\n").encode())

    def _write_segment(self) -> None:
        frames, self._frames = self._frames, []
        self._sequence += 1
        segment = Segment(self._sequence, len(frames) * FRAME_SAMPLES / self.sample_rate,
                          self._discontinuity)
        self._discontinuity = False
        pts = self._samples * _CLOCK // self.sample_rate
        self._samples += len(frames) * FRAME_SAMPLES
        self._replace(segment.name, timestamp_tag(pts) + b"".join(frames))
        self.segments.append(segment)
        self.written += 1
        listed = self.segments[-self.window:]
        self._replace(PLAYLIST, self.playlist(listed).encode())
        while len(self.segments) > self.window + KEEP_EXTRA:
            gone = self.segments.pop(0)
            self._discontinuities_gone += gone.discontinuity
            with contextlib.suppress(FileNotFoundError):
                (self.folder / gone.name).unlink()

    def playlist(self, segments: list[Segment]) -> str:
        target = max([1] + [round(s.duration_s) for s in segments])
        lines = ["#EXTM3U", "#EXT-X-VERSION:3", f"#EXT-X-TARGETDURATION:{target}",
                 f"#EXT-X-MEDIA-SEQUENCE:{segments[0].sequence}"]
        unlisted = self.segments[:len(self.segments) - len(segments)]
        discontinuities = self._discontinuities_gone + sum(s.discontinuity for s in unlisted)
        if discontinuities:
            lines.append(f"#EXT-X-DISCONTINUITY-SEQUENCE:{discontinuities}")
        for s in segments:
            if s.discontinuity:
                lines.append("#EXT-X-DISCONTINUITY")
            lines += [f"#EXTINF:{s.duration_s:.5f},", s.name]
        return "\n".join(lines) + "\n"

    def _replace(self, name: str, data: bytes) -> None:
        """Write ``name`` whole: aside first, then renamed over the old one."""
        aside = self.folder / f".{name}.part"
        aside.write_bytes(data)
        os.replace(aside, self.folder / name)

    name = "hls"
    """Its section in /api/status (it is one of serve's relays)."""

    def status(self) -> dict[str, Any]:
        return {"folder": str(self.folder), "segments_written": self.written,
                "segment_s": round(self.frames_per_segment * FRAME_SAMPLES
                                   / self.sample_rate, 3),
                "playlist": str(self.folder / PLAYLIST)}

    async def relay(self, server: Server, stopping: asyncio.Event) -> None:
        """As one of serve's relays: from ``server``'s AAC stream."""
        await self.run(lambda: server.subscribe("aac"))

    async def run(self, subscribe: Callable[[], AsyncGenerator[bytes]]) -> None:
        """Write segments from serve's AAC stream until cancelled; after the stream ends (the
        encoder restarted, or this consumer fell behind) subscribe again."""
        self.prepare()
        try:
            await self._follow(subscribe)
        finally:
            try:
                self.finish()
            except OSError as err:
                logger.warning("HLS: cannot end the playlist in %s (%s)", self.folder,
                               err.strerror)

    async def _follow(self, subscribe: Callable[[], AsyncGenerator[bytes]]) -> None:
        logger.info("writing HLS to %s (a segment every %.2f s)", self.folder / PLAYLIST,
                    self.frames_per_segment * FRAME_SAMPLES / self.sample_rate)
        while True:
            async with contextlib.aclosing(subscribe()) as chunks:
                async for data in chunks:
                    try:
                        self.feed(data)
                    except OSError as err:
                        logger.warning("HLS: cannot write to %s (%s); dropping this segment",
                                       self.folder, err.strerror)
            self.restart()
            await asyncio.sleep(RESUBSCRIBE_S)
