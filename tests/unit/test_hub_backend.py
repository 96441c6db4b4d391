"""Which hub backend a command gets: `hub` takes what it is told ('auto': pulse when a sound
server answers); the route daemon, which needs a hub at once, is refused in one line when the
one it would get is not there."""

from __future__ import annotations

import pytest

from deskcast import alsa, soundserver
from deskcast.errors import DeviceError
from deskcast.hub import pick_backend

CASES = [
    # backend, hub_needed, what is there (a sound server, the ALSA hub) -> the backend, or words
    # of the refusal
    ("auto", False, "server", "pulse"),
    ("auto", False, "", "alsa"),
    ("pulse", False, "", "pulse"),
    ("alsa", False, "server", "alsa"),
    ("auto", True, "server", "pulse"),
    ("auto", True, "hubcap", "alsa"),
    ("auto", True, "", "needs a hub"),
    ("pulse", True, "server", "pulse"),
    ("pulse", True, "hubcap", "backend is pulse but no PulseAudio/PipeWire"),
    ("alsa", True, "server hubcap", "alsa"),
    ("alsa", True, "server", "needs a hub"),
]


@pytest.mark.parametrize("backend, hub_needed, there, expected", CASES)
def test_backend_picked(monkeypatch: pytest.MonkeyPatch, backend: str, hub_needed: bool,
                        there: str, expected: str) -> None:
    monkeypatch.setattr(soundserver, "available", lambda: "server" in there)
    monkeypatch.setattr(soundserver, "server_label", lambda: "unix:/run/user/1/pulse/native")
    monkeypatch.setattr(alsa, "device_names",
                        lambda capture: ["default", "hubcap"] if "hubcap" in there else ["default"])
    if expected in ("pulse", "alsa"):
        assert pick_backend(backend, hub_needed=hub_needed) == expected
    else:
        with pytest.raises(DeviceError, match=expected):
            pick_backend(backend, hub_needed=hub_needed)
