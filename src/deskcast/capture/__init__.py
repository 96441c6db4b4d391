"""Capture: PCM in from a sound server, an ALSA device, a file, a generator or stdin.

Every backend is a :class:`~deskcast.capture.base.Source`; :func:`open_source` picks one from
an endpoint URI. Backends are imported lazily, so a missing libpulse only matters to ``pulse:``.
"""

from __future__ import annotations

import logging

from deskcast.capture.base import Source
from deskcast.endpoints import Direction, Endpoint, parse
from deskcast.media import AudioFormat

logger = logging.getLogger(__name__)

__all__ = ["Source", "make_source", "resolve_desktop"]

GENERATORS = ("tone", "silence", "noise", "sweep", "demo")
ALSA_HUB_DEVICE = "hubcap"


def resolve_desktop(endpoint: Endpoint) -> Endpoint:
    """``desktop``: the sound server's desktop mix, else the ALSA hub, else the demo chime
    (with one line saying why), so that deskcast always starts."""
    from deskcast import soundserver

    if soundserver.available():
        return Endpoint("pulse", "", {}, Direction.SOURCE)
    from deskcast.alsa import device_names

    if ALSA_HUB_DEVICE in device_names(capture=True):
        return Endpoint("alsa", ALSA_HUB_DEVICE, {}, Direction.SOURCE)
    logger.warning(
        "no sound server is running (%s) and no ALSA hub is set up: playing the built-in demo "
        "chime instead — start PulseAudio/PipeWire or run `deskcast hub setup --backend alsa`",
        soundserver.server_label(),
    )
    return Endpoint("demo", "", {}, Direction.SOURCE)


def make_source(uri: str | Endpoint, fmt: AudioFormat, block_frames: int, *,
                hub_name: str = "deskcast", buffer_ms: float = 40.0) -> Source:
    """Build (not open) the source named by ``uri``."""
    endpoint = uri if isinstance(uri, Endpoint) else parse(uri, Direction.SOURCE)
    if endpoint.scheme == "desktop":
        endpoint = resolve_desktop(endpoint)
    scheme = endpoint.scheme
    if scheme in ("pulse", "alsa") and "clock_ppm" in endpoint.options:
        from deskcast.capture.skew import PIECE_MS, SkewedSource

        ppm = endpoint.number("clock_ppm", 0.0)
        plain = Endpoint(scheme, endpoint.target, {}, endpoint.direction)
        piece = min(block_frames, fmt.frames_for_ms(PIECE_MS))
        return SkewedSource(make_source(plain, fmt, piece, hub_name=hub_name,
                                        buffer_ms=buffer_ms), ppm, block_frames)
    if scheme == "pulse":
        from deskcast.capture.pulse import PulseSource

        return PulseSource(endpoint, fmt, block_frames, hub_name=hub_name)
    if scheme == "alsa":
        from deskcast.capture.alsa import AlsaSource

        return AlsaSource(endpoint, fmt, block_frames, buffer_ms=buffer_ms)
    if scheme == "file":
        from deskcast.capture.file import FileSource

        return FileSource(endpoint, fmt, block_frames)
    if scheme in GENERATORS:
        from deskcast.capture.tone import ToneSource

        return ToneSource(endpoint, fmt, block_frames)
    if scheme == "stdin":
        from deskcast.capture.stdin import StdinSource

        return StdinSource(endpoint, fmt, block_frames)
    raise AssertionError(f"unhandled source scheme {scheme!r}")
