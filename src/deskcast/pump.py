"""The in-process loop from one source to one sink (the ``alsaloop`` of the original set-up):
every command's audio runs here — play, send (the sink is the RTP sender), receive (the source
is the RTP receiver) and serve (the sink is the encoders' feed, :mod:`deskcast.http.feed`).

An audio thread reads blocks and writes them on; the calling thread only supervises: it watches
for a stop request, draws the meter and, at the end, closes the sink so files are always valid
(:meth:`Pump.run`); serve supervises from its event loop instead (:meth:`Pump.start`).
Nothing blocking runs between the read and the write except the level computation (cheap numpy
on one block).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from deskcast import realtime
from deskcast.capture.base import Source
from deskcast.media import PcmBlock, levels_db
from deskcast.playback.base import Sink, SinkClosedError

logger = logging.getLogger(__name__)

STOP_GRACE_S = 2.0
"""How long to wait for the audio thread after a stop (a device read returns within a block)."""


@dataclass
class PumpStats:
    frames: int = 0
    blocks: int = 0
    started: float = field(default_factory=time.monotonic)
    last_block: PcmBlock | None = None
    """The block written last (for a level meter: see :meth:`levels`)."""
    ended: str = ""
    """Why the loop ended: 'duration', 'source ended', 'sink closed', 'stopped', 'error'."""

    def levels(self) -> tuple[list[float], list[float]]:
        """(peak, rms) dBFS per channel of the last block; empty lists before the first."""
        block = self.last_block
        return levels_db(block) if block is not None else ([], [])


class Pump:
    def __init__(self, source: Source, sink: Sink, *, max_frames: int | None = None,
                 rtprio: int = 0) -> None:
        self.source = source
        self.sink = sink
        self.max_frames = max_frames
        self.rtprio = rtprio
        self.stats = PumpStats()
        self.stop_event = threading.Event()
        self.error: BaseException | None = None
        self._sink_lock = threading.Lock()
        self._sink_closed = False
        self._on_end: Callable[[Pump], None] | None = None
        self._thread = threading.Thread(target=self._run, name="deskcast-audio", daemon=True)

    @property
    def thread(self) -> threading.Thread:
        """The audio thread."""
        return self._thread

    def _run(self) -> None:
        realtime.request(self.rtprio)
        stats = self.stats
        # Before each read of a source that is not clocked (the network receiver, a file, a
        # generator), the sink says when the block will be heard and whether its clock paces
        # the loop, and the source is told: one call each way (deskcast.media.SinkTiming).
        # A device sink first waits until it has room, so that the block is taken from the
        # source as late as the device allows (see deskcast.playback.pulse).
        tell_source = not self.source.clocked
        try:
            while not self.stop_event.is_set():
                if tell_source:
                    with self._sink_lock:
                        if self._sink_closed:
                            break
                        self.source.sink_timing(self.sink.timing())
                block = self.source.read()
                if block is None:
                    stats.ended = "source ended"
                    break
                if self.max_frames is not None and stats.frames + block.frames >= self.max_frames:
                    keep = self.max_frames - stats.frames
                    block = type(block)(block.data[: keep * block.fmt.frame_bytes], block.fmt,
                                        block.pts)
                    stats.ended = "duration"
                with self._sink_lock:
                    if self._sink_closed:
                        break
                    if block.frames:
                        self.sink.write(block)
                stats.frames += block.frames
                stats.blocks += 1
                stats.last_block = block
                if stats.ended:
                    break
        except SinkClosedError as err:
            stats.ended = "sink closed"
            logger.info("%s", err)
        except BaseException as err:
            stats.ended = "error"
            self.error = err
        finally:
            self.stop_event.set()
            if self._on_end is not None:
                self._on_end(self)
                self._close_sink()

    def start(self, on_end: Callable[[Pump], None]) -> None:
        """Start the audio thread and return, for a caller that supervises from its own
        loop (serve's event loop). However the loop ends (the source ended, an error,
        :meth:`stop`), the audio thread then calls ``on_end(pump)`` and closes the sink, so
        that a source ending by itself is finished without a supervisor."""
        self._on_end = on_end
        self.stats.started = time.monotonic()
        self._thread.start()

    def run(self, tick: Callable[[PumpStats], None] | None = None,
            tick_s: float = 0.1) -> PumpStats:
        """Open nothing (the caller opened source and sink), pump until done, close the sink.

        Raises what the audio thread raised (DeskcastError for device problems).
        """
        self.stats.started = time.monotonic()
        self._thread.start()
        try:
            while not self.stop_event.wait(tick_s):
                if tick is not None:
                    tick(self.stats)
        finally:
            self.stop()
        if tick is not None:
            tick(self.stats)
        if self.error is not None:
            raise self.error
        return self.stats

    def stop(self) -> None:
        """Stop the loop (from a signal handler or another thread) and finalise the sink."""
        if not self.stats.ended:
            self.stats.ended = "stopped"
        self.stop_event.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(STOP_GRACE_S)
            if self._thread.is_alive():
                logger.warning("the source did not return within %.0f s; closing anyway",
                               STOP_GRACE_S)
        self._close_sink()

    def _close_sink(self) -> None:
        with self._sink_lock:
            if not self._sink_closed:
                self._sink_closed = True
                self.sink.close()
