"""The hub on PulseAudio/PipeWire as the route daemon keeps it: made when missing (streams moved
onto it only then), made the default sink again, loopbacks an earlier daemon left removed."""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)


def ensure_pulse_hub(sink_name: str) -> str:
    """Make sure the hub exists and is the default sink; return its monitor's name.

    Streams are moved onto the hub only when it is created here (as ``hub setup`` does); an
    existing hub that lost its default status only gets it back, nobody's stream is moved.
    """
    from deskcast import soundserver
    from deskcast.hub import pulse as pulse_hub

    with soundserver.connect() as pulse:
        sinks = {s.name: s for s in pulse.sink_list()}
        hub = sinks.get(sink_name)
        if hub is not None and pulse.server_info().default_sink_name != sink_name:
            pulse.default_set(hub)
            logger.info("made the hub %s the default sink again", sink_name)
    if hub is None:
        st = pulse_hub.setup(sink_name)
        logger.info("created the hub %s (streams moved onto it: %s)", sink_name,
                    ", ".join(st.streams) or "none")
        return st.monitor
    return str(hub.monitor_source_name)


def pulse_speakers(speakers: str, sink_name: str) -> str:
    """The sink ``local`` plays to: ``[route] speakers``, else the sound server's choice of
    speakers that are not the hub."""
    from deskcast import soundserver

    if speakers:
        return speakers
    with soundserver.connect() as pulse:
        return soundserver.speakers(pulse, sink_name)


def hub_exists(sink_name: str) -> bool:
    """Whether the sound server still has the hub (it forgets it when restarted)."""
    from deskcast import soundserver

    with soundserver.connect() as pulse:
        return any(s.name == sink_name for s in pulse.sink_list())


def remove_stale_loopbacks() -> None:
    """At the daemon's start: unload the ``local`` loopbacks a killed daemon left behind."""
    from deskcast import soundserver
    from deskcast.route.legs import loopback

    with soundserver.connect() as pulse:
        loopback.remove_stale_loopbacks(pulse)

