"""The desktop hub: one place where all desktop audio is mixed, so it can be captured.

* PulseAudio/PipeWire (:mod:`deskcast.hub.pulse`): a null sink ``deskcast`` made the default,
  with the streams that are playing moved onto it.
* Plain ALSA (:mod:`deskcast.hub.alsa`): the snd-aloop loopback card with a dmix default on
  its playback side and the ``hubcap`` capture plug, written into ``~/.asoundrc``.
"""

from __future__ import annotations

from deskcast import soundserver
from deskcast.errors import DeviceError


def pick_backend(backend: str, *, hub_needed: bool = False) -> str:
    """'pulse' or 'alsa' for ``backend`` ('auto': pulse when a sound server answers).

    ``hub_needed`` (the route daemon, which plays from the hub at once): a DeviceError, in one
    line, when ``pulse`` is asked for and no sound server answers, or when ALSA is what is left
    and its hub is not set up.
    """
    if backend == "auto" or (backend == "pulse" and hub_needed):
        if soundserver.available():
            return "pulse"
        if backend == "pulse":
            raise DeviceError("[hub] backend is pulse but no PulseAudio/PipeWire server is "
                              f"answering ({soundserver.server_label()}): start it or set "
                              "backend = \"auto\"")
        backend = "alsa"
    if hub_needed and backend == "alsa":
        from deskcast.alsa import device_names
        from deskcast.capture import ALSA_HUB_DEVICE

        if ALSA_HUB_DEVICE not in device_names(capture=True):
            raise DeviceError("the route daemon needs a hub: no PulseAudio/PipeWire server is "
                              f"answering and no ALSA hub ({ALSA_HUB_DEVICE}) is set up; start "
                              "PulseAudio/PipeWire or run `deskcast hub setup --backend alsa`")
    return backend
