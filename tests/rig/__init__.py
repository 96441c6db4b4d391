"""Test rig for deskcast: private sound servers, signal helpers, capture helpers.

Import from the submodules (``rig.soundserver``, ``rig.signals``,
``rig.capture``) or from here.
"""

from __future__ import annotations

from .capture import (
    CaptureError,
    Recorder,
    play,
    play_and_record,
    play_file,
    record,
    wait_played,
)
from .soundserver import (
    ENV_TO_REMOVE,
    ServerKind,
    SoundServer,
    SoundServerError,
    available_kinds,
)

#: Null sinks every session server is started with (48 kHz stereo).
HUB = "hub"
OUT = "out"

__all__ = [
    "ENV_TO_REMOVE",
    "HUB",
    "OUT",
    "CaptureError",
    "Recorder",
    "ServerKind",
    "SoundServer",
    "SoundServerError",
    "available_kinds",
    "play",
    "play_and_record",
    "play_file",
    "record",
    "wait_played",
]
