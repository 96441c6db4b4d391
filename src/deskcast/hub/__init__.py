"""The desktop hub: one place where all desktop audio is mixed, so it can be captured.

* PulseAudio/PipeWire (:mod:`deskcast.hub.pulse`): a null sink ``deskcast`` made the default,
  with the streams that are playing moved onto it.
* Plain ALSA (:mod:`deskcast.hub.alsa`): the snd-aloop loopback card with a dmix default on
  its playback side and the ``hubcap`` capture plug, written into ``~/.asoundrc``.
"""

from __future__ import annotations

from deskcast import soundserver


def pick_backend(backend: str) -> str:
    """'pulse' or 'alsa' for 'auto': pulse when a sound server answers."""
    if backend != "auto":
        return backend
    return "pulse" if soundserver.available() else "alsa"
