"""PulseAudio/PipeWire (pasimple): the one ``pulse:`` device stream, for both directions.

:class:`PulseStream` is what :class:`~deskcast.capture.pulse.PulseSource` reads and
:class:`~deskcast.playback.pulse.PulseSink` writes: it finds the device (by name, or the
desktop mix / the speakers when none is given), opens a pasimple stream on it and keeps it
there. The shape it shares with ``alsa:`` (reopen with backoff, stand in at real time, one
line lost, one line back) is :class:`deskcast.reconnect.DeviceStream`; the server's names and
error wording are :mod:`deskcast.soundserver`.

**Reconnection.** Once open, a pulse stream survives its sound server: when the server goes
away (restarted, crashed) or the device is removed, one warning says so, the stream stands in
for the device at real time (a source reads silence, a sink drops audio) and is reopened with
backoff; one more line says when it is back. A server that *moves* the stream to another
device when ours disappears (PulseAudio and PipeWire both do) is caught by a watcher thread:
the audio it delivers from the wrong device is not used (never send a microphone because the
hub vanished) and the stream is opened again on its device when that returns. Reopened rather
than moved back: PipeWire reports a moved stream on its new device a moment before the links
follow, so audio of the wrong device could pass as ours (seen in CI: half a second of the
other sink's tone after the move), while a fresh stream is linked to the device it names and
to nothing else. :class:`StreamKeeper` does this for both directions.

**Priority.** libpulse runs each pasimple stream's I/O in a thread of its own
(``threaded-ml``): it is that thread that hears the server deliver audio (or ask for more) and
wakes our audio thread. Created at normal priority, it waits behind every busy process of the
machine, and that wait comes out of the device buffer. :class:`LoopThreads` gives it the audio
thread's real-time priority once the audio thread first uses the stream.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Literal

import pasimple
import pulsectl

from deskcast import soundserver
from deskcast.errors import DeskcastError
from deskcast.media import AudioFormat, SampleFormat
from deskcast.reconnect import CAPTURE, PLAYBACK, DeviceStream, Reconnector

logger = logging.getLogger(__name__)

PA_FORMATS = {
    SampleFormat.S16LE: pasimple.PA_SAMPLE_S16LE,
    SampleFormat.S32LE: pasimple.PA_SAMPLE_S32LE,
    SampleFormat.F32LE: pasimple.PA_SAMPLE_FLOAT32LE,
}

WATCH_INTERVAL_S = 0.5
"""How often the watcher checks that our stream is still on its device (a few ms of work);
it also checks at once when the server announces a change of a stream or device ..."""
RECHECK_S = 0.02
"""... and again this soon while the stream is unlinked or elsewhere: a move is not always
announced after the stream is linked to its new device (PipeWire)."""


class StreamKeeper(Reconnector):
    """Keeps one pasimple stream on its device: reopening with backoff after the server or
    the device went away, and noticing (in a watcher thread) when the server moved the stream
    elsewhere. The audio thread asks :attr:`usable` before it uses the stream's audio."""

    def __init__(self, kind: Literal["source", "sink"], label: str, media_name: str,
                 while_lost: str, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(label, while_lost, clock)
        self.kind = kind
        self.media_name = media_name
        self.device = ""
        self._misrouted = False
        self._reopen_wanted = False
        """Set by the watcher: the device is back, the audio thread should reopen on it."""
        self._generation = 0
        """Counts reopened streams, so that a look taken before a reopen is not acted on."""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pulse: pulsectl.Pulse | None = None

    @property
    def usable(self) -> bool:
        """Whether the stream is open and on its own device."""
        return self.lost_at is None and not self._misrouted

    # --- the audio thread -----------------------------------------------------------------

    def take_reopen(self) -> bool:
        """Whether the watcher found our device back while the stream is elsewhere: the audio
        thread then closes the stream and reopens it on the device (a reopen is due at once)."""
        if not self._reopen_wanted:
            return False
        self._reopen_wanted = False
        self.due_now()
        return True

    def back(self, resumed: str, *, reopened: bool = False) -> None:
        if reopened:
            self._generation += 1
            self._misrouted = False
            self._reopen_wanted = False
        super().back(resumed)

    # --- the watcher ----------------------------------------------------------------------

    def start_watch(self, device: str) -> None:
        self.device = device
        if self._thread is None:
            self._thread = threading.Thread(target=self._watch, name="deskcast-pulse-watch",
                                            daemon=True)
            self._thread.start()

    def stop_watch(self) -> None:
        self._stop.set()
        pulse = self._pulse
        if pulse is not None:
            with contextlib.suppress(pulsectl.PulseError):
                pulse.event_listen_stop()  # wake it now, not at the end of its wait
        if self._thread is not None:
            self._thread.join(2.0)
            self._thread = None

    def _watch(self) -> None:
        """Check at once whenever a stream of our kind changes (the server announces a move),
        and every WATCH_INTERVAL_S anyway."""
        pulse: pulsectl.Pulse | None = None

        def on_event(_: object) -> None:
            raise pulsectl.PulseLoopStop

        try:
            while not self._stop.is_set():
                try:
                    if pulse is None:
                        pulse = pulsectl.Pulse("deskcast-watch", connect=False)
                        pulse.connect()
                        pulse.event_mask_set(*(("source_output", "source")
                                               if self.kind == "source"
                                               else ("sink_input", "sink")))
                        pulse.event_callback_set(on_event)
                        self._pulse = pulse
                    settled = self.check(pulse)
                    pulse.event_listen(timeout=WATCH_INTERVAL_S if settled else RECHECK_S)
                except (pulsectl.PulseError, pulsectl.PulseDisconnected) as err:  # server gone
                    logger.debug("%s: watcher: %s", self.label, err)
                    self._pulse = None
                    if pulse is not None:
                        pulse.close()
                    pulse = None
                    self._stop.wait(WATCH_INTERVAL_S)
        finally:
            self._pulse = None
            if pulse is not None:
                pulse.close()

    def check(self, pulse: pulsectl.Pulse) -> bool:
        """One look: is our stream on its device? If not, mark it (its audio is not used) and
        ask the audio thread to reopen it once the device exists again. False while the
        stream is not linked (look again soon)."""
        generation = self._generation
        if self.kind == "source":
            streams = pulse.source_output_list()
            devices = {d.index: d.name for d in pulse.source_list()}
        else:
            streams = pulse.sink_input_list()
            devices = {d.index: d.name for d in pulse.sink_list()}
        pid = str(os.getpid())
        ours = [s for s in streams if s.proplist.get("media.name") == self.media_name
                and s.proplist.get("application.process.id") == pid]
        if len(ours) != 1 or generation != self._generation:
            return True  # being reopened: the audio thread deals with it
        stream = ours[0]
        on = devices.get(stream.source if self.kind == "source" else stream.sink)
        if on is None:
            return False  # PipeWire lists a stream a moment before (re)linking it
        if not self._misrouted:
            if on == self.device:
                return True
            self._misrouted = True
            self.lose(f"the server moved the stream to {on}")
        # Also when the server has put it back by itself: only a fresh stream is sure to be
        # linked to our device alone.
        if self.device in devices.values():
            self._reopen_wanted = True
        return not self._reopen_wanted


LOOP_THREAD_NAME = "threaded-ml"
"""What libpulse names the thread of a ``pa_threaded_mainloop`` (one per pasimple stream)."""


def _thread_ids() -> set[int]:
    try:
        return {int(tid) for tid in os.listdir("/proc/self/task")}
    except (OSError, ValueError):
        return set()


def _thread_name(tid: int) -> str:
    try:
        with open(f"/proc/self/task/{tid}/comm", encoding="utf-8") as f:
            return f.read().strip()
    except OSError:
        return ""


class LoopThreads:
    """libpulse's thread of the stream just opened, raised to the audio thread's priority.

    :meth:`opening` wraps the opening of a stream and notes the ``threaded-ml`` thread that
    appeared; :meth:`share_priority`, called from the audio thread, gives it that thread's
    real-time policy and priority (once per stream; a no-op at normal priority, and where
    ``/proc`` or the permission is missing).
    """

    def __init__(self) -> None:
        self.pending: list[int] = []

    @contextlib.contextmanager
    def opening(self) -> Iterator[None]:
        before = _thread_ids()
        yield
        self.pending = [tid for tid in sorted(_thread_ids() - before)
                        if _thread_name(tid) == LOOP_THREAD_NAME]

    def share_priority(self) -> None:
        tids, self.pending = self.pending, []
        policy = os.sched_getscheduler(0)
        if not tids or policy not in (os.SCHED_FIFO, os.SCHED_RR):
            return
        param = os.sched_getparam(0)
        for tid in tids:
            try:
                os.sched_setscheduler(tid, policy, param)
            except OSError as err:  # gone, or not allowed: it keeps its priority
                logger.debug("libpulse thread %d keeps its priority: %s", tid, err)
            else:
                logger.debug("libpulse thread %d runs at the audio thread's priority %d",
                             tid, param.sched_priority)


class PulseStream(DeviceStream):
    """A pasimple stream on one device (``capture``: a source, else a sink), kept there.

    ``device`` empty: the desktop mix (the hub's monitor, else the default sink's) for capture,
    this machine's speakers for playback, asked of the server when opened. ``buffer_ms`` is
    the server's buffer for playback (``tlength``); a capture stream's fragment is one block.
    """

    errors = (pasimple.PaSimpleError,)
    keeper: StreamKeeper

    def __init__(self, device: str, fmt: AudioFormat, block_frames: int, *, capture: bool,
                 hub_name: str = "deskcast", buffer_ms: float = 40.0,
                 reconnect: bool = True) -> None:
        self.device = device
        self.hub_name = hub_name
        self.kind: Literal["source", "sink"] = "source" if capture else "sink"
        media_name = "deskcast capture" if capture else "deskcast playback"
        while_lost = (CAPTURE if capture else PLAYBACK).while_lost
        super().__init__(fmt, block_frames, capture=capture, reconnect=reconnect,
                         keeper=StreamKeeper(self.kind, self.name, media_name, while_lost))
        self.buffer_bytes = fmt.frames_for_ms(buffer_ms) * fmt.frame_bytes
        self.monitor_of: str | None = None
        """The sink a captured device is the monitor of, if it is one."""
        self._loop = LoopThreads()

    @property
    def name(self) -> str:
        return f"pulse:{self.device}" if self.device else "pulse"

    def resolve(self) -> str:
        """The device this stream is (or will be) on, asking the server if none was named."""
        if not self.device:
            with soundserver.connect() as pulse:
                self._resolve(pulse)
        return self.device

    def _resolve(self, pulse: Any) -> None:
        if not self.device:
            self.device = (soundserver.desktop_monitor(pulse, self.hub_name) if self.capture
                           else soundserver.speakers(pulse, self.hub_name))

    def open(self) -> None:
        super().open()
        if self.reconnect:
            self.keeper.start_watch(self.device)

    def close(self) -> None:
        self.keeper.stop_watch()
        super().close()

    def ready(self) -> Any:
        """As :meth:`DeviceStream.ready`, and reopened on its device when the watcher found
        it back; libpulse's thread of a new stream gets our priority here (the audio
        thread)."""
        if self.handle is not None and self.keeper.take_reopen():
            self.drop()
        handle = super().ready()
        if handle is not None and self._loop.pending:
            self._loop.share_priority()
        return handle

    def _open(self) -> Any:
        with soundserver.connect() as pulse:
            self._resolve(pulse)
            listed = (soundserver.sources if self.capture else soundserver.sinks)(
                pulse, self.hub_name)
            dev = soundserver.check_name(self.kind, self.device, listed)
            self.description = dev.description
            self.monitor_of = dev.monitor_of
        fmt = self.fmt
        if self.capture:
            direction, sizes = pasimple.PA_STREAM_RECORD, {"fragsize": self.block_bytes}
        else:
            direction, sizes = pasimple.PA_STREAM_PLAYBACK, {
                "tlength": self.buffer_bytes,
                "minreq": min(self.block_bytes, self.buffer_bytes // 2)}
        try:
            with self._loop.opening():
                return pasimple.PaSimple(
                    direction, PA_FORMATS[fmt.sample], fmt.channels, fmt.rate,
                    app_name="deskcast", stream_name=self.keeper.media_name,
                    device_name=self.device, **sizes)
        except pasimple.PaSimpleError as err:
            doing = "capture from" if self.capture else "play to"
            raise soundserver.pa_error(err, f"cannot {doing} {self.name}") from None

    def _read(self, handle: Any) -> bytes:
        data: bytes = handle.read(self.block_bytes)
        # Moved by the server to another device: not our device's audio.
        return data if self.keeper.usable else bytes(len(data))

    def _write(self, handle: Any, data: bytes) -> None:
        handle.write(data if self.keeper.usable else bytes(len(data)))

    def _error(self, err: Exception, what: str) -> DeskcastError:
        return soundserver.pa_error(err, what)

    def _lost_reason(self, err: Exception) -> str:
        return str(soundserver.pa_error(err, "stream")).removeprefix("stream: ")
