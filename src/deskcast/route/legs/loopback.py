"""``local`` on PulseAudio/PipeWire: the sound server's own ``module-loopback`` from the hub's
monitor to the speakers (see the module docstring of :mod:`deskcast.route.daemon` for why a
loopback and not moving the streams back)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from deskcast.errors import DeskcastError, DeviceError
from deskcast.route.legs.base import Leg

logger = logging.getLogger(__name__)

LOOPBACK_MARK = "deskcast-route-local"
"""media.name of the loopback's streams: how a restarted daemon finds a loopback it left."""
POLL_S = 0.5
"""How often a loopback is checked for still being loaded."""


class LoopbackLeg(Leg):
    kind = "local"

    def __init__(self, word: str, monitor: str, speakers: str, latency_ms: float) -> None:
        super().__init__(word)
        self.monitor = monitor
        self.speakers = speakers
        self.latency_ms = latency_ms
        self.module: int | None = None
        self._stopping = False

    async def start(self) -> None:
        self._stopping = False
        self.module = await asyncio.to_thread(self._load)
        self.started = time.monotonic()

    def _load(self) -> int:
        import pulsectl

        from deskcast import soundserver

        with soundserver.connect() as pulse:
            remove_stale_loopbacks(pulse)
            names = [s.name for s in pulse.sink_list()]
            if self.speakers not in names:
                raise DeviceError(f"the speakers sink {self.speakers!r} does not exist; set "
                                  "[route] speakers to one of: " + ", ".join(names))
            props = f"'application.name=deskcast media.name={LOOPBACK_MARK}'"
            args = (f"source={self.monitor} sink={self.speakers} "
                    f"latency_msec={round(self.latency_ms)} source_dont_move=true "
                    f"sink_dont_move=true sink_input_properties={props} "
                    f"source_output_properties={props}")
            try:
                module = int(pulse.module_load("module-loopback", args))
            except pulsectl.PulseError as err:
                raise DeviceError(f"the sound server refused a loopback from {self.monitor} to "
                                  f"{self.speakers}: {err}") from None
        logger.info("local: loopback %s -> %s (%d ms), module %d", self.monitor, self.speakers,
                    round(self.latency_ms), module)
        return module

    def _loaded(self) -> bool:
        from deskcast import soundserver

        try:
            with soundserver.connect() as pulse:
                return any(m.index == self.module for m in pulse.module_list())
        except DeskcastError:
            return False

    async def wait(self) -> str:
        while not self._stopping:
            await asyncio.sleep(POLL_S)
            if not self._stopping and not await asyncio.to_thread(self._loaded):
                return "the loopback module was unloaded (sound server restarted?)"
        return "stopped"

    async def stop(self) -> None:
        self._stopping = True
        module, self.module = self.module, None
        if module is not None:
            await asyncio.to_thread(_unload, module)

    async def info(self) -> dict[str, Any]:
        return {"via": "loopback", "from": self.monitor, "to": self.speakers,
                "latency_ms": round(self.latency_ms), "module": self.module}


def _unload(module: int) -> None:
    import pulsectl

    from deskcast import soundserver

    try:
        with soundserver.connect() as pulse:
            pulse.module_unload(module)
    except (DeskcastError, pulsectl.PulseError) as err:
        logger.info("loopback module %d already gone (%s)", module, err)


def remove_stale_loopbacks(pulse: Any) -> int:
    """Unload loopbacks a previous daemon left behind (killed before it could clean up)."""
    removed = 0
    for m in pulse.module_list():
        if m.name == "module-loopback" and LOOPBACK_MARK in str(m.argument or ""):
            with contextlib.suppress(Exception):
                pulse.module_unload(m.index)
                removed += 1
                logger.info("removed a loopback left by an earlier daemon (module %d)", m.index)
    return removed
