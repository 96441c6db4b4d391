"""A PulseAudio/PipeWire stream (pasimple) kept on its device, for both directions: what the
``pulse:`` source and the ``pulse:`` sink share.

**Reconnection.** Once open, a pulse stream survives its sound server: when the server goes
away (restarted, crashed) or the device is removed, one warning says so, the backend stands in
for the device at real time (a source yields silence, a sink drops audio) and the stream is
reopened with backoff; one more line says when it is back. A server that *moves* the stream to
another device when ours disappears (PulseAudio and PipeWire both do) is caught by a watcher
thread: the audio it delivers from the wrong device is not used (never send a microphone
because the hub vanished) and the stream is opened again on its device when that returns.
Reopened rather than moved back: PipeWire reports a moved stream on its new device a moment
before the links follow, so audio of the wrong device could pass as ours (seen in CI: half a
second of the other sink's tone after the move), while a fresh stream is linked to the device
it names and to nothing else. :class:`StreamKeeper` does this for both directions.

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
from typing import Literal

import pasimple
import pulsectl

from deskcast import soundserver
from deskcast.media import SampleFormat
from deskcast.reconnect import Reconnector

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




def lost_reason(err: Exception) -> str:
    """Why a pasimple stream failed, for the "lost" warning."""
    return str(soundserver.pa_error(err, "stream")).removeprefix("stream: ")
