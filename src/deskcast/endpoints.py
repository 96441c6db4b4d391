"""Short URIs that name where audio comes from (sources) and goes to (sinks).

Written the same everywhere: on the command line, in the config file and in the API::

    pulse[:NAME]      PulseAudio/PipeWire source or sink (default: the desktop mix / default sink)
    alsa:DEVICE       an ALSA PCM: alsa:hubcap, alsa:hw:Loopback,1,0, alsa:pulse:hub.monitor
    file:PATH         any file ffmpeg reads (source) / .wav .flac .raw (sink)
    tone[:FREQ]       a sine tone (Hz, default 440); also silence, noise[:SEED], sweep[:F1-F2]
    demo              a short chime that repeats: what plays when there is nothing else
    desktop           what this machine is hearing: the hub, else the default sink's monitor
    -                 raw PCM on stdin (source) / stdout (sink)
    null              discard (sink)

Options follow a ``?``: ``file:song.mp3?loop``, ``tone:1000?level=-6``.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Self

from deskcast.errors import EndpointError

if TYPE_CHECKING:
    from deskcast.media import AudioFormat


class Direction(enum.Enum):
    SOURCE = "source"
    SINK = "sink"


# scheme -> options it accepts (name -> one-line description), per direction.
_SKEW = "resample as if captured by a clock this many ppm fast (tests)"
_SOURCE_SCHEMES: dict[str, dict[str, str]] = {
    "pulse": {"clock_ppm": _SKEW},
    "alsa": {"clock_ppm": _SKEW},
    "file": {"loop": "start again at the end", "pace": "0 to read as fast as possible"},
    "tone": {"level": "dBFS (default -12)", "clock_ppm": "pace the clock off nominal (tests)"},
    "silence": {},
    "noise": {"level": "dBFS (default -12)", "clock_ppm": "pace the clock off nominal (tests)"},
    "sweep": {"level": "dBFS (default -12)", "seconds": "length of one sweep (default 5)",
              "clock_ppm": "pace the clock off nominal (tests)"},
    "demo": {"level": "dBFS (default -12)", "clock_ppm": "pace the clock off nominal (tests)"},
    "desktop": {},
    "stdin": {},
}
_SINK_SCHEMES: dict[str, dict[str, str]] = {
    "pulse": {},
    "alsa": {},
    "file": {},
    "stdout": {},
    "null": {},
}
_BARE = {"desktop", "demo", "null", "silence", "tone", "noise", "sweep", "pulse"}
AUDIO_EXTENSIONS = {
    ".wav", ".flac", ".mp3", ".ogg", ".oga", ".opus", ".m4a", ".aac", ".wma", ".aif", ".aiff",
    ".mka", ".webm", ".mp4", ".mkv", ".raw",
}


@dataclass(frozen=True)
class Endpoint:
    """A parsed source or sink URI."""

    scheme: str
    target: str = ""
    options: Mapping[str, str] = field(default_factory=dict)
    direction: Direction = Direction.SOURCE

    def __str__(self) -> str:
        if self.scheme in ("stdin", "stdout"):
            return "-"
        text = self.scheme + (f":{self.target}" if self.target else "")
        if self.options:
            text += "?" + "&".join(k if v == "" else f"{k}={v}" for k, v in self.options.items())
        return text

    def flag(self, name: str) -> bool:
        """A boolean option: present without value, or 1/yes/true/on."""
        if name not in self.options:
            return False
        return self.options[name].lower() in ("", "1", "yes", "true", "on")

    def number(self, name: str, default: float) -> float:
        if name not in self.options:
            return default
        try:
            return float(self.options[name])
        except ValueError:
            raise EndpointError(
                f"{self}: option {name}={self.options[name]!r} is not a number"
            ) from None


def parse(text: str, direction: Direction) -> Endpoint:
    """Parse a source or sink URI; raise :class:`EndpointError` with a one-line hint."""
    kind = direction.value
    schemes = _SOURCE_SCHEMES if direction is Direction.SOURCE else _SINK_SCHEMES
    text = text.strip()
    if not text:
        raise EndpointError(f"empty {kind}: give a {kind} such as {_examples(direction)}")
    if text == "-":
        scheme = "stdin" if direction is Direction.SOURCE else "stdout"
        return Endpoint(scheme, "", {}, direction)

    body, opts = _split_options(text)
    scheme, sep, target = body.partition(":")
    if scheme not in schemes:
        if _looks_like_path(body):
            scheme, sep, target = "file", ":", body
        elif scheme in _SOURCE_SCHEMES or scheme in _SINK_SCHEMES:
            raise EndpointError(f"{text!r} cannot be a {kind}: use {_examples(direction)}")
        else:
            raise EndpointError(
                f"unknown {kind} {text!r}: use {_examples(direction)} "
                f"(known: {', '.join(_visible(schemes))})"
            )
    if not sep and scheme not in _BARE:
        raise EndpointError(f"{kind} {text!r} needs a name after '{scheme}:', e.g. "
                            f"{_example(scheme, direction)}")
    if sep and not target and scheme != "pulse":
        raise EndpointError(f"{kind} {text!r} has nothing after the colon, e.g. "
                            f"{_example(scheme, direction)}")
    allowed = schemes[scheme]
    for name in opts:
        if name not in allowed:
            hint = (
                "accepted: " + ", ".join(f"{k} ({v})" for k, v in allowed.items())
                if allowed else "it takes no options"
            )
            raise EndpointError(f"{kind} {text!r}: unknown option {name!r}; {hint}")
    return Endpoint(scheme, target, opts, direction)


def parse_hostport(text: str, default_port: int) -> tuple[str, int]:
    """A network address as written on the command line, in the config and in a route:
    ``host``, ``host:port``, ``[v6]:port``, ``v6`` (several colons, no port), ``:port``."""
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    else:
        host, port_text = text, ""
    if port_text:
        try:
            port = int(port_text)
        except ValueError:
            raise EndpointError(f"bad port in {text!r}: give a number 1-65535") from None
        if not 0 < port < 65536:
            raise EndpointError(f"bad port in {text!r}: give a number 1-65535")
    else:
        port = default_port
    return host, port


def format_hostport(host: str, port: int) -> str:
    """``host:port`` as :func:`parse_hostport` reads it back (``[v6]:port`` for IPv6)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _split_options(text: str) -> tuple[str, dict[str, str]]:
    body, sep, query = text.partition("?")
    opts: dict[str, str] = {}
    if sep:
        for item in query.split("&"):
            if not item:
                continue
            key, _, value = item.partition("=")
            opts[key.strip()] = value.strip()
    return body, opts


