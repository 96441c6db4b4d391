"""``pulse[:SOURCE]`` — capture from PulseAudio or PipeWire (via pipewire-pulse).

Without a name it captures the desktop mix: the hub's monitor if the hub exists, else the
monitor of the default sink ("what I am hearing"). Paced by the sound server's clock.

Once open, the stream survives its sound server (:class:`deskcast.pulse.PulseStream`, the
stream ``pulse:`` playback uses too): while it is lost, or moved by the server to another
device, the source yields silence at real time (so a sender's stream or a server's listeners
stay alive; never a microphone because the hub vanished).
"""

from __future__ import annotations

from deskcast.capture.device import DeviceSource
from deskcast.endpoints import Endpoint
from deskcast.media import AudioFormat
from deskcast.pulse import PulseStream


class PulseSource(DeviceSource):
    stream: PulseStream

    def __init__(self, endpoint: Endpoint, fmt: AudioFormat, block_frames: int,
                 hub_name: str = "deskcast", *,
                 reconnect: bool = True) -> None:
        super().__init__(endpoint, fmt, block_frames, PulseStream(
            endpoint.target, fmt, block_frames, capture=True, hub_name=hub_name,
            reconnect=reconnect))

    @property
    def device(self) -> str:
        """The source read (once open, the desktop mix's when none was named)."""
        return self.stream.device

    @property
    def monitor_of(self) -> str | None:
        """The sink this source is the monitor of, if it is one (known once open)."""
        return self.stream.monitor_of
