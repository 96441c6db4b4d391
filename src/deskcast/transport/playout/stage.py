"""The playout stage: jitter buffer, drift controller and resampler, one read at a time.

Each time the sink asks for more, :meth:`Playout.read` takes a frame from the jitter buffer
as the controller asks (:class:`~deskcast.transport.jitter.Hold` in,
:class:`~deskcast.transport.jitter.Taken` out) and returns it with the ratio to resample it by;
the receiver decodes it and hands it to :meth:`Playout.resample`. Without drift correction
the jitter buffer plays by itself and nothing is resampled.

Where a schedule plugs in (issue 18: play the sample at timestamp ``ts`` at time ``T``): the
controller's set-point (:class:`~deskcast.transport.playout.setpoint.SetPoint`, passed as
``DriftController(aim=...)``). Each read tells it the level and what the sink has queued, so
when the frame read now will be heard is known; a schedule's set-point is the level at which
that is its time, and the controller steers there as it steers to a settled level now.
"""

from __future__ import annotations

from dataclasses import dataclass

from deskcast.media import AudioFormat, PcmBlock
from deskcast.transport.jitter import NO_HOLD, Frame, Hold, JitterBuffer
from deskcast.transport.playout.clocktrack import ClockTrack
from deskcast.transport.playout.controller import DriftController
from deskcast.transport.playout.resampler import AdaptiveResampler, CorrectionMeter
from deskcast.transport.playout.schedule import Schedule

ON_TIME = Hold(on_time=True)


@dataclass(frozen=True, slots=True)
class Read:
    """One read of the playout stage."""

    frame: Frame | None
    """What to play (None: silence while (re)buffering)."""
    trim: int = 0
    """Samples to cut from the start of the decoded frame (the rest of what a stall of the
    device piled up, under a frame)."""
    ratio: float = 1.0
    """The ratio to resample the frame by (output/input)."""
    silence: int = 0
    """With no frame: samples of silence to play (0: a frame's worth), exact when a schedule
    waits for its first sample's time."""