def _looks_like_path(body: str) -> bool:
    return "/" in body or Path(body).suffix.lower() in AUDIO_EXTENSIONS


def _visible(schemes: Mapping[str, object]) -> list[str]:
    return ["-" if s in ("stdin", "stdout") else s for s in schemes]


def _example(scheme: str, direction: Direction) -> str:
    return {
        "alsa": "alsa:hubcap" if direction is Direction.SOURCE else "alsa:default",
        "file": "file:music.flac" if direction is Direction.SOURCE else "file:out.wav",
        "tone": "tone:440",
        "noise": "noise:7",
        "sweep": "sweep:20-20000",
        "pulse": "pulse:hub.monitor" if direction is Direction.SOURCE else "pulse:speakers",
    }.get(scheme, scheme)


def _examples(direction: Direction) -> str:
    if direction is Direction.SOURCE:
        return "pulse, pulse:NAME.monitor, alsa:hubcap, file:song.mp3, tone:440 or -"
    return "pulse, pulse:NAME, alsa:default, file:out.wav, null or -"


class AudioEnd:
    """What a source and a sink share (:class:`deskcast.capture.base.Source`,
    :class:`deskcast.playback.base.Sink`): the endpoint, the format, the block size, and the
    lifetime, ``open()`` to ``close()`` (also as a ``with`` block)."""

    def __init__(self, endpoint: Endpoint, fmt: AudioFormat, block_frames: int) -> None:
        self.endpoint = endpoint
        self.fmt = fmt
        self.block_frames = block_frames

    @property
    def name(self) -> str:
        """What is actually read or written, for status lines (e.g. the resolved device)."""
        return str(self.endpoint)

    def open(self) -> None:
        """Acquire the device, file or socket; raise DeskcastError with a one-line reason."""

    def close(self) -> None:
        """Release it; a sink first plays out or finalises what was written (files stay
        valid). Safe to call twice."""

    def __enter__(self) -> Self:
        self.open()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
