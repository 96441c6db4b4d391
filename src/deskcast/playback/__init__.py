"""Playback: PCM out to a sound server, an ALSA device, a file, stdout or nowhere.

Every backend is a :class:`~deskcast.playback.base.Sink`; :func:`make_sink` picks one from an
endpoint URI.
"""

from __future__ import annotations

from deskcast.endpoints import Direction, Endpoint, parse
from deskcast.media import AudioFormat
from deskcast.playback.base import Sink, SinkClosedError

__all__ = ["Sink", "SinkClosedError", "make_sink"]


def make_sink(uri: str | Endpoint, fmt: AudioFormat, block_frames: int, *,
              hub_name: str = "deskcast", buffer_ms: float = 40.0) -> Sink:
    """Build (not open) the sink named by ``uri``."""
    endpoint = uri if isinstance(uri, Endpoint) else parse(uri, Direction.SINK)
    scheme = endpoint.scheme
    if scheme == "pulse":
        from deskcast.playback.pulse import PulseSink

        return PulseSink(endpoint, fmt, block_frames, hub_name=hub_name, buffer_ms=buffer_ms)
    if scheme == "alsa":
        from deskcast.playback.alsa import AlsaSink

        return AlsaSink(endpoint, fmt, block_frames, buffer_ms=buffer_ms)
    if scheme == "file":
        from deskcast.playback.file import FileSink

        return FileSink(endpoint, fmt, block_frames)
    if scheme == "stdout":
        from deskcast.playback.stdout import StdoutSink

        return StdoutSink(endpoint, fmt, block_frames)
    if scheme == "null":
        from deskcast.playback.null import NullSink

        return NullSink(endpoint, fmt, block_frames)
    raise AssertionError(f"unhandled sink scheme {scheme!r}")