class Playout:
    """The receiver's playout: ``jitter`` steered by ``drift`` (None: no drift correction)."""

    def __init__(self, jitter: JitterBuffer, fmt: AudioFormat,
                 drift: DriftController | None, schedule: Schedule | None = None,
                 wait_for_schedule_s: float = 0.0) -> None:
        self.jitter = jitter
        self.fmt = fmt
        self.drift = drift
        self.schedule = schedule
        """Playout on the sender's timeline, when the sender keeps one (None: never)."""
        self.wait_for_schedule_s = wait_for_schedule_s
        """How long a new stream stays silent waiting for the sender's timeline (it comes
        with the first answers of the clock exchange) before it plays without one."""
        self._wait_until: float | None = None
        self.schedule_announced = False
        """The sender said it keeps a timeline: a new stream waits for it (at most
        ``wait_for_schedule_s``)."""
        self._last_read: float | None = None
        self.sender: ClockTrack = drift.clocks.sender if drift is not None else ClockTrack()
        """The sender's clock against ours (the drift controller's when there is one): where
        a packet on time would be (:attr:`ClockTrack.offset_s`), for the delay meter."""
        self.resampler = AdaptiveResampler(fmt)
        self.corrections = CorrectionMeter(fmt.rate)

    def sender_clock(self, timestamp: int, arrival_s: float) -> None:
        """A packet with (extended) RTP ``timestamp`` arrived at ``arrival_s``."""
        if self.drift is not None:
            self.drift.sender_clock(timestamp, arrival_s)
        else:
            self.sender.add(arrival_s, timestamp / self.fmt.rate)

    def new_sender(self) -> None:
        """Another sender (maybe another clock): the jitter buffer is reset by the receiver;
        the controller measures the new stream."""
        if self.drift is not None:
            self.drift.reset(new_sender=True)
        else:
            self.sender.clear()
        if self.schedule is not None:
            self.schedule.clock.restart()
            self.schedule.unlock()
            self._wait_until = None
            self.schedule_announced = False

    def read(self, now_s: float, queued_samples: float | None = None,
             played_samples: float | None = None) -> Read:
        """The next frame, asked for at ``now_s``; when the sink can tell, what it still has
        queued ahead of this frame and what it has played of what it was handed (a reading
        of its clock), both in samples."""
        schedule = self.schedule
        if schedule is not None:
            if schedule.ready:
                return self._on_schedule(schedule, now_s, queued_samples)
            if self._wait_until is None and self.jitter.first_timestamp is not None and \
                    self.schedule_announced:
                self._wait_until = now_s + self.wait_for_schedule_s
            if self._wait_until is not None and now_s < self._wait_until:
                return Read(None)
        drift = self.drift
        if drift is None:
            return Read(self.jitter.take(NO_HOLD).frame)
        hold = drift.hold()
        trim = drift.take_trim()
        taken = self.jitter.take(hold)
        if played_samples is not None:
            drift.sink_clock(now_s, played_samples)
        ratio = drift.steer(taken.frame, depth=taken.depth_samples,
                            target_samples=taken.target_samples,
                            skipped_samples=taken.skipped_samples, now_s=now_s,
                            queued_samples=queued_samples)
        return Read(taken.frame, trim, ratio)

    def _on_schedule(self, schedule: Schedule, now_s: float,
                     queued_samples: float | None) -> Read:
        """The next frame as the schedule has it due: locking onto the sample due (silence
        before it, or the audio before it dropped), then steering by resampling."""
        jitter = self.jitter
        dt = 0.0 if self._last_read is None else min(0.1, now_s - self._last_read)
        self._last_read = now_s
        if jitter.newest_timestamp is None and jitter.position is None:
            schedule.unlock()
            return Read(None)
        heard = schedule.heard_s(now_s, queued_samples)
        due = schedule.due_timestamp(heard)
        assert due is not None
        if schedule.locked and not jitter.playing:
            schedule.unlock()  # the sender stopped: start anew when it is back
        if not schedule.locked:
            first = jitter.first_timestamp
            if first is None:
                return Read(None)
            if due < first - 0.5:
                # Early: silence until the first sample's time, at most a frame at a time.
                wait = min(round(first - due), jitter.frame_samples or self.fmt.rate // 100)
                return Read(None, silence=wait)
            trim = jitter.seek(round(due))
            schedule.lock()
            self.resampler.active = True  # on from the start: its delay never changes
            return Read(jitter.take(ON_TIME).frame, trim, 1.0)
        position = jitter.position
        assert position is not None
        ratio = schedule.steer(due - position, dt)
        if ratio is None:
            return self._on_schedule(schedule, now_s, queued_samples)
        return Read(jitter.take(ON_TIME).frame, 0, ratio)

    def resample(self, block: PcmBlock, ratio: float) -> PcmBlock:
        """The decoded frame at ``ratio`` (as it is without drift correction)."""
        if self.drift is None and self.schedule is None:
            return block
        self.corrections.add(block.frames, ratio)
        return self.resampler.process(block, ratio)

    def status_fields(self) -> dict[str, object]:
        """The controller's part of the receiver's status (--stats-json)."""
        drift = self.drift
        fields: dict[str, object] = {
            "device_stalls": 0 if drift is None else drift.stalls,
            "drift_ppm": 0.0 if drift is None else round(drift.drift_ppm, 1),
            "correction_ppm": None if (c := self.corrections.ppm) is None else round(c, 1),
            "sink_ppm": None if drift is None or drift.sink_ppm is None
            else round(drift.sink_ppm, 1),
        }
        if drift is not None:
            fields.update(drift.clock_fields())
        if self.schedule is not None:
            fields.update(self.schedule.clock.fields())
            fields.update(self.schedule.fields())
        return fields
