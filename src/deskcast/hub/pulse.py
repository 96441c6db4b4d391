"""The PulseAudio/PipeWire hub: a 48 kHz null sink that is the default sink.

``setup`` is idempotent; what it changed (previous default sink, the module it loaded) is kept in
the state file so ``remove`` can put it back.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import pulsectl

from deskcast import soundserver, state
from deskcast.errors import DeviceError

logger = logging.getLogger(__name__)

STATE = "hub"
DESCRIPTION = "Desktop audio hub"
OWN_APP = "deskcast"


@dataclass
class HubStatus:
    backend: str
    exists: bool
    name: str
    is_default: bool = False
    monitor: str = ""
    previous_default: str | None = None
    streams: list[str] = field(default_factory=list)
    server: str = ""
    notes: list[str] = field(default_factory=list)


def _sink(pulse: pulsectl.Pulse, name: str) -> pulsectl.PulseSinkInfo | None:
    for s in pulse.sink_list():
        if s.name == name:
            return s
    return None


def _streams_on(pulse: pulsectl.Pulse, sink_index: int) -> list[pulsectl.PulseSinkInputInfo]:
    return [si for si in pulse.sink_input_list() if si.sink == sink_index]


def _app(si: pulsectl.PulseSinkInputInfo) -> str:
    return str(si.proplist.get("application.name") or si.name or f"stream #{si.index}")


def _move(pulse: pulsectl.Pulse, si: pulsectl.PulseSinkInputInfo, sink: pulsectl.PulseSinkInfo
          ) -> bool:
    try:
        pulse.sink_input_move(si.index, sink.index)
    except pulsectl.PulseOperationFailed:
        logger.warning("could not move %s to %s (it may refuse to move)", _app(si), sink.name)
        return False
    return True


def setup(name: str) -> HubStatus:
    with soundserver.connect() as pulse:
        saved = state.load(STATE)
        default = str(pulse.server_info().default_sink_name)
        hub = _sink(pulse, name)
        if hub is None:
            args = (f"sink_name={name} rate=48000 channels=2 "
                    f"sink_properties='device.description=\"{DESCRIPTION}\"'")
            if not soundserver.is_pipewire(pulse):
                # PulseAudio's null sink otherwise delays a new capture of its monitor by
                # ~2 s and drops the first ~12 ms of every stream that starts playing.
                args += " norewinds=1"
            try:
                module = pulse.module_load("module-null-sink", args)
            except pulsectl.PulseError as err:
                raise DeviceError(f"the sound server refused to create the hub sink: {err}"
                                  ) from None
            saved["module"] = int(module)
            hub = _sink(pulse, name)
            if hub is None:
                raise DeviceError(f"the sound server did not create the hub sink {name!r}")
            logger.info("created hub sink %s (module %d)", name, module)
        if default != name and default:
            saved["previous_default_sink"] = default
        saved["sink_name"] = name
        state.save(STATE, saved)
        pulse.default_set(hub)
        for si in pulse.sink_input_list():
            if si.sink != hub.index and _app(si) != OWN_APP and _move(pulse, si, hub):
                logger.info("moved %s onto the hub", _app(si))
    return status(name)


def status(name: str) -> HubStatus:
    with soundserver.connect() as pulse:
        saved = state.load(STATE)
        hub = _sink(pulse, name)
        st = HubStatus("pulse", hub is not None, name, server=soundserver.describe(pulse))
        st.previous_default = saved.get("previous_default_sink")
        if hub is not None:
            st.is_default = pulse.server_info().default_sink_name == name
            st.monitor = str(hub.monitor_source_name)
            st.streams = [_app(si) for si in _streams_on(pulse, hub.index)]
            if not st.is_default:
                st.notes.append("the hub is not the default sink: new streams bypass it "
                                "(run `deskcast hub setup`)")
        return st


def remove(name: str) -> HubStatus:
    with soundserver.connect() as pulse:
        saved = state.load(STATE)
        hub = _sink(pulse, name)
        if hub is not None:
            others = [s for s in pulse.sink_list() if s.name != name]
            prev_name = saved.get("previous_default_sink")
            target = next((s for s in others if s.name == prev_name), None)
            if target is None and others:
                target = others[0]
            if target is not None:
                if pulse.server_info().default_sink_name == name:
                    pulse.default_set(target)
                for si in _streams_on(pulse, hub.index):
                    _move(pulse, si, target)
            module = hub.owner_module
            if module is not None and module != 0xFFFFFFFF:
                try:
                    pulse.module_unload(module)
                except pulsectl.PulseError as err:
                    raise DeviceError(f"could not remove the hub sink {name!r}: {err}") from None
        state.clear(STATE)
    return status(name)
