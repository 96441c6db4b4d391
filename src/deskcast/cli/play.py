"""``play``, and the loop every audio command runs in: a :class:`~deskcast.pump.Pump` from a
source to a sink until done, with a level meter or status line on a terminal and --stats-json."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any, TextIO

from deskcast import config
from deskcast.cli.common import audio_format, load_settings
from deskcast.errors import ConfigError, EndpointError
from deskcast.media import AudioFormat

logger = logging.getLogger(__name__)


def cmd_play(args: argparse.Namespace) -> int:
    from deskcast.capture import make_source
    from deskcast.capture.pulse import PulseSource
    from deskcast.playback import make_sink
    from deskcast.playback.pulse import PulseSink

    s = load_settings(args, ["play", "run", "audio", "hub"])
    fmt = audio_format(s)
    block_frames = fmt.frames_for_ms(s.block_ms)
    source_uri = args.source_uri or s.source
    sink_uri = args.sink_uri or s.sink
    source = make_source(source_uri, fmt, block_frames, hub_name=s.sink_name,
                         buffer_ms=s.buffer_ms)
    sink = make_sink(sink_uri, fmt, block_frames, hub_name=s.sink_name, buffer_ms=s.buffer_ms)
    show_meter = not args.quiet and sys.stderr.isatty()

    with source:
        if isinstance(source, PulseSource) and isinstance(sink, PulseSink):
            target = sink.resolve()
            if source.monitor_of == target:
                raise EndpointError(
                    f"{source.name} is the monitor of {target}: playing it to {target} would "
                    "feed it back into itself; run `deskcast hub setup` first or name another "
                    "sink (see `deskcast devices`)"
                )
        run_pump(source, sink, s, fmt, show_meter)
    return 0


def run_pump(source: Any, sink: Any, s: config.Settings, fmt: AudioFormat, show: bool, *,
              status: Callable[[Any], str] | None = None, stats_json: str | None = None) -> Any:
    """Pump an opened source into ``sink`` until done; meter or status line on a terminal."""
    from deskcast.meter import Meter
    from deskcast.pump import Pump, PumpStats

    max_frames = None if s.duration is None else round(s.duration * fmt.rate)
    with sink:
        logger.info("playing %s -> %s (%s, %d-frame blocks)", source.name, sink.name, fmt,
                    source.block_frames)
        pump = Pump(source, sink, max_frames=max_frames, rtprio=s.rtprio)
        meter = Meter(sys.stderr) if show else None
        json_out = _open_stats(stats_json)
        last_json = [0.0]

        def tick(stats: PumpStats) -> None:
            # Levels and status are computed here, only when shown: per block they cost the
            # audio thread as much as decoding.
            if meter is not None and stats.last_block is not None:
                peak, rms = stats.levels()
                extra = status(stats) if status is not None else ""
                meter.update(fmt.seconds(stats.frames), peak, rms, extra=extra)
            if json_out is not None and time.monotonic() - last_json[0] >= 1.0:
                last_json[0] = time.monotonic()
                peak, rms = stats.levels()
                record = {"elapsed_s": round(fmt.seconds(stats.frames), 3),
                          "peak_db": [round(v, 1) for v in peak],
                          "rms_db": [round(v, 1) for v in rms]}
                if status is not None:
                    record.update(_status_fields(sink, source))
                json_out.write(json.dumps(record) + "\n")
                json_out.flush()

        try:
            with _stop_on_signals(pump.stop_event.set):
                try:
                    stats = pump.run(tick)
                finally:
                    if meter is not None:
                        meter.finish()
        finally:
            if json_out is not None and json_out is not sys.stdout:
                json_out.close()
    logger.info("finished after %.2f s of audio (%s)", fmt.seconds(stats.frames), stats.ended)
    return stats


def _open_stats(path: str | None) -> TextIO | None:
    if path is None:
        return None
    if path == "-":
        return sys.stdout
    try:
        return open(path, "a")
    except OSError as err:
        raise ConfigError(f"cannot write --stats-json {path}: {err.strerror}") from None


def _status_fields(sink: Any, source: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for end in (sink, source):
        fields = getattr(end, "status_fields", None)
        if fields is not None:
            out.update(fields())
    return out


class _stop_on_signals:  # noqa: N801 - used like a function
    """SIGINT/SIGTERM call ``stop`` (a clean finish); a second SIGINT interrupts for real."""

    def __init__(self, stop: Callable[[], None]) -> None:
        self.stop = stop
        self.hits = 0
        self.saved: dict[int, Any] = {}

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        self.hits += 1
        if self.hits > 1 and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.stop()

    def __enter__(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGINT, signal.SIGTERM):
            self.saved[sig] = signal.signal(sig, self._handler)

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self.saved.items():
            signal.signal(sig, handler)
