"""Talking to PulseAudio or PipeWire (through pipewire-pulse): one place for connecting,
naming devices and turning libpulse errors into one-line messages."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pulsectl

from deskcast import state
from deskcast.errors import DeviceError, EndpointError

logger = logging.getLogger(__name__)


NO_SERVER_HINT = (
    "start it (`pulseaudio --start`, or `systemctl --user start pipewire-pulse`) "
    "or use alsa:DEVICE, file:PATH or tone"
)

# libpulse error codes (pulse/def.h) that pasimple reports as bare numbers.
_PA_ERRORS = {
    1: "access denied",
    3: "invalid argument",
    5: "no such device",
    6: "connection refused",
    7: "protocol error",
    8: "timeout",
    11: "connection terminated",
    12: "stream killed",
    13: "invalid server",
    16: "bad state",
    19: "not supported",
}


def server_label() -> str:
    """How the server is addressed, for messages."""
    return os.environ.get("PULSE_SERVER") or "the user's session server"


@contextmanager
def connect(client: str = "deskcast") -> Iterator[pulsectl.Pulse]:
    """A pulsectl connection, or DeviceError when no server answers."""
    try:
        pulse = pulsectl.Pulse(client, connect=False)
    except pulsectl.PulseError as err:  # pragma: no cover - libpulse missing
        raise DeviceError(f"cannot use libpulse: {err}") from None
    try:
        # No timeout argument: pulsectl then sleeps the whole timeout even when the server
        # answers at once; a server that is not running refuses the connection immediately.
        pulse.connect()
    except pulsectl.PulseError:
        pulse.close()
        raise DeviceError(
            f"no PulseAudio/PipeWire server is answering ({server_label()}): {NO_SERVER_HINT}"
        ) from None
    try:
        yield pulse
    finally:
        pulse.close()


def available() -> bool:
    try:
        with connect():
            return True
    except DeviceError:
        return False


def is_pipewire(pulse: pulsectl.Pulse) -> bool:
    return "PipeWire" in str(pulse.server_info().server_name)


def describe(pulse: pulsectl.Pulse) -> str:
    info = pulse.server_info()
    name = str(info.server_name)
    match = re.search(r"PipeWire ([\d.]+)", name)
    if match:
        return f"PipeWire {match.group(1)} (pipewire-pulse)"
    pretty = {"pulseaudio": "PulseAudio"}.get(name, name)
    return f"{pretty} {info.server_version}"


@dataclass(frozen=True)
class Device:
    name: str
    description: str
    is_default: bool = False
    is_hub: bool = False
    monitor_of: str | None = None


def sinks(pulse: pulsectl.Pulse, hub_name: str) -> list[Device]:
    default = pulse.server_info().default_sink_name
    return [
        Device(s.name, s.description, s.name == default, s.name == hub_name)
        for s in pulse.sink_list()
    ]


def sources(pulse: pulsectl.Pulse, hub_name: str) -> list[Device]:
    info = pulse.server_info()
    sink_names = {s.index: s.name for s in pulse.sink_list()}
    out = []
    for s in pulse.source_list():
        monitor_of = sink_names.get(s.monitor_of_sink) if s.monitor_of_sink is not None else None
        is_default = s.name == info.default_source_name
        out.append(Device(s.name, s.description, is_default, monitor_of == hub_name, monitor_of))
    return out


def desktop_monitor(pulse: pulsectl.Pulse, hub_name: str) -> str:
    """What this machine is hearing: the hub's monitor if the hub exists, else the monitor of
    the default sink."""
    names = {s.name: s for s in pulse.sink_list()}
    if hub_name in names:
        return str(names[hub_name].monitor_source_name)
    default = pulse.server_info().default_sink_name
    if default in names:
        return str(names[default].monitor_source_name)
    raise DeviceError(
        f"the sound server ({describe(pulse)}) has no output to listen to: no hub and no "
        "default sink; run `deskcast hub setup` or name a source (see `deskcast devices`)"
    )


def speakers(pulse: pulsectl.Pulse, hub_name: str) -> str:
    """This machine's real output: the default sink, or, when the hub is the default, the sink
    that was the default before the hub was set up."""
    default = str(pulse.server_info().default_sink_name)
    if default != hub_name:
        return default
    names = [s.name for s in pulse.sink_list()]
    saved = state.load("hub").get("previous_default_sink")
    if isinstance(saved, str) and saved in names and saved != hub_name:
        return saved
    others = [n for n in names if n != hub_name]
    raise EndpointError(
        "the default sink is the deskcast hub, so `pulse` would feed the hub back into "
        "itself: name the speakers as pulse:NAME "
        f"({', '.join(others) if others else 'no other sink exists'})"
    )


def check_name(kind: str, name: str, devices: list[Device]) -> Device:
    for dev in devices:
        if dev.name == name:
            return dev
    names = ", ".join(d.name for d in devices) or "none"
    raise EndpointError(
        f"no PulseAudio/PipeWire {kind} named {name!r}; available: {names} "
        "(see `deskcast devices`)"
    )


def pa_error(err: Exception, what: str) -> DeviceError:
    """Turn a pasimple error ("…: 6") into a one-line DeviceError."""
    match = re.search(r"(\d+)\s*$", str(err))
    code = int(match.group(1)) if match else -1
    if code in (6, 13):
        return DeviceError(
            f"no PulseAudio/PipeWire server is answering ({server_label()}): {NO_SERVER_HINT}"
        )
    if code in (11, 12):
        return DeviceError(f"{what}: the sound server closed the stream (was it restarted?)")
    reason = _PA_ERRORS.get(code, str(err))
    return DeviceError(f"{what}: {reason}")
